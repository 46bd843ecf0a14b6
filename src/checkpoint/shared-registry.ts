import { StreamStateError } from '../errors.js';

/**
 * Which shared files (files several checkpoints may reference: LevelDB tables, changelog
 * segments) are still needed. One registry per job attempt, rebuilt on restore. Modelled on
 * Flink's SharedStateRegistry with "last used" bookkeeping instead of reference counts: a file
 * is deletable once no retained checkpoint is at or above its last use.
 *
 * Keys are file names relative to the store root (`<job>/shared/x`; see
 * `BlobCheckpointStorage`), so a handle path `../shared/x` seen from `<job>/chk-7` and from
 * `<job>/chk-9` is one entry, and files of another job's checkpoint we restored from can never
 * be confused with ours. The registry only decides; the caller deletes (idempotently).
 */
export type RestoreMode = 'claim' | 'no-claim';

export interface SharedFileEntry {
  readonly key: string;
  /** The checkpoint that first registered the file (for restored files: the restored checkpoint). */
  readonly createdBy: number;
  /** The newest completed checkpoint that references it. */
  readonly lastUsedCheckpointId: number;
  /** Set once a completed checkpoint references it (always true here: only completed checkpoints register). */
  readonly confirmed: boolean;
  /** Present for files that came with a restored checkpoint: `no-claim` files are never deleted. */
  readonly restored?: RestoreMode;
}

interface MutableEntry {
  key: string;
  createdBy: number;
  lastUsedCheckpointId: number;
  confirmed: boolean;
  restored?: RestoreMode;
}

function checkId(id: number, what: string): void {
  if (!Number.isSafeInteger(id)) throw new StreamStateError('INVALID_ARGUMENT', `${what} must be an integer checkpoint id, got ${id}.`);
}

export class SharedStateRegistry {
  private readonly entries = new Map<string, MutableEntry>();

  /** Records that completed checkpoint `checkpointId` references `files` (store-relative names). */
  registerCheckpoint(checkpointId: number, files: Iterable<string>): void {
    checkId(checkpointId, 'registerCheckpoint');
    for (const key of files) {
      const e = this.entries.get(key);
      if (e === undefined) {
        this.entries.set(key, { key, createdBy: checkpointId, lastUsedCheckpointId: checkpointId, confirmed: true });
      } else {
        e.lastUsedCheckpointId = Math.max(e.lastUsedCheckpointId, checkpointId);
        e.confirmed = true;
      }
    }
  }

  /**
   * Records the files of the checkpoint or savepoint a job was restored from. `claim`: they
   * become ours and are deleted once unused; `no-claim`: they belong to someone else and are
   * never deleted (even if a later checkpoint references them too).
   */
  registerRestored(checkpointId: number, files: Iterable<string>, mode: RestoreMode): void {
    checkId(checkpointId, 'registerRestored');
    for (const key of files) {
      const e = this.entries.get(key);
      if (e === undefined) {
        this.entries.set(key, { key, createdBy: checkpointId, lastUsedCheckpointId: checkpointId, confirmed: true, restored: mode });
      } else {
        e.lastUsedCheckpointId = Math.max(e.lastUsedCheckpointId, checkpointId);
        // no-claim wins: once a file is known to belong to someone else it stays protected.
        if (e.restored !== 'no-claim') e.restored = mode;
      }
    }
  }

  /**
   * Forgets and returns the files no retained checkpoint uses any more: last used below
   * `lowestRetainedId`, excluding no-claim restored files (kept, never returned). Calling it again
   * returns nothing new; unknown ids (negative, huge) are fine.
   */
  unregisterUnused(lowestRetainedId: number): string[] {
    const out: string[] = [];
    for (const e of this.entries.values()) {
      if (e.lastUsedCheckpointId < lowestRetainedId && e.restored !== 'no-claim') {
        this.entries.delete(e.key);
        out.push(e.key);
      }
    }
    return out;
  }

  /**
   * Ids of no-claim restored checkpoints that a retained checkpoint (id >= lowestRetainedId,
   * above the restored one) still references; their files must stay where they are.
   */
  restoredCheckpointsInUse(lowestRetainedId: number): number[] {
    const ids = new Set<number>();
    for (const e of this.entries.values()) {
      if (e.restored === 'no-claim' && e.lastUsedCheckpointId > e.createdBy && e.lastUsedCheckpointId >= lowestRetainedId) ids.add(e.createdBy);
    }
    return [...ids].sort((a, b) => a - b);
  }

  /**
   * The files among `files` (referenced by the aborted checkpoint `checkpointId`) that only it
   * uploaded, i.e. that no completed checkpoint registered: the caller deletes them.
   */
  discardAborted(checkpointId: number, files: Iterable<string>): string[] {
    checkId(checkpointId, 'discardAborted');
    const out = new Set<string>();
    for (const key of files) if (!this.entries.has(key)) out.add(key);
    return [...out];
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  get(key: string): SharedFileEntry | undefined {
    const e = this.entries.get(key);
    return e === undefined ? undefined : { ...e };
  }

  get size(): number {
    return this.entries.size;
  }

  /** Snapshot of every entry (for tests, metrics and `streamstate gc`). */
  list(): SharedFileEntry[] {
    return [...this.entries.values()].map((e) => ({ ...e }));
  }
}
