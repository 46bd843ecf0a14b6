import type { CheckpointStreamFactory } from '../backend/contract.js';
import type { FileStreamHandle } from '../backend/handles.js';
import type { BlobStore } from '../storage/blob-store.js';
import { ForwardingBlobStore } from '../storage/forwarding-blob-store.js';
import type { CheckpointMetadata, CompletedCheckpointInfo } from './metadata.js';
import type { CheckpointStorage, ResolvedSnapshot } from './storage.js';

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
export class FencedCheckpointStorage implements CheckpointStorage {
  readonly store: BlobStore;

  constructor(
    readonly inner: CheckpointStorage,
    private readonly guard: DeletionGuard,
  ) {
    this.store = new GuardedDeleteStore(inner.store, guard);
  }

  get location(): string {
    return this.inner.location;
  }

  get inlineThreshold(): number {
    return this.inner.inlineThreshold;
  }

  checkpointPointer(jobId: string, checkpointId: number): string {
    return this.inner.checkpointPointer(jobId, checkpointId);
  }

  checkpointStreams(jobId: string, checkpointId: number): CheckpointStreamFactory {
    return this.inner.checkpointStreams(jobId, checkpointId);
  }

  createSavepointLocation(jobId: string, targetDir?: string): { pointer: string; streams: CheckpointStreamFactory } {
    return this.inner.createSavepointLocation(jobId, targetDir);
  }

  writeMetadata(pointer: string, metadata: CheckpointMetadata): Promise<void> {
    return this.inner.writeMetadata(pointer, metadata);
  }

  resolve(pointer: string): Promise<ResolvedSnapshot> {
    return this.inner.resolve(pointer);
  }

  listCompletedCheckpoints(jobId: string): Promise<CompletedCheckpointInfo[]> {
    return this.inner.listCompletedCheckpoints(jobId);
  }

  async discardCheckpointDirectory(jobId: string, checkpointId: number): Promise<void> {
    await this.guard(`delete checkpoint directory ${this.inner.checkpointPointer(jobId, checkpointId)}`);
    return this.inner.discardCheckpointDirectory(jobId, checkpointId);
  }

  async deleteFiles(pointer: string, files: readonly FileStreamHandle[]): Promise<void> {
    if (files.length === 0) return;
    await this.guard(`delete ${files.length} file(s) of ${pointer}`);
    return this.inner.deleteFiles(pointer, files);
  }

  listJobFiles(jobId: string): Promise<string[]> {
    return this.inner.listJobFiles(jobId);
  }
}
