import type { KeyedStateHandle, OperatorStateHandle } from '../backend/handles.js';

/**
 * What _metadata holds (its byte encoding lives in metadata-codec.ts and docs/FORMAT.md).
 * One file per completed checkpoint or savepoint; a checkpoint without it does not exist.
 */
export interface SubtaskStateSnapshot {
  readonly subtaskIndex: number;
  readonly keyed: readonly KeyedStateHandle[];
  readonly operator: readonly OperatorStateHandle[];
}

export interface OperatorSnapshot {
  readonly operatorId: string;
  readonly parallelism: number;
  readonly maxParallelism: number;
  readonly subtasks: readonly SubtaskStateSnapshot[];
}

export interface CheckpointMetadata {
  readonly checkpointId: number;
  readonly jobId: string;
  readonly kind: 'checkpoint' | 'savepoint';
  readonly format: 'native' | 'canonical';
  /** Name of the state backend that wrote it (`memory`, `filesystem`, `leveldb`, `changelog(memory)`, ...). */
  readonly backend: string;
  /** ms since epoch when the checkpoint was triggered */
  readonly timestamp: number;
  readonly operators: readonly OperatorSnapshot[];
  /** Free-form, JSON-serializable (e.g. the changelog's materialization id). */
  readonly properties?: Readonly<Record<string, string | number | boolean>>;
}

/** A completed checkpoint as listed by checkpoint storage. */
export interface CompletedCheckpointInfo {
  readonly checkpointId: number;
  /** Pointer to resolve it with: the directory that holds its _metadata. */
  readonly pointer: string;
  readonly timestamp: number;
  /** Bytes of _metadata plus its exclusive files (shared files are not counted). */
  readonly size: number;
}
