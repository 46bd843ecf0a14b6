import type { CheckpointCoordinator, PendingCheckpoint } from '../checkpoint/coordinator.js';
import { ManualClock } from '../checkpoint/scheduler-clock.js';
import type { CheckpointSchedulerOptions } from '../checkpoint/scheduler-options.js';
import { CheckpointScheduler, type TriggerDecline } from '../checkpoint/scheduler.js';
import type { StreamStateError } from '../errors.js';

/**
 * The reference runtime's checkpoint configuration (RunOptions.checkpointing): the library's
 * CheckpointScheduler with Flink's options, on a virtual clock the runner moves by one ms per
 * scheduling step (a reader's burst) and per event-loop turn while it waits for acknowledgements.
 * Times are therefore in steps, not wall time: deterministic per seed as far as the run itself is.
 */
export interface PipelineCheckpointing {
  /** Virtual ms (steps) between periodic checkpoints. */
  readonly interval: number;
  /** Before the first periodic checkpoint. Default `interval`. */
  readonly initialDelay?: number;
  /** A checkpoint pending this long is aborted with TIMEOUT. Default 10 minutes (600,000 steps). */
  readonly timeout?: number;
  /** Default 1. */
  readonly maxConcurrent?: number;
  /** Default 0. */
  readonly minPause?: number;
  /** Default 0: the first counted failure fails the job (it then restarts from its latest checkpoint, like a crash). */
  readonly tolerableFailures?: number;
  /** The virtual clock; pass one to read the time in a test. Default: a new ManualClock(0) for the run. */
  readonly clock?: ManualClock;
}

/** What the scheduler needs from an attempt. */
export interface ScheduledAttempt {
  /** The attempt has failed or ended: decline new triggers. */
  isDead(): boolean;
  /** Inject `pending`'s barriers at every source (and track it). */
  inject(pending: PendingCheckpoint): void;
  /** The coordinator ended a checkpoint without completing it (a timeout, a declined trigger, shutdown). */
  aborted(checkpointId: number, reason: string): void;
  /** The failure policy gave up: the attempt fails (the runner restarts the job). */
  failJob(error: StreamStateError): void;
}

/** One attempt's scheduler, on the run's clock. */
export class ScheduledCheckpoints {
  readonly scheduler: CheckpointScheduler;

  constructor(
    coordinator: CheckpointCoordinator,
    readonly clock: ManualClock,
    options: PipelineCheckpointing,
    attempt: ScheduledAttempt,
  ) {
    const { clock: _ignored, ...rest } = options;
    const schedulerOptions: CheckpointSchedulerOptions = { ...rest, clock };
    this.scheduler = new CheckpointScheduler(
      coordinator,
      {
        triggerCheckpoint(pending): void | TriggerDecline {
          if (attempt.isDead()) return { decline: 'CANCELLED', message: 'the attempt has ended' };
          attempt.inject(pending);
        },
        failJob: (error) => attempt.failJob(error),
        checkpointAborted: (id, reason) => attempt.aborted(id, reason),
      },
      schedulerOptions,
    );
  }

  start(): void {
    this.scheduler.start();
  }

  /** One scheduling step went by. */
  tick(): void {
    this.clock.advance(1);
  }

  /**
   * Nothing can move: when checkpoints are pending, time passes while the runtime waits (one
   * ms per event-loop turn), so a checkpoint that never completes times out. Returns whether
   * the caller should wait a turn and look again.
   */
  async waitIdle(acknowledgementsUnderWay: boolean): Promise<boolean> {
    if (!acknowledgementsUnderWay && this.scheduler.pendingCount === 0) return false;
    await new Promise<void>((resolve) => setImmediate(resolve));
    this.clock.advance(1);
    return true;
  }

  /** The final checkpoint at the end of the input: a user request (no minPause; queued behind maxConcurrent). */
  requestFinal(): void {
    this.scheduler.requestCheckpoint();
  }

  async close(): Promise<void> {
    this.scheduler.close();
    await this.scheduler.settled();
  }
}
