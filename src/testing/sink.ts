import type { OperatorStateBackend } from '../backend/contract.js';
import type { OperatorListState } from '../state/types.js';
import type { InputGate } from './channels.js';
import type { CommittedOutput } from './committed-output.js';
import { SubtaskBase } from './tasks.js';

/** A transaction pre-committed at a barrier: the output of one epoch of one sink subtask. */
export interface PendingTransaction<T> {
  readonly transactionId: string;
  readonly checkpointId: number;
  readonly records: readonly T[];
}

export const SINK_PENDING_STATE = 'sink-pending-transactions';

/**
 * An exactly-once, two-phase-commit sink subtask. Output is staged per epoch; at a barrier the
 * epoch becomes a pre-committed transaction kept in split-list operator state; when a checkpoint
 * completes, every pending transaction up to it is committed to the CommittedOutput. A restored
 * sink commits the pending transactions it finds in its state (idempotently, by id): the checkpoint
 * they belong to completed, only the commit may have been lost.
 */
export class SinkSubtask<T> extends SubtaskBase {
  private staged: T[] = [];
  private pending: PendingTransaction<T>[] = [];
  private readonly state: OperatorListState<PendingTransaction<T>>;

  constructor(
    operatorId: string,
    subtaskIndex: number,
    operatorBackend: OperatorStateBackend,
    readonly gate: InputGate<T>,
    private readonly output: CommittedOutput<T>,
    private readonly attempt: number,
    private readonly onCommit: (tx: PendingTransaction<T>) => void,
  ) {
    super(operatorId, subtaskIndex, operatorBackend, null);
    this.state = operatorBackend.getListState<PendingTransaction<T>>(SINK_PENDING_STATE);
  }

  /** Commits the pre-committed transactions found in restored state (they belong to the completed checkpoint restored from). */
  commitRestored(): void {
    const restored = this.state.get();
    for (const tx of restored) this.commitOne(tx);
    this.state.clear();
  }

  write(record: T): void {
    this.staged.push(record);
  }

  /** Commits every pending transaction of checkpoint `checkpointId` or earlier (a completed checkpoint subsumes earlier ones). */
  commitUpTo(checkpointId: number): void {
    const keep: PendingTransaction<T>[] = [];
    for (const tx of this.pending) {
      if (tx.checkpointId <= checkpointId) this.commitOne(tx);
      else keep.push(tx);
    }
    this.pending = keep;
  }

  private commitOne(tx: PendingTransaction<T>): void {
    if (this.output.commit(tx.transactionId, tx.checkpointId, tx.records, this.attempt)) this.onCommit(tx);
  }

  protected prepareSnapshot(checkpointId: number): void {
    if (this.staged.length > 0) {
      // Unique across attempts and rescaling: a transaction of an attempt that crashed is never committed under this id.
      const transactionId = `a${this.attempt}-c${checkpointId}-s${this.subtaskIndex}`;
      this.pending.push({ transactionId, checkpointId, records: this.staged });
      this.staged = [];
    }
    // Only the barrier writes state; commits (which may arrive at any time) change the in-memory list only.
    this.state.update(this.pending);
  }
}
