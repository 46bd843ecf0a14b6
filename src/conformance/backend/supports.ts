/**
 * What a state backend supports beyond the required contract (like abstract-level's `supports`
 * manifest). The suite runs the tests of a capability only where it is declared, so a backend
 * without one still proves the rest; a declaration the suite can check against the backend itself
 * (`canonicalSavepoints` against `supportsSavepointFormat`) is checked. Every capability defaults
 * to true: the full contract is what streamstate's own backends meet.
 */
export interface BackendSupports {
  /** State time-to-live (descriptors with `ttl`, a processing-time `clock` in the params). */
  readonly ttl?: boolean;
  /** Canonical savepoints (`supportsSavepointFormat('canonical')`; restorable by any backend). */
  readonly canonicalSavepoints?: boolean;
  /** Restoring at another parallelism: a subtask restores from several handles, or from part of one. */
  readonly rescaling?: boolean;
  /** `createOperatorStateBackend` (list, union and broadcast state). */
  readonly operatorState?: boolean;
}

export type BackendCapability = keyof BackendSupports;

export const BACKEND_CAPABILITIES: readonly BackendCapability[] = [
  'ttl',
  'canonicalSavepoints',
  'rescaling',
  'operatorState',
];

/** The manifest with every capability decided (absent: supported). */
export type ResolvedSupports = { readonly [C in BackendCapability]: boolean };

export function resolveSupports(supports: BackendSupports = {}): ResolvedSupports {
  return {
    ttl: supports.ttl ?? true,
    canonicalSavepoints: supports.canonicalSavepoints ?? true,
    rescaling: supports.rescaling ?? true,
    operatorState: supports.operatorState ?? true,
  };
}
