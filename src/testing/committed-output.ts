import { StreamStateError } from '../errors.js';

/** One committed transaction of the exactly-once sink. */
export interface CommittedTransaction {
  readonly transactionId: string;
  /** The checkpoint whose completion committed it. */
  readonly checkpointId: number;
  /** Which attempt (0 = first run, n = after the n-th crash) committed it. */
  readonly committedInAttempt: number;
  readonly recordCount: number;
}

/**
 * The external system the sink commits to (think: a transactional database or topic). It outlives
 * crashes of the pipeline, and commit is idempotent by transaction id — which is what makes
 * re-committing a restored, pre-committed transaction safe.
 */
export class CommittedOutput<T> {
  /**
   * Each committed transaction's records, one chunk per commit (a copy: the caller keeps its array):
   * pushing record by record into one growing array was about 8% of the runtime's time per record
   * (in-memory input profile, 2026-12-06); a chunk copy is one memcpy.
   */
  private readonly chunks: (readonly T[])[] = [];
  /** records() flattened, until the next commit. */
  private flat: T[] | null = [];
  private readonly log: CommittedTransaction[] = [];
  private readonly ids = new Set<string>();

  /** Commits `records` under `transactionId`. Returns false (and changes nothing) when that id was committed before. */
  commit(transactionId: string, checkpointId: number, records: readonly T[], attempt: number): boolean {
    if (typeof transactionId !== 'string' || transactionId.length === 0) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        'a transaction id must be a non-empty string; the sink derives it from attempt, checkpoint and subtask.',
      );
    }
    if (this.ids.has(transactionId)) return false;
    this.ids.add(transactionId);
    if (records.length > 0) {
      this.chunks.push(records.slice());
      this.flat = null;
    }
    this.log.push({ transactionId, checkpointId, committedInAttempt: attempt, recordCount: records.length });
    return true;
  }

  isCommitted(transactionId: string): boolean {
    return this.ids.has(transactionId);
  }

  /** Every committed record, in commit order. */
  records(): readonly T[] {
    if (this.flat === null) this.flat = this.chunks.flat() as T[];
    return this.flat;
  }

  /** Every committed transaction, in commit order. */
  transactions(): readonly CommittedTransaction[] {
    return this.log;
  }
}
