import type { CheckpointStreamFactory, StateFileReader } from '../backend/contract.js';
import type { FileStreamHandle } from '../backend/handles.js';
import type { BlobStore } from '../storage/blob-store.js';
import type { CheckpointMetadata, CompletedCheckpointInfo } from './metadata.js';

/**
 * Checkpoint storage: where snapshots go (as opposed to the state backend, where live state is).
 * One implementation (BlobCheckpointStorage) over any BlobStore gives this layout:
 *
 *   <root>/<jobId>/chk-<n>/_metadata       written last, atomically; no _metadata = no checkpoint
 *   <root>/<jobId>/chk-<n>/<exclusive files>
 *   <root>/<jobId>/shared/<files>          may be referenced by several checkpoints
 *   <root>/<jobId>/taskowned/              never deleted by streamstate
 *   <root>/<jobId>/_lease/epoch-<n>-<id>    the job lease (lease.ts): one marker per start of an instance
 *   <root>/savepoint-<job6>-<12 hex>/      savepoints: _metadata and all files, relative paths
 *
 * A pointer names a checkpoint or savepoint: the directory that holds its _metadata, or the
 * _metadata file itself, as a store-relative path or an absolute one under the store's location.
 */
export interface CheckpointStorageOptions {
  /** Streams up to this many bytes end up inline in _metadata. Default 20 KiB; 0 = always files. */
  readonly inlineThreshold?: number;
}

export interface ResolvedSnapshot {
  /** Normalized pointer: store-relative directory holding _metadata. */
  readonly pointer: string;
  readonly metadata: CheckpointMetadata;
  /** Reads the files its handles reference. */
  readonly files: StateFileReader;
}

export interface CheckpointStorage {
  readonly store: BlobStore;
  /** location of the store (+ path), for messages */
  readonly location: string;
  readonly inlineThreshold: number;

  /** Pointer of checkpoint `id` of `jobId` ("<jobId>/chk-<id>"). */
  checkpointPointer(jobId: string, checkpointId: number): string;
  /** Where subtasks write their part of checkpoint `id`: exclusive files under chk-<id>/, shared ones under shared/. */
  checkpointStreams(jobId: string, checkpointId: number): CheckpointStreamFactory;
  /** A new savepoint directory (under `targetDir`, store-relative; default the store root) and the streams that write into it. */
  createSavepointLocation(jobId: string, targetDir?: string): { pointer: string; streams: CheckpointStreamFactory };

  /** Writes _metadata last and atomically; refuses to overwrite an existing one. */
  writeMetadata(pointer: string, metadata: CheckpointMetadata): Promise<void>;
  /**
   * Reads and validates _metadata (at most 64 MiB; checksum, then version). NOT_FOUND / METADATA_MISSING / BAD_MAGIC / ...
   * The returned reader resolves handle paths only inside this snapshot (handle-paths.ts) and reads only regular files.
   */
  resolve(pointer: string): Promise<ResolvedSnapshot>;
  /** Completed checkpoints of a job (those with _metadata), oldest first. */
  listCompletedCheckpoints(jobId: string): Promise<CompletedCheckpointInfo[]>;
  /** Deletes the chk-<id> directory (exclusive files and _metadata; _metadata first). Shared files are the registry's business. */
  discardCheckpointDirectory(jobId: string, checkpointId: number): Promise<void>;
  /** Deletes files referenced from the snapshot at `pointer` (paths relative to it, confined to the snapshot: CORRUPT otherwise, before any delete). Idempotent. */
  deleteFiles(pointer: string, files: readonly FileStreamHandle[]): Promise<void>;
  /** Every object under the job's directory (for gc), store-relative names; never the job lease (`<job>/_lease/`, lease.ts). */
  listJobFiles(jobId: string): Promise<string[]>;
}
