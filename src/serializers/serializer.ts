/**
 * A Serializer turns values into bytes and back. Its `id` and `version` are recorded in every
 * snapshot, so a restore can tell whether the serializer now in use can read what was written.
 */
export interface Serializer<T> {
  /** Stable identity, e.g. `streamstate.string`. Never reuse an id for another encoding. */
  readonly id: string;
  /** Bumped whenever the encoding changes. */
  readonly version: number;
  /** Optional JSON-serializable configuration recorded with id and version (e.g. nested serializers). */
  readonly config?: SerializerConfig;
  /**
   * How the heap backend uses values of this serializer as Map keys: `identity` when every value
   * is a primitive whose JS equality matches byte equality (strings, numbers, bigints, booleans);
   * `bytes` to key by the serialized form (objects, arrays).
   */
  readonly mapKey: 'identity' | 'bytes';
  serialize(value: T): Uint8Array;
  deserialize(bytes: Uint8Array): T;
  /** A deep copy for mutable values; serializers of immutable values return the value itself. */
  copy(value: T): T;
  /**
   * Optional fast path for key-group assignment: must equal murmur3_32(serialize(value)).
   * Lets string keys be hashed without allocating their UTF-8 bytes.
   */
  hash?(value: T): number;
  /**
   * Optional: whether bytes written by an older version of this serializer (same id) can be read
   * and rewritten. When absent, only the same version is compatible.
   */
  canMigrateFrom?(previous: SerializerSnapshot): boolean;
  /** Optional: a serializer able to read bytes written under `previous` (used to migrate them). */
  restoreReader?(previous: SerializerSnapshot): Serializer<T>;
}

export type SerializerConfig =
  | string
  | number
  | boolean
  | null
  | SerializerConfig[]
  | { [k: string]: SerializerConfig };

/** What a snapshot records about a serializer. */
export interface SerializerSnapshot {
  readonly id: string;
  readonly version: number;
  readonly config?: SerializerConfig;
}

export type Compatibility =
  | { readonly kind: 'compatible-as-is' }
  | { readonly kind: 'compatible-after-migration'; readonly reader: Serializer<unknown> }
  | { readonly kind: 'incompatible'; readonly reason: string };

export function snapshotOf(s: Serializer<unknown>): SerializerSnapshot {
  return s.config === undefined ? { id: s.id, version: s.version } : { id: s.id, version: s.version, config: s.config };
}

export function describeSerializer(s: SerializerSnapshot): string {
  return `${s.id}@${s.version}${s.config === undefined ? '' : ` ${JSON.stringify(s.config)}`}`;
}

/** Decides whether `current` can read state written under the recorded serializer `previous`. */
export function resolveCompatibility(previous: SerializerSnapshot, current: Serializer<unknown>): Compatibility {
  const sameConfig = JSON.stringify(previous.config ?? null) === JSON.stringify(current.config ?? null);
  if (previous.id === current.id && previous.version === current.version && sameConfig) {
    return { kind: 'compatible-as-is' };
  }
  if (previous.id === current.id && current.canMigrateFrom?.(previous)) {
    const reader = current.restoreReader?.(previous) ?? current;
    return { kind: 'compatible-after-migration', reader };
  }
  return {
    kind: 'incompatible',
    reason: `state was written with ${describeSerializer(previous)} but is now registered with ${describeSerializer(snapshotOf(current))}`,
  };
}
