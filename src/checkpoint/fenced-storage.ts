import type { FileStreamHandle } from '../backend/handles.js';
import type { BlobStore } from '../storage/blob-store.js';
import { ForwardingBlobStore } from '../storage/forwarding-blob-store.js';
import { ForwardingCheckpointStorage } from './forwarding-storage.js';
import type { CheckpointStorage } from './storage.js';

/** Runs before every deletion; throws (FENCED) when this instance may not delete. */
export type DeletionGuard = (what: string) => Promise<void>;

/** A BlobStore whose deletions first pass the guard (the coordinator's lease check). */
class GuardedDeleteStore extends ForwardingBlobStore {
  constructor(
    inner: BlobStore,
    private readonly guard: DeletionGuard,
  ) {
    super(inner);
  }

  override async delete(names: readonly string[]): Promise<void> {
    if (names.length === 0) return;
    await this.guard(`delete ${names.length} file(s) (${names[0]}${names.length > 1 ? ', ...' : ''})`);
    return this.inner.delete(names);
  }
}

/**
 * The checkpoint storage a coordinator works through: the same storage, except that every
 * deletion (through `store.delete`, `discardCheckpointDirectory` or `deleteFiles`) first passes
 * `guard`. A fenced instance thus deletes nothing, wherever in the coordinator the deletion comes from.
 */
export class FencedCheckpointStorage extends ForwardingCheckpointStorage {
  readonly store: BlobStore;

  constructor(
    inner: CheckpointStorage,
    private readonly guard: DeletionGuard,
  ) {
    super(inner);
    this.store = new GuardedDeleteStore(inner.store, guard);
  }

  override async discardCheckpointDirectory(jobId: string, checkpointId: number): Promise<void> {
    await this.guard(`delete checkpoint directory ${this.inner.checkpointPointer(jobId, checkpointId)}`);
    return this.inner.discardCheckpointDirectory(jobId, checkpointId);
  }

  override async deleteFiles(pointer: string, files: readonly FileStreamHandle[]): Promise<void> {
    if (files.length === 0) return;
    await this.guard(`delete ${files.length} file(s) of ${pointer}`);
    return this.inner.deleteFiles(pointer, files);
  }
}
