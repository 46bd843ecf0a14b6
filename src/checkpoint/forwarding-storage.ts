import type { CheckpointStreamFactory } from '../backend/contract.js';
import type { FileStreamHandle } from '../backend/handles.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { CheckpointMetadata, CompletedCheckpointInfo } from './metadata.js';
import type { CheckpointStorage, ResolvedSnapshot } from './storage.js';

/**
 * A checkpoint storage that passes every call to `inner`. Wrappers (fencing, mounts) extend it and
 * override only the calls they change, so a method added to CheckpointStorage is forwarded in one place.
 */
export abstract class ForwardingCheckpointStorage implements CheckpointStorage {
  abstract readonly store: BlobStore;

  constructor(readonly inner: CheckpointStorage) {}

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

  discardCheckpointDirectory(jobId: string, checkpointId: number): Promise<void> {
    return this.inner.discardCheckpointDirectory(jobId, checkpointId);
  }

  deleteFiles(pointer: string, files: readonly FileStreamHandle[]): Promise<void> {
    return this.inner.deleteFiles(pointer, files);
  }

  listJobFiles(jobId: string): Promise<string[]> {
    return this.inner.listJobFiles(jobId);
  }
}
