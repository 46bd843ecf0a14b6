import type { OperatorStateBackend } from '../backend/contract.js';
import type { InputGate } from './channels.js';
import { SubtaskBase } from './tasks.js';

/**
 * A sink the pipeline runner writes to instead of its in-process CommittedOutput: an external system
 * (a Kafka topic, streamstate/kafka's `kafkaSink`) with the same two-phase-commit contract —
 * output is staged per epoch, pre-committed into operator state at the barrier, committed when the
 * checkpoint completes, and committed again from restored state after a crash.
 */
export interface PipelineSink<T> {
  createSubtask(context: PipelineSinkSubtaskContext<T>): Promise<ExternalSinkSubtask<T>>;
}

export interface PipelineSinkSubtaskContext<T> {
  readonly jobId: string;
  /** 0 = the first run, n = after the n-th crash. */
  readonly attempt: number;
  readonly operatorId: string;
  readonly subtaskIndex: number;
  /** The sink's parallelism in this attempt. */
  readonly parallelism: number;
  /** Whether the attempt restores a checkpoint (pre-committed transactions are then in operator state). */
  readonly restoring: boolean;
  readonly operatorBackend: OperatorStateBackend;
  /** The subtask's input; the runner reads it and calls write() per record. */
  readonly gate: InputGate<T>;
}

/**
 * A sink subtask that commits to an external system, asynchronously. The runner awaits
 * commitRestored() before the attempt runs and commitUpTo() when a checkpoint completes; a rejection
 * fails the attempt (the pre-committed transactions stay in the checkpoint, so the restored attempt
 * commits them again — which is why commits must be idempotent or say what they duplicate).
 */
export abstract class ExternalSinkSubtask<T> extends SubtaskBase {
  constructor(
    operatorId: string,
    subtaskIndex: number,
    operatorBackend: OperatorStateBackend,
    readonly gate: InputGate<T>,
  ) {
    super(operatorId, subtaskIndex, operatorBackend, null);
  }

  abstract write(record: T): void;

  /** Commits the pre-committed transactions found in restored state (their checkpoint completed). */
  abstract commitRestored(): Promise<void>;

  /** Commits every pre-committed transaction of checkpoint `checkpointId` or earlier. */
  abstract commitUpTo(checkpointId: number): Promise<void>;
}
