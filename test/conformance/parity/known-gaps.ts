/**
 * The one list of parity behaviours a backend does not meet yet, each naming the issue-13 item
 * whose fix will close it. A listed (backend, behaviour) pair is skipped, not failed; remove the
 * entry when the fix lands (the suite then runs it). Nothing else in the suite skips.
 */

export type ParityBehaviour =
  // TTL (issue 13, Deliver 2)
  | 'ttl.refresh-survives-restore.iteration'
  | 'ttl.cleanup-in-full-snapshot-false'
  | 'ttl.return-expired.map-iteration'
  // restored-but-unregistered states (Deliver 3)
  | 'restored.get-keys'
  | 'restored.num-entries'
  | 'restored.canonical-savepoint'
  | 'restored.merge-namespaces'
  // lifecycle and error classes (Deliver 4)
  | 'closed.backend-methods'
  | 'closed.state-handles'
  | 'closed.notifications'
  | 'errors.state-kind-mismatch-class'
  | 'errors.snapshot-cancelled-class'
  // map keys (Deliver 6)
  | 'map-keys.bytes-decide';

export interface KnownGap {
  /** Backend names as the conformance files spell them (e.g. `leveldb (full)`, `changelog(leveldb)`). */
  readonly backends: readonly string[];
  readonly behaviour: ParityBehaviour;
  /** The issue-13 item that fixes it. */
  readonly item: string;
}

export const KNOWN_GAPS: readonly KnownGap[] = [];

/** PARITY_RUN_GAPS=1 runs the listed gaps too (to see which entries can go). */
export function isKnownGap(backend: string, behaviour: ParityBehaviour): boolean {
  if (process.env.PARITY_RUN_GAPS === '1') return false;
  return KNOWN_GAPS.some((g) => g.behaviour === behaviour && g.backends.includes(backend));
}

/**
 * Construction sites whose error class contradicts docs/ERRORS.md, outside the heap/TTL code
 * (test/errors.test.ts fails on any other site, and on an entry that no longer matches a site).
 */
export interface ErrorClassGap {
  /** Source file, relative to the repository root. */
  readonly file: string;
  /** The class used there. */
  readonly cls: string;
  readonly code: string;
  readonly item: string;
}

// Entries name their item, e.g. 'issue 13, Deliver 4: error classes match docs/ERRORS.md everywhere'.
export const ERROR_CLASS_GAPS: readonly ErrorClassGap[] = [];
