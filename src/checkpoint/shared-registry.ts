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
 *
 * It also keeps the ledger of uploads: files written through the stream factory of a checkpoint
 * of this attempt that no completed checkpoint references yet (`recordUpload`). Their writer owns
 * them until a completed checkpoint registers them (they become entries) or they are deleted
 * (`forgetUploads`, always before the file is deleted). A file neither registered nor in the
 * ledger is of unknown origin: no checkpoint may complete referencing it.
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
  if (!Number.isSafeInteger(id))
    throw new StreamStateError('INVALID_ARGUMENT', `${what} must be an integer checkpoint id, got ${id}.`);
}

export class SharedStateRegistry {
  private readonly entries = new Map<string, MutableEntry>();
  /** Uploads no completed checkpoint references yet: store-relative name -> id of the checkpoint whose streams wrote it. */
  private readonly uploads = new Map<string, number>();

  /** Records that completed checkpoint `checkpointId` references `files` (store-relative names). */
  registerCheckpoint(checkpointId: number, files: Iterable<string>): void {
    checkId(checkpointId, 'registerCheckpoint');
    for (const key of files) {
      this.uploads.delete(key);
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
        this.entries.set(key, {
          key,
          createdBy: checkpointId,
          lastUsedCheckpointId: checkpointId,
          confirmed: true,
          restored: mode,
        });
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
      if (
        e.restored === 'no-claim' &&
        e.lastUsedCheckpointId > e.createdBy &&
        e.lastUsedCheckpointId >= lowestRetainedId
      )
        ids.add(e.createdBy);
    }
    return [...ids].sort((a, b) => a - b);
  }

  /**
   * Whether a checkpoint whose reuse floor is `reuseFloor` (the lowest checkpoint retained when it
   * was triggered) may reference `key`: a registered entry, last used at or after the floor, that
   * is not a no-claim restored file (those belong to someone else). Such an entry cannot be
   * unregistered while that checkpoint is in flight (see CheckpointCoordinator.releaseUnusedShared).
   */
  mayReuse(key: string, reuseFloor: number): boolean {
    const e = this.entries.get(key);
    return e !== undefined && e.restored !== 'no-claim' && e.lastUsedCheckpointId >= reuseFloor;
  }

  /** A registered file a checkpoint may complete referencing: every entry but no-claim restored files (someone else's). */
  isLive(key: string): boolean {
    const e = this.entries.get(key);
    return e !== undefined && e.restored !== 'no-claim';
  }

  /** Records that the streams of checkpoint `writerId` wrote `key` (no completed checkpoint references it yet). */
  recordUpload(writerId: number, key: string): void {
    checkId(writerId, 'recordUpload');
    if (!this.entries.has(key)) this.uploads.set(key, writerId);
  }

  /** The checkpoint whose streams wrote `key`, while it is an upload no completed checkpoint references. */
  uploadedBy(key: string): number | undefined {
    return this.uploads.get(key);
  }

  /** Uploads written by checkpoint `writerId`'s streams that no completed checkpoint references. */
  uploadsOf(writerId: number): string[] {
    const out: string[] = [];
    for (const [key, writer] of this.uploads) if (writer === writerId) out.push(key);
    return out;
  }

  /** Drops uploads from the ledger: call before deleting them, so nothing can complete referencing them. */
  forgetUploads(keys: Iterable<string>): void {
    for (const key of keys) this.uploads.delete(key);
  }

  /**
   * What aborted checkpoint `checkpointId` wrote and may be deleted now: its uploads that no
   * completed checkpoint registered, minus `keep` (files another in-flight checkpoint references
   * or was promised). They leave the ledger; the caller deletes them.
   */
  discardAborted(checkpointId: number, keep: (key: string) => boolean = () => false): string[] {
    checkId(checkpointId, 'discardAborted');
    const out = this.uploadsOf(checkpointId).filter((key) => !keep(key));
    this.forgetUploads(out);
    return out;
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
