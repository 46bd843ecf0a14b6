import type { StateBackend } from '../backend/contract.js';
import type { CompletedCheckpointInfo } from '../checkpoint/metadata.js';
import type { SavepointLocationOptions } from '../checkpoint/savepoint-location.js';
import type { StopMode } from '../checkpoint/stop-with-savepoint.js';
import type { StreamStateError } from '../errors.js';
import type { CheckpointStorage } from '../checkpoint/storage.js';
import type { Serializer } from '../serializers/serializer.js';
import type { CommittedOutput } from './committed-output.js';
import type { PipelineSink } from './external-sink.js';
import type { PipelineSource } from './external-source.js';
import type { CrashPredicate, PipelineEvent, PipelineEventType } from './events.js';
import type { CheckpointingModeOptions } from './checkpointing-mode.js';
import type { ProcessFunction } from './keyed-operator.js';
import type { PipelineCheckpointing } from './scheduled-checkpoints.js';

/**
 * A job for the in-process pipeline runner:
 *
 *   source (replayable, `sourceParallelism`) --keyBy--> keyed operator (`parallelism`) --> exactly-once sink
 *
 * The sink runs at the keyed operator's parallelism unless `sinkParallelism` is given (forward edges
 * when equal, round-robin otherwise).
 */
export interface PipelineJob<IN, K, OUT> {
  /** Default: a fresh random id (checkpoints go to <storage>/<jobId>/). */
  readonly jobId?: string;
  /** The input: partitions of records. Replayed from checkpointed offsets after a crash, so it must not change between attempts. */
  readonly input?: readonly (readonly IN[])[];
  /** Instead of `input`: a source fed from outside (e.g. streamstate/kafka's kafkaPipelineSource). Give exactly one of the two. */
  readonly source?: PipelineSource<IN>;
  /**
   * Instead of the in-process CommittedOutput (RunOptions.output): a sink that commits to an external
   * system (e.g. streamstate/kafka's kafkaSink), with the same pre-commit at the barrier and commit on completion.
   */
  readonly sink?: PipelineSink<OUT>;
  readonly keyBy: (record: IN) => K;
  /** Default msgpack. Strings are much faster with stringSerializer. */
  readonly keySerializer?: Serializer<K>;
  readonly process: ProcessFunction<IN, K, OUT>;
  /** Parallelism of the keyed operator (and by default of the sink). */
  readonly parallelism: number;
  /** Default: the keyed operator's parallelism. */
  readonly sourceParallelism?: number;
  readonly sinkParallelism?: number;
  /** Default 128. Cannot change across a restore. */
  readonly maxParallelism?: number;
  /** Operator ids as recorded in checkpoints. Defaults `source`, `keyed`, `sink`. */
  readonly operatorIds?: { readonly source?: string; readonly keyed?: string; readonly sink?: string };
}

