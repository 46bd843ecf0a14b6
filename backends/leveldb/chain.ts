import { randomBytes } from 'node:crypto';
import type { FileStreamHandle } from '../../src/backend/handles.js';

/**
 * Bookkeeping of the incremental chain (what Flink keeps in RocksIncrementalSnapshotStrategy):
 * which table files each pending checkpoint uploaded, and the base = the files of the last
 * checkpoint confirmed complete. Only the base is reused: a checkpoint that was never confirmed
 * may be discarded, so reusing its uploads would be unsafe (re-uploading is merely wasteful).
 */
export class IncrementalChain {
  private readonly pending = new Map<number, ReadonlyMap<string, FileStreamHandle>>();
  private base: { checkpointId: number; files: ReadonlyMap<string, FileStreamHandle> } | null;
  /** Set after a no-claim restore: the next checkpoint uploads everything. */
  private forceFull: boolean;

  private constructor(
    readonly backendId: string,
    base: { checkpointId: number; files: ReadonlyMap<string, FileStreamHandle> } | null,
    forceFull: boolean,
  ) {
    this.base = base;
    this.forceFull = forceFull;
  }

  static fresh(): IncrementalChain {
    return new IncrementalChain(randomBytes(8).toString('hex'), null, false);
  }

  /** Continues a restored chain (claim mode) or starts a new one whose first checkpoint is full (no-claim). */
  static restored(backendId: string, checkpointId: number, files: ReadonlyMap<string, FileStreamHandle>, claim: boolean): IncrementalChain {
    return claim ? new IncrementalChain(backendId, { checkpointId, files }, false) : new IncrementalChain(backendId, null, true);
  }

  /** The uploads the next checkpoint may reference (empty for a full one). */
  baseFiles(full: boolean): ReadonlyMap<string, FileStreamHandle> {
    if (full || this.forceFull || this.base === null) return new Map();
    return this.base.files;
  }

  get baseCheckpointId(): number | null {
    return this.base?.checkpointId ?? null;
  }

  /** Records what a finished asynchronous part uploaded (all shared files it references). */
  recordUploaded(checkpointId: number, files: ReadonlyMap<string, FileStreamHandle>, full: boolean): void {
    this.pending.set(checkpointId, files);
    if (full) this.forceFull = false;
  }

  complete(checkpointId: number): void {
    const files = this.pending.get(checkpointId);
    if (files === undefined) return;
    if (this.base === null || checkpointId > this.base.checkpointId) this.base = { checkpointId, files };
    for (const id of [...this.pending.keys()]) if (id <= checkpointId) this.pending.delete(id);
  }

  abort(checkpointId: number): void {
    this.pending.delete(checkpointId);
  }
}
