import { StreamStateError } from '../errors.js';
import type { CompletedCheckpointInfo } from './metadata.js';

/** A retained completed checkpoint. */
export interface RetainedCheckpoint {
  readonly info: CompletedCheckpointInfo;
  /** `own`: a chk-<n> directory of this job; `claimed`: a foreign snapshot restored in claim mode. */
  readonly origin: 'own' | 'claimed';
}

/**
 * The completed-checkpoint store (Flink's CompletedCheckpointStore): the retained checkpoints,
 * oldest first, at most `numRetained` once `takeSubsumed()` ran. It only keeps the list; deleting
 * a subsumed checkpoint's files is the coordinator's job.
 */
export class CompletedCheckpointStore {
  private entries: RetainedCheckpoint[] = [];

  constructor(readonly numRetained: number) {
    if (!Number.isSafeInteger(numRetained) || numRetained < 1) {
      throw new StreamStateError('INVALID_ARGUMENT', `numRetained must be a positive integer, got ${numRetained}.`);
    }
  }

  /** Retained checkpoints, oldest first. */
  all(): readonly RetainedCheckpoint[] {
    return this.entries;
  }

  infos(): CompletedCheckpointInfo[] {
    return this.entries.map((c) => c.info);
  }

  latest(): CompletedCheckpointInfo | null {
    return this.entries.at(-1)?.info ?? null;
  }

  /** The oldest retained checkpoint's id, or +Infinity when none is retained. */
  lowestId(): number {
    return this.entries[0]?.info.checkpointId ?? Number.POSITIVE_INFINITY;
  }

  /** Keeps the list ordered by id. */
  add(entry: RetainedCheckpoint): void {
    this.entries.push(entry);
    this.entries.sort((a, b) => a.info.checkpointId - b.info.checkpointId);
  }

  /** Removes and returns the oldest checkpoints beyond numRetained. */
  takeSubsumed(): RetainedCheckpoint[] {
    const out: RetainedCheckpoint[] = [];
    while (this.entries.length > this.numRetained) out.push(this.entries.shift()!);
    return out;
  }

  /** Removes and returns every retained checkpoint. */
  takeAll(): RetainedCheckpoint[] {
    const out = this.entries;
    this.entries = [];
    return out;
  }

  /** Whether `key` lies in a retained checkpoint's directory (its exclusive files go with it). */
  holdsExclusive(key: string): boolean {
    return this.entries.some((c) => key.startsWith(`${c.info.pointer}/`));
  }

  /** Ids of retained chk-<n> directories of this job (not claimed foreign snapshots). */
  ownIds(): Set<number> {
    return new Set(this.entries.filter((c) => c.origin === 'own').map((c) => c.info.checkpointId));
  }
}