export interface RunOptions<OUT> {
  /** Creates every subtask's keyed and operator state backend. */
  readonly backend: StateBackend;
  /** Where checkpoints go. Default: the backend's own checkpoint storage. */
  readonly checkpointStorage?: CheckpointStorage;
  /**
   * Trigger a checkpoint after every this many source records (and a final one at the end of the
   * input). Give this or `checkpointing`, not both.
   */
  readonly checkpointEvery?: number;
  /**
   * Checkpoints on a schedule instead: the library's CheckpointScheduler with Flink's interval,
   * timeout, maxConcurrent, minPause and tolerableFailures, on a virtual clock that moves one ms
   * per scheduling step (docs/RUNTIME.md, "Scheduling checkpoints"). A final checkpoint still
   * follows the end of the input. A job failed by tolerableFailures restarts like a crash.
   */
  readonly checkpointing?: PipelineCheckpointing;
  /** Seeds the scheduler: which ready channel or source runs next. Default 1. */
  readonly seed?: number;
  /**
   * When to crash: the n-th record processed by the keyed operator (counted over the whole run,
   * replays included; each number fires once), or a predicate over every PipelineEvent.
   */
  readonly crashAt?: number | readonly number[] | CrashPredicate;
  /** Keyed-operator (and default sink) parallelism after the n-th crash (n from 1). Default: unchanged. */
  readonly recoverWithParallelism?: number | ((crash: number) => number);
  readonly recoverWithSourceParallelism?: number | ((crash: number) => number);
  /** Give up (rethrow the crash) after this many crashes. Default 10. */
  readonly maxRestarts?: number;
  /** The external system the sink commits to. Default: a fresh one (returned in the result). */
  readonly output?: CommittedOutput<OUT>;
  /** Called for every event (of `eventTypes`), in order. Must not throw. */
  readonly onEvent?: (event: PipelineEvent) => void;
  /**
   * The event types onEvent hears (default: all). Events of other types are not reported, and the
   * per-record ones ('emit', 'record') not even built: a listener that wants only a few types costs
   * less per record. A crash predicate (crashAt) still sees every event.
   */
  readonly eventTypes?: readonly PipelineEventType[];
  /** Elements a channel buffers before its producer waits (backpressure). Default 64. */
  readonly channelCapacity?: number;
  /**
   * Exactly-once aligned (default), exactly-once unaligned (`unaligned: true`), aligned switching to
   * unaligned after `alignedTimeout` scheduler steps, or at-least-once (docs/RUNTIME.md, "Checkpointing modes").
   */
  readonly checkpointingMode?: CheckpointingModeOptions;
  /**
   * A slow sink: sinks read only on every this many scheduling steps (default 1). Their input
   * channels fill, and backpressure reaches the keyed operator and the sources — the situation
   * unaligned checkpoints are for (bench/unaligned.ts).
   */
  readonly slowSink?: number;
  /** Completed checkpoints the coordinator keeps. Default 1. */
  readonly numRetainedCheckpoints?: number;
  /** Processing-time clock handed to keyed backends (TTL). */
  readonly clock?: () => number;
  /** Start by restoring the job's latest completed checkpoint, if there is one (default false: a fresh start). */
  readonly resume?: boolean;
  /**
   * Start from this savepoint or checkpoint instead: a local path or s3:// URL anywhere (another
   * job's, another backend's, another parallelism's), restored in no-claim mode. A crash before
   * this job's first checkpoint completes restores it again.
   */
  readonly restoreFrom?: string;
  /** The default savepoint location and S3 settings (for s3:// targets and restoreFrom). */
  readonly savepointLocation?: SavepointLocationOptions;
  /** Ordinary savepoints while the job runs on: each when the sources have emitted `afterRecords` records (replays count; each fires once). */
  readonly savepoints?: readonly SavepointRequest[];
  /** Stop (or cancel) the job with a savepoint once the sources have emitted `afterRecords` records (replays count; fires once). */
  readonly stopWithSavepoint?: StopWithSavepointRequest;
}

export interface SavepointRequest {
  readonly afterRecords: number;
  /** The savepoint's directory (local path or s3:// URL, new or empty). Default: a new one in the default savepoint location. */
  readonly target?: string;
  /** Default canonical. */
  readonly format?: 'canonical' | 'native';
}

export interface StopWithSavepointRequest extends SavepointRequest {
  /** `stop` (default: sinks commit what the savepoint covers, then the job finishes) or `cancel` (no commit: the job restored from it commits). */
  readonly mode?: StopMode;
}

export interface RestoreRecord {
  /** The attempt that started from it (1 = after the first crash). */
  readonly attempt: number;
  /** null: no checkpoint had completed, the attempt started from scratch. */
  readonly checkpointId: number | null;
  /** Store-relative pointer (`<jobId>/chk-7`). */
  readonly pointer: string | null;
  /** Where it is: the storage location joined with the pointer. */
  readonly location: string | null;
  readonly parallelism: number;
  readonly sourceParallelism: number;
}

export interface PipelineResult<OUT> {
  readonly jobId: string;
  readonly output: CommittedOutput<OUT>;
  /** Everything the sink committed, in commit order. */
  readonly committed: readonly OUT[];
  readonly checkpointsCompleted: readonly CompletedCheckpointInfo[];
  readonly checkpointsAborted: readonly number[];
  readonly restoredFrom: readonly RestoreRecord[];
  /** Bytes of snapshot data acknowledged by subtasks (inline and file streams; a shared file counts once). */
  readonly bytesWritten: number;
  /** Records processed by the keyed operator, replays after crashes included. */
  readonly recordsProcessed: number;
  /** Records emitted by sources, replays included. */
  readonly recordsEmitted: number;
  readonly crashes: number;
  readonly attempts: number;
  /** Savepoints that completed (requested ones and a stop's), in completion order; pointers as given or absolute. */
  readonly savepoints: readonly CompletedCheckpointInfo[];
  /** Savepoints that failed, and a stop-with-savepoint that failed (STOP_WITH_SAVEPOINT_FAILED; the job ran on). */
  readonly savepointFailures: readonly StreamStateError[];
  /** Set when the job ended by a stop- or cancel-with-savepoint (the rest of the input was not read). */
  readonly stopped: { readonly mode: StopMode; readonly savepoint: CompletedCheckpointInfo } | null;
}
