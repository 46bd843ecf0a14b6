import { randomBytes } from 'node:crypto';
import type { FileStreamHandle } from '../../src/backend/handles.js';

/** What one snapshot may reference instead of uploading: `reusable(name)` gives the earlier upload of a local table file, or undefined (upload it). */
export interface ReusePlan {
  reusable(localName: string): FileStreamHandle | undefined;
}

const NOTHING: ReusePlan = { reusable: () => undefined };

/** Uploads of unconfirmed checkpoints kept as reuse candidates (only asked about through mayReuse). */
const MAX_UNCONFIRMED = 8;
/** Snapshots remembered while no notice comes (notices may be lost for good). */
const MAX_STARTED = 64;

interface Uploads {
  readonly checkpointId: number;
  readonly files: ReadonlyMap<string, FileStreamHandle>;
}

/**
 * Bookkeeping of the incremental chain (what Flink keeps in RocksIncrementalSnapshotStrategy):
 * which table files each checkpoint uploaded, and which of them the next checkpoint may reference.
 *
 * The reuse rule (docs/ARCHITECTURE.md, "Files and their lifetime"):
 * - Savepoints and `full` snapshots reference nothing earlier.
 * - With `SnapshotOptions.mayReuse` (the coordinator's registry): an earlier upload is referenced
 *   only if mayReuse says yes for its path exactly as it appears in the handle; candidates are the
 *   uploads of the base and of recent unconfirmed checkpoints (newest first). Notices then only
 *   choose candidates; they cannot make a checkpoint reference a deleted file.
 * - Without mayReuse: only the base's uploads, the base being the newest checkpoint confirmed by a
 *   completion notice. Notices are lossy, late, duplicated and out of order, so: a notice not newer
 *   than the newest one seen is ignored; a notice for an id this backend did not snapshot
 *   (savepoints, unknown ids) is ignored; an abort of a checkpoint that reused the base without
 *   asking (the coordinator declines exactly when a referenced file is gone), or an abort of the base
 *   itself (conflicting notices), drops the base: the next checkpoint uploads everything.
 */
export class IncrementalChain {
  /** Checkpoints snapshotted and not yet confirmed or aborted: the base they reused without asking (null: none), and whether they were full. */
  private readonly started = new Map<number, { readonly reusedBase: number | null; readonly full: boolean }>();
  /** Uploads of checkpoints whose asynchronous part finished, not yet confirmed or aborted. */
  private readonly unconfirmed = new Map<number, ReadonlyMap<string, FileStreamHandle>>();
  /** Confirmed before their uploads were recorded (a runtime that notifies early). */
  private readonly confirmedEarly = new Set<number>();
  private base: Uploads | null;
  /** The newest completion notice acted upon: older and equal ones are ignored. */
  private newestNotice: number;
  /** Set after a no-claim restore: the next checkpoint uploads everything. */
  private forceFull: boolean;

  private constructor(
    readonly backendId: string,
    base: Uploads | null,
    forceFull: boolean,
  ) {
    this.base = base;
    this.newestNotice = base?.checkpointId ?? Number.NEGATIVE_INFINITY;
    this.forceFull = forceFull;
  }

  static fresh(): IncrementalChain {
    return new IncrementalChain(randomBytes(8).toString('hex'), null, false);
  }

  /** Continues a restored chain (claim mode) or starts a new one whose first checkpoint is full (no-claim). */
  static restored(
    backendId: string,
    checkpointId: number,
    files: ReadonlyMap<string, FileStreamHandle>,
    claim: boolean,
  ): IncrementalChain {
    return claim
      ? new IncrementalChain(backendId, { checkpointId, files }, false)
      : new IncrementalChain(backendId, null, true);
  }

  get baseCheckpointId(): number | null {
    return this.base?.checkpointId ?? null;
  }

  /**
   * Called in the synchronous part of a snapshot: what it may reference. Savepoints are not
   * tracked (their notices are ignored); `full` ones reference nothing but become candidates.
   */
  begin(
    checkpointId: number,
    opts: { readonly savepoint: boolean; readonly full: boolean; readonly mayReuse?: (path: string) => boolean },
  ): ReusePlan {
    if (opts.savepoint) return NOTHING;
    const full = opts.full || this.forceFull;
    const mayReuse = opts.mayReuse;
    if (full) {
      this.start(checkpointId, { reusedBase: null, full: true });
      return NOTHING;
    }
    if (mayReuse !== undefined) {
      this.start(checkpointId, { reusedBase: null, full: false });
      const candidates = [...this.unconfirmed.entries()].sort((a, b) => b[0] - a[0]).map(([, files]) => files);
      if (this.base !== null) candidates.push(this.base.files);
      const answers = new Map<string, boolean>();
      const asked = (h: FileStreamHandle): boolean => {
        let yes = answers.get(h.path);
        if (yes === undefined) answers.set(h.path, (yes = mayReuse(h.path)));
        return yes;
      };
      return {
        reusable: (name) => {
          for (const files of candidates) {
            const h = files.get(name);
            if (h !== undefined && asked(h)) return h;
          }
          return undefined;
        },
      };
    }
    const base = this.base;
    this.start(checkpointId, { reusedBase: base?.checkpointId ?? null, full: false });
    return base === null ? NOTHING : { reusable: (name) => base.files.get(name) };
  }

  private start(checkpointId: number, entry: { readonly reusedBase: number | null; readonly full: boolean }): void {
    this.started.set(checkpointId, entry);
    while (this.started.size > MAX_STARTED) this.started.delete(Math.min(...this.started.keys()));
  }

  /** Records what a finished asynchronous part references (all its shared files). */
  recordUploaded(checkpointId: number, files: ReadonlyMap<string, FileStreamHandle>): void {
    const started = this.started.get(checkpointId);
    if (started === undefined) return; // aborted meanwhile (or a savepoint)
    if (started.full) this.forceFull = false;
    this.unconfirmed.set(checkpointId, files);
    while (this.unconfirmed.size > MAX_UNCONFIRMED) this.unconfirmed.delete(Math.min(...this.unconfirmed.keys()));
    if (this.confirmedEarly.delete(checkpointId)) this.complete(checkpointId);
  }

  complete(checkpointId: number): void {
    if (checkpointId <= this.newestNotice) return; // late or duplicated: a newer base is (or was) known
    if (!this.started.has(checkpointId)) return; // not ours: a savepoint, an unknown id, or already aborted
    const files = this.unconfirmed.get(checkpointId);
    if (files === undefined) {
      this.confirmedEarly.add(checkpointId);
      return;
    }
    this.newestNotice = checkpointId;
    this.base = { checkpointId, files };
    // Older checkpoints will not complete any more (a newer one did): forget them.
    for (const id of [...this.started.keys()]) if (id <= checkpointId) this.started.delete(id);
    for (const id of [...this.unconfirmed.keys()]) if (id <= checkpointId) this.unconfirmed.delete(id);
    for (const id of [...this.confirmedEarly]) if (id <= checkpointId) this.confirmedEarly.delete(id);
  }

  abort(checkpointId: number): void {
    const reusedBase = this.started.get(checkpointId)?.reusedBase ?? null;
    this.started.delete(checkpointId);
    this.unconfirmed.delete(checkpointId);
    this.confirmedEarly.delete(checkpointId);
    // Declined for referencing a file that is gone, or told that the base itself did not complete:
    // the base can no longer be trusted.
    if (this.base !== null && (reusedBase === this.base.checkpointId || checkpointId === this.base.checkpointId))
      this.base = null;
  }
}
