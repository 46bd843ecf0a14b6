import type { KeyedStateHandle, OperatorStateHandle } from '../backend/handles.js';
import type { ChannelStateHandle } from './channel-state.js';

/**
 * What _metadata holds (its byte encoding lives in metadata-codec.ts and docs/FORMAT.md).
 * One file per completed checkpoint or savepoint; a checkpoint without it does not exist.
 */
export interface SubtaskStateSnapshot {
  readonly subtaskIndex: number;
  readonly keyed: readonly KeyedStateHandle[];
  readonly operator: readonly OperatorStateHandle[];
  /**
   * In-flight records of an unaligned checkpoint (channel-state.ts). Absent when there were none;
   * its presence makes the file format version 2.
   */
  readonly channel?: ChannelStateHandle;
}

/** Every handle of a subtask: what the files of a snapshot are enumerated from (retention, abort, gc, copy, verify). */
export function subtaskStateHandles(s: {
  readonly keyed: readonly KeyedStateHandle[];
  readonly operator: readonly OperatorStateHandle[];
  readonly channel?: ChannelStateHandle | null;
}): unknown[] {
  return s.channel ? [s.keyed, s.operator, s.channel] : [s.keyed, s.operator];
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
  /**
   * Statistics of the checkpoint (checkpoint-stats.ts). Optional: files written before it existed,
   * and snapshots written by other tools (convert), have none.
   */
  readonly stats?: CheckpointMetadataStats;
}

/** How a completed checkpoint went, as recorded in its _metadata (docs/FORMAT.md, "stats"). */
export interface CheckpointMetadataStats {
  /** End-to-end duration, ms: from the trigger to the last acknowledgement (Flink's definition). */
  readonly durationMs: number;
  /** Bytes this checkpoint wrote: new files plus inline streams (Flink's "checkpointed size"). */
  readonly bytesWritten: number;
  /** Bytes of all state it references: written plus reused (Flink's "full size"). */
  readonly fullSize: number;
  /** Bytes of files it references that earlier checkpoints wrote (incremental reuse). */
  readonly bytesReused: number;
  /** Distinct files it references (inline streams are not files). */
  readonly fileCount: number;
  /** One entry per acknowledging subtask, by operator, then subtask index. */
  readonly subtasks: readonly SubtaskStatsRecord[];
}

/** One subtask's part of a checkpoint's statistics. Durations are what the runtime reported (absent: not reported). */
export interface SubtaskStatsRecord {
  readonly operatorId: string;
  readonly subtaskIndex: number;
  /** ms since epoch when its acknowledgement arrived. */
  readonly ackTimestamp: number;
  readonly syncDurationMs?: number;
  readonly asyncDurationMs?: number;
  readonly alignmentDurationMs?: number;
  readonly bytesWritten: number;
  readonly fullSize: number;
  readonly bytesReused: number;
  readonly fileCount: number;
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
