import type { KeyGroupRange } from '../keygroups/key-groups.js';
import type { Serializer } from '../serializers/serializer.js';
import type { MapStateDescriptor, StateDescriptor } from '../state/descriptors.js';
import type { BroadcastState, OperatorListState, StateFor, TimerQueue } from '../state/types.js';
import type { FileStreamHandle, KeyedStateHandle, OperatorStateHandle, StreamHandle } from './handles.js';

/**
 * The contract between a streaming runtime and a state backend. docs/RUNTIME.md gives the call
 * order. A StateBackend is a factory; it creates one KeyedStateBackend and one
 * OperatorStateBackend per operator subtask. Where the snapshots go is checkpoint storage's
 * business (src/checkpoint): backends write through the CheckpointStreamFactory they are handed.
 */

// ---------------------------------------------------------------- writing snapshots

export type StateScope = 'exclusive' | 'shared';

/** A stream into checkpoint storage. Small results come back inline; larger ones as a file. */
export interface StateOutputStream {
  /** Bytes written so far. */
  readonly position: number;
  /** The stream copies what it keeps: the caller may reuse `chunk` once the promise resolved. */
  write(chunk: Uint8Array): Promise<void>;
  /** Null when nothing was written. */
  closeAndGetHandle(): Promise<StreamHandle | null>;
  /** Abandons the stream and deletes whatever it wrote. Idempotent. */
  discard(): Promise<void>;
}

export interface UploadFileOptions {
  /** The file is never modified in place after the call (deleting or replacing it by rename is fine). */
  readonly immutable?: boolean;
}

/** Where one snapshot (of one subtask) writes. Created by checkpoint storage per checkpoint/savepoint. */
export interface CheckpointStreamFactory {
  createOutputStream(scope: StateScope): StateOutputStream;
  /**
   * Uploads a local file whole (LevelDB table files). `name` is kept in the stored path when given.
   * `immutable`: the file is never modified in place afterwards, so local storage may hard-link it.
   */
  uploadFile(localPath: string, scope: StateScope, name?: string, opts?: UploadFileOptions): Promise<FileStreamHandle>;
  /** Deletes files this factory wrote, e.g. after a failed snapshot. Idempotent. */
  discardFiles(files: readonly FileStreamHandle[]): Promise<void>;
}

/** Reads the files of one checkpoint or savepoint (paths as they appear in its handles). */
export interface StateFileReader {
  /** The whole file; verifies size and crc32 against the handle. */
  read(file: FileStreamHandle): Promise<Buffer>;
  /** `length` bytes at `offset`; the caller verifies block checksums. */
  readRange(file: FileStreamHandle, offset: number, length: number): Promise<Buffer>;
  /** Copies a file to a local path, verifying size and crc32. */
  download(file: FileStreamHandle, localPath: string): Promise<void>;
  /** A human-readable location of the file, for error messages. */
  describe(file: FileStreamHandle): string;
}

export interface SnapshotOptions {
  readonly type: 'checkpoint' | 'savepoint';
  /** Savepoints: `canonical` (backend-independent) or `native`. Checkpoints are native. */
  readonly format?: 'canonical' | 'native';
  /** Forces a self-contained snapshot (no reuse of earlier uploads): savepoints, first checkpoint after a no-claim restore. */
  readonly full?: boolean;
  readonly streams: CheckpointStreamFactory;
  /**
   * Asks the coordinator whether this snapshot may reference a file that an earlier checkpoint
   * uploaded. `path` is the file's path exactly as it would appear in this snapshot's handle
   * (relative to this checkpoint's directory, e.g. `../shared/<name>`). A yes is a promise: the
   * file stays until this checkpoint completes or aborts (the coordinator confirms it again at
   * completion). A no means the file is gone or going: upload the data again. Backends that reuse
   * earlier uploads must ask before every reuse; notifications alone cannot tell them, since they
   * may be late, lost or out of order. Absent (hand-built options): reuse nothing unconfirmed, and
   * expect the coordinator to decline a checkpoint that references a file no longer live.
   */
  readonly mayReuse?: (path: string) => boolean;
}

/**
 * A snapshot whose synchronous part is done. `done` is the asynchronous part: it resolves with the
 * handle (null when there is nothing to snapshot) or rejects (SnapshotError code SNAPSHOT_CANCELLED
 * when the backend was closed or the checkpoint aborted meanwhile).
 */
export interface SnapshotTask<H> {
  readonly checkpointId: number;
  readonly done: Promise<H | null>;
}

// ---------------------------------------------------------------- restoring

