import { SnapshotError } from '../errors.js';
import { countsAgainstTolerableFailures, type CheckpointFailureReason } from './acknowledgement.js';

/** The job must fail: more consecutive checkpoints failed than `tolerableFailures` allows. */
export class TolerableFailuresExceededError extends SnapshotError {
  constructor(
    readonly jobId: string,
    readonly consecutiveFailures: number,
    readonly tolerableFailures: number,
    readonly lastCheckpointId: number,
    readonly lastReason: CheckpointFailureReason,
    lastMessage: string,
  ) {
    super(
      'TOLERABLE_FAILURES_EXCEEDED',
      `job ${jobId}: ${consecutiveFailures} consecutive checkpoints failed, more than tolerableFailures = ${tolerableFailures}; the job must fail ` +
        `and restart from its latest completed checkpoint. The last one, ${lastCheckpointId}, failed with ${lastReason}: ${lastMessage} ` +
        'Fix the cause (see the failure reasons in the checkpoint statistics), or raise tolerableFailures.',
    );
  }
}

/**
 * Flink's CheckpointFailureManager: counts consecutive failed checkpoints whose reason counts
 * (countsAgainstTolerableFailures) and whose id is newer than the last completed one; a completion
 * resets the count. Savepoints are not counted.
 */
export class CheckpointFailurePolicy {
  private consecutive = 0;
  private lastCompletedId = -1;

  constructor(
    private readonly jobId: string,
    readonly tolerableFailures: number,
  ) {}

  get consecutiveFailures(): number {
    return this.consecutive;
  }

  completed(checkpointId: number): void {
    this.consecutive = 0;
    this.lastCompletedId = Math.max(this.lastCompletedId, checkpointId);
  }

  /** Records a failure; returns the error to fail the job with once the count exceeds the tolerance (the count then restarts). */
  failed(
    checkpointId: number,
    reason: CheckpointFailureReason,
    message: string,
  ): TolerableFailuresExceededError | null {
    if (!countsAgainstTolerableFailures(reason) || checkpointId <= this.lastCompletedId) return null;
    this.consecutive++;
    if (this.consecutive <= this.tolerableFailures) return null;
    const err = new TolerableFailuresExceededError(
      this.jobId,
      this.consecutive,
      this.tolerableFailures,
      checkpointId,
      reason,
      message,
    );
    this.consecutive = 0;
    return err;
  }
}
