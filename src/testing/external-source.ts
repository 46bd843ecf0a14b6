import type { OperatorStateBackend } from '../backend/contract.js';
import type { RecordOrigin } from './channels.js';
import { SubtaskBase } from './tasks.js';

/**
 * A source the pipeline runner reads instead of `job.input`: records arrive from outside (a Kafka
 * topic, streamstate/kafka's `kafkaPipelineSource`), asynchronously. One PipelineSource serves every
 * attempt of a run; each attempt opens it once, then creates its source subtasks.
 */
export interface PipelineSource<T> {
  /**
   * Called once per attempt, before any subtask is created: the place to agree on what the subtasks
   * share (e.g. the partitions of the topics, fetched once, so that every subtask divides the same set).
   */
  openAttempt(context: PipelineSourceAttempt): Promise<void>;
  createSubtask(context: PipelineSourceSubtaskContext): Promise<ExternalSourceSubtask<T>>;
}

export interface PipelineSourceAttempt {
  readonly jobId: string;
  /** 0 = the first run, n = after the n-th crash. */
  readonly attempt: number;
  readonly parallelism: number;
  /** Whether the attempt restores a checkpoint (subtasks then read their splits from operator state). */
  readonly restoring: boolean;
}

export interface PipelineSourceSubtaskContext extends PipelineSourceAttempt {
  readonly operatorId: string;
  readonly subtaskIndex: number;
  /** The subtask's operator state backend, restored when `restoring`. */
  readonly operatorBackend: OperatorStateBackend;
}

/**
 * A source subtask fed from outside. The runner calls next() only while `exhausted` is false; when
 * nothing in the pipeline can move, it awaits waitForInput() of every subtask that may still get
 * records, so an empty buffer is not mistaken for the end of the input.
 */
export abstract class ExternalSourceSubtask<T> extends SubtaskBase {
  /** Barriers to inject before the next record, oldest first (the runner fills this). */
  readonly pendingBarriers: number[] = [];

  constructor(operatorId: string, subtaskIndex: number, operatorBackend: OperatorStateBackend) {
    super(operatorId, subtaskIndex, operatorBackend, null);
  }

  /** True when no record can be taken right now (none buffered, or the input ended). */
  abstract get exhausted(): boolean;

  /** The next buffered record, or null. */
  abstract next(): { value: T; origin: RecordOrigin } | null;

  /**
   * null when the input has ended for good (nothing buffered, nothing more will come); otherwise a
   * promise that settles when a record is buffered or the input ended. Rejects when reading failed.
   */
  abstract waitForInput(): Promise<void> | null;
}