export interface RestoreSource<H> {
  /** The handles this subtask must restore from (already routed by key-group range / repartitioned). */
  readonly handles: readonly H[];
  readonly files: StateFileReader;
  /** no-claim (default): the restored files belong to someone else; the first checkpoint is full. */
  readonly mode?: 'claim' | 'no-claim';
  /** The id of the checkpoint restored from (for incremental chains). */
  readonly checkpointId?: number;
}

export interface SubtaskInfo {
  readonly jobId: string;
  readonly operatorId: string;
  readonly subtaskIndex: number;
  readonly parallelism: number;
}

export interface KeyedBackendParams<K> extends SubtaskInfo {
  readonly maxParallelism: number;
  readonly keyGroupRange: KeyGroupRange;
  readonly keySerializer: Serializer<K>;
  readonly restore?: RestoreSource<KeyedStateHandle>;
  /** Processing-time clock for TTL (ms). Default Date.now. */
  readonly clock?: () => number;
}

export interface OperatorBackendParams extends SubtaskInfo {
  readonly restore?: RestoreSource<OperatorStateHandle>;
}

// ---------------------------------------------------------------- the backends

export interface Snapshotable<H> {
  /**
   * Captures a consistent view of the state (the synchronous part; when the returned promise
   * resolves, writes no longer leak into this snapshot) and starts writing it (the asynchronous
   * part, `SnapshotTask.done`). The runtime must not access state between the call and the
   * resolution of the returned promise. Several snapshots may be in flight at once.
   */
  snapshot(checkpointId: number, options: SnapshotOptions): Promise<SnapshotTask<H>>;
  /** Best effort; ids may arrive late or out of order. */
  notifyCheckpointComplete(checkpointId: number): Promise<void>;
  /** Stops this id's snapshot still writing (SNAPSHOT_CANCELLED, partial files deleted); best effort like the above. */
  notifyCheckpointAborted(checkpointId: number): Promise<void>;
  /** Fails in-flight snapshots with SNAPSHOT_CANCELLED, removes their partial files, releases resources. Idempotent. */
  close(): Promise<void>;
}

export interface KeyedStateBackend<K> extends Snapshotable<KeyedStateHandle> {
  readonly keyGroupRange: KeyGroupRange;
  readonly maxParallelism: number;
  readonly keySerializer: Serializer<K>;

  /** Sets the key that state handles read and write. Throws KEY_OUT_OF_RANGE for a key of another subtask. */
  setCurrentKey(key: K): void;
  getCurrentKey(): K;
  /** The key group of the current key. */
  readonly currentKeyGroup: number;

  /** Registers (or gets) a state. Re-registering a name with another kind throws STATE_KIND_MISMATCH. */
  getState<D extends StateDescriptor<unknown>>(descriptor: D): StateFor<D>;
  /** A timer queue by name, created on first use. */
  getTimerQueue<N = string>(name: string, namespaceSerializer?: Serializer<N>): TimerQueue<K, N>;

  /** Keys with an entry in `stateName` under `namespace`. */
  getKeys<N>(stateName: string, namespace: N): AsyncIterable<K>;
  /** Every (key, namespace) with an entry in `stateName`. */
  getKeysAndNamespaces<N>(stateName: string): AsyncIterable<[K, N]>;
  /** Calls `fn` with each key that has state under `namespace`, that key set current. `fn` may clear and re-add. */
  applyToAllKeys<D extends StateDescriptor<unknown>>(
    namespace: unknown,
    descriptor: D,
    fn: (key: K, state: StateFor<D>) => void | Promise<void>,
  ): Promise<void>;
  /** Names of every registered or restored keyed state. */
  stateNames(): string[];
  /** Number of stored entries (a value, a list, or one map entry each) across all states; for tests and metrics. */
  numEntries(): Promise<number>;
}

export interface OperatorStateBackend extends Snapshotable<OperatorStateHandle> {
  /** Split-distributed list state: on rescale the elements are divided among the subtasks. */
  getListState<T>(name: string, serializer?: Serializer<T>): OperatorListState<T>;
  /** Union list state: on restore every subtask gets all elements. */
  getUnionListState<T>(name: string, serializer?: Serializer<T>): OperatorListState<T>;
  /** Broadcast map state: identical on every subtask. */
  getBroadcastState<K, V>(descriptor: MapStateDescriptor<K, V, unknown>): BroadcastState<K, V>;
  stateNames(): string[];
}

export interface StateBackend {
  /** `memory`, `filesystem`, `leveldb`, `changelog(...)` */
  readonly name: string;
  createKeyedStateBackend<K>(params: KeyedBackendParams<K>): Promise<KeyedStateBackend<K>>;
  createOperatorStateBackend(params: OperatorBackendParams): Promise<OperatorStateBackend>;
  supportsSavepointFormat(format: 'canonical' | 'native'): boolean;
}
