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
  private inputEnded = false;

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
   * The sources are at the end of their input: no more periodic checkpoints (each would keep the
   * job waiting for the next); pending ones keep their timeouts, the final one is requestFinal().
   */
  endOfInput(): void {
    if (this.inputEnded) return;
    this.inputEnded = true;
    this.scheduler.suspendTriggering();
  }

  /**
   * Nothing can move: when checkpoints are pending, time passes while the runtime waits for
   * their acknowledgements (one virtual ms per real ms of waiting, or less when they arrive
   * sooner), so a checkpoint that never completes times out. Returns whether the caller should
   * look again.
   */
  async waitIdle(acknowledgements: Promise<void> | null): Promise<boolean> {
    if (acknowledgements === null && this.scheduler.pendingCount === 0) return false;
    let timer: NodeJS.Timeout | undefined;
    const ms = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, 1);
    });
    await Promise.race(acknowledgements === null ? [ms] : [ms, acknowledgements]);
    clearTimeout(timer);
    this.clock.advance(1);
    return true;
  }

  /**
   * The final checkpoint at the end of the input: a user request (no minPause). When maxConcurrent
   * checkpoints are pending it is not queued (triggering is suspended): the runner asks again
   * once they have ended.
   */
  requestFinal(): void {
    this.scheduler.resumeTriggering();
    this.scheduler.requestCheckpoint();
    if (this.inputEnded) this.scheduler.suspendTriggering();
  }

  async close(): Promise<void> {
    this.scheduler.close();
    await this.scheduler.settled();
  }
}
