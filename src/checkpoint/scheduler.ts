import { StreamStateError, isStreamStateError } from '../errors.js';
import type { CheckpointFailureReason } from './acknowledgement.js';
import type { CheckpointEvent } from './checkpoint-stats.js';
import type { CheckpointCoordinator, PendingCheckpoint } from './coordinator.js';
import { CheckpointFailurePolicy } from './failure-policy.js';
import type { TimerHandle } from './scheduler-clock.js';
import {
  resolveSchedulerOptions,
  type CheckpointSchedulerOptions,
  type ResolvedSchedulerOptions,
} from './scheduler-options.js';

/** How a runtime declines a trigger: no barriers were injected; the checkpoint is aborted with `reason`. */
export interface TriggerDecline {
  readonly decline: 'TASK_NOT_READY' | 'DECLINED' | 'CANCELLED';
  /** Why, for the statistics and the failure message. */
  readonly message: string;
}

/**
 * What the scheduler needs from the runtime (docs/RUNTIME.md, "The trigger callback").
 */
export interface CheckpointTriggerHandler {
  /**
   * Inject barriers for `pending` at the sources (each task then snapshots with
   * `pending.snapshotOptions(op, i)` and acknowledges through the coordinator). Return a
   * TriggerDecline instead when the job cannot take it now, e.g. a task is not running yet
   * (TASK_NOT_READY, not counted as a failure). A throw aborts it with TRIGGER_FAILED.
   */
  triggerCheckpoint(pending: PendingCheckpoint): void | TriggerDecline | Promise<void | TriggerDecline>;
  /**
   * The job must fail: the failure policy gave up (TolerableFailuresExceededError, code
   * TOLERABLE_FAILURES_EXCEEDED), or triggering failed for good (FENCED, the coordinator was shut
   * down). The scheduler has stopped; the runtime cancels the job and restarts it per its restart strategy.
   */
  failJob(error: StreamStateError): void;
  /** A checkpoint ended without completing (timeout, decline, ...): call notifyCheckpointAborted on the backends. */
  checkpointAborted?(checkpointId: number, reason: CheckpointFailureReason): void;
}

/** What requestCheckpoint() did. */
export type CheckpointRequestOutcome =
  /** A checkpoint was triggered (the handler was called with it). */
  | { readonly status: 'triggered'; readonly checkpointId: number }
  /** maxConcurrent checkpoints are pending: it starts when one ends. */
  | { readonly status: 'queued' }
  /** The scheduler is stopped or its triggering suspended (or the job failed). */
  | { readonly status: 'stopped' };

type RequestKind = 'periodic' | 'user';

/**
 * Periodic checkpoints with Flink's guards (docs/RUNTIME.md, "Scheduling checkpoints"): interval,
 * timeout, maxConcurrent, minPause and the tolerable-failures policy, on top of a
 * CheckpointCoordinator. Time comes from an injectable clock. The scheduler watches the
 * coordinator's events, so checkpoints and savepoints triggered directly on the coordinator
 * count too: each gets the timeout, checkpoints count against maxConcurrent.
 */
export class CheckpointScheduler {
  readonly options: ResolvedSchedulerOptions;
  private readonly policy: CheckpointFailurePolicy;
  /** Checkpoints (not savepoints) triggered and not yet ended. */
  private readonly inFlight = new Set<number>();
  private readonly timeouts = new Map<number, TimerHandle>();
  private readonly tracked = new Set<Promise<unknown>>();
  private periodicTimer: TimerHandle | undefined;
  private pauseTimer: TimerHandle | undefined;
  private nextPeriodic = 0;
  private queued: RequestKind | null = null;
  private lastCompletion: number | undefined;
  private running = false;
  /** suspendTriggering(): timeouts go on, nothing new starts (stop-with-savepoint). */
  private suspended = false;
  private jobFailed = false;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly coordinator: CheckpointCoordinator,
    private readonly handler: CheckpointTriggerHandler,
    options: CheckpointSchedulerOptions = {},
  ) {
    this.options = resolveSchedulerOptions(options);
    this.policy = new CheckpointFailurePolicy(coordinator.statistics.jobId, this.options.tolerableFailures);
    for (const p of coordinator.pendingCheckpoints()) this.watch(p.checkpointId, p.kind);
    this.unsubscribe = coordinator.addCheckpointListener((e) => this.onEvent(e));
  }

  /** Consecutive counted failures since the last completed checkpoint. */
  get consecutiveFailures(): number {
    return this.policy.consecutiveFailures;
  }

  /** Checkpoints this scheduler counts as pending (against maxConcurrent). */
  get pendingCount(): number {
    return this.inFlight.size;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** Starts periodic triggering (when `interval` is set). Call after coordinator.restore(). */
  start(): void {
    if (this.running || this.jobFailed) return;
    this.running = true;
    this.suspended = false;
    for (const p of this.coordinator.pendingCheckpoints())
      if (!this.timeouts.has(p.checkpointId)) this.watch(p.checkpointId, p.kind);
    const { interval, initialDelay, clock } = this.options;
    if (interval === undefined) return;
    this.nextPeriodic = clock.now() + (initialDelay ?? interval);
    this.armPeriodic();
  }

  /**
   * Stops triggering: cancels the timers (timeouts too) and forgets queued requests. Pending
   * checkpoints stay (coordinator.shutdown() aborts them). Idempotent; start() resumes.
   */
  stop(): void {
    this.running = false;
    this.queued = null;
    this.periodicTimer?.cancel();
    this.pauseTimer?.cancel();
    this.periodicTimer = this.pauseTimer = undefined;
    for (const t of this.timeouts.values()) t.cancel();
    this.timeouts.clear();
  }

  /**
   * Starts nothing new until resumeTriggering(): periodic triggers, queued and user requests stop
   * (requests answer `stopped`), while pending checkpoints and savepoints keep their timeouts.
   * Flink stops its checkpoint scheduler this way when a stop-with-savepoint begins, so no
   * checkpoint can follow the final savepoint's barrier (stop-with-savepoint.ts calls it).
   */
  suspendTriggering(): void {
    this.suspended = true;
    this.queued = null;
    this.periodicTimer?.cancel();
    this.pauseTimer?.cancel();
    this.periodicTimer = this.pauseTimer = undefined;
  }

  /** Triggering goes on after suspendTriggering() (the stop's savepoint failed); the next periodic checkpoint is an interval from now. */
  resumeTriggering(): void {
    if (!this.suspended) return;
    this.suspended = false;
    const { interval, clock } = this.options;
    if (!this.running || interval === undefined) return;
    this.nextPeriodic = clock.now() + interval;
    this.armPeriodic();
  }

  /** stop(), and stops listening to the coordinator. */
  close(): void {
    this.stop();
    this.unsubscribe();
  }

  /**
   * A checkpoint now (Flink's user-triggered checkpoint): skips minPause, respects maxConcurrent
   * (then it is queued and starts when a pending one ends).
   */
  requestCheckpoint(): CheckpointRequestOutcome {
    return this.request('user');
  }

  /**
   * A subtask (or the runtime) declines checkpoint `id` after its trigger, e.g. its snapshot
   * failed: it is aborted with `reason` (DECLINED counts against tolerableFailures; CANCELLED
   * and TASK_NOT_READY do not). Resolves once its files are removed.
   */
  async decline(
    checkpointId: number,
    reason: 'DECLINED' | 'TASK_NOT_READY' | 'CANCELLED',
    message: string,
  ): Promise<void> {
    await this.track(this.coordinator.abort(checkpointId, message, reason));
  }

  /** Resolves when every abort, trigger callback and reaction the scheduler started has finished (for tests and orderly shutdown). */
  async settled(): Promise<void> {
    while (this.tracked.size > 0) await Promise.allSettled([...this.tracked]);
  }

  // ------------------------------------------------------------------ triggering

  private armPeriodic(): void {
    const { clock, interval } = this.options;
    if (!this.running || this.suspended || interval === undefined) return;
    this.periodicTimer = clock.setTimer(Math.max(0, this.nextPeriodic - clock.now()), () => {
      this.periodicTimer = undefined;
      // An absolute schedule (Flink's newest timer): next += interval; fires at once when late.
      this.nextPeriodic += interval;
      this.armPeriodic();
      this.request('periodic');
    });
  }

  private request(kind: RequestKind): CheckpointRequestOutcome {
    if (!this.running || this.suspended || this.jobFailed) return { status: 'stopped' };
    const { clock, maxConcurrent, minPause } = this.options;
    if (this.inFlight.size >= maxConcurrent) {
      // Coalesced: one waiting request, a user one taking precedence (it skips minPause).
      this.queued = this.queued === 'user' || kind === 'user' ? 'user' : 'periodic';
      return { status: 'queued' };
    }
    if (kind === 'periodic' && this.lastCompletion !== undefined && clock.now() < this.lastCompletion + minPause) {
      this.queued ??= 'periodic';
      this.armPause(this.lastCompletion + minPause - clock.now());
      return { status: 'queued' };
    }
    return this.trigger();
  }

  private armPause(delay: number): void {
    this.pauseTimer?.cancel();
    this.pauseTimer = this.options.clock.setTimer(delay, () => {
      this.pauseTimer = undefined;
      this.drainQueue();
    });
  }

  private drainQueue(): void {
    const kind = this.queued;
    if (kind === null) return;
    this.queued = null;
    this.request(kind);
  }

  private trigger(): CheckpointRequestOutcome {
    let pending: PendingCheckpoint;
    try {
      pending = this.coordinator.triggerCheckpoint(); // its 'triggered' event arms the timeout
    } catch (err) {
      this.failJob(
        isStreamStateError(err)
          ? err
          : new StreamStateError('INVALID_ARGUMENT', `triggering a checkpoint failed: ${(err as Error).message}`, {
              cause: err,
            }),
      );
      return { status: 'stopped' };
    }
    const id = pending.checkpointId;
    this.track(
      (async () => {
        let answer: void | TriggerDecline;
        try {
          answer = await this.handler.triggerCheckpoint(pending);
        } catch (err) {
          await this.coordinator.abort(
            id,
            `the runtime's trigger callback threw (${(err as Error)?.message ?? String(err)})`,
            'TRIGGER_FAILED',
          );
          return;
        }
        if (answer && typeof answer === 'object' && 'decline' in answer)
          await this.coordinator.abort(id, `the runtime declined it: ${answer.message}`, answer.decline);
      })(),
    );
    return { status: 'triggered', checkpointId: id };
  }

  // ------------------------------------------------------------------ reacting to the coordinator

  private watch(checkpointId: number, kind: 'checkpoint' | 'savepoint'): void {
    if (kind === 'checkpoint') this.inFlight.add(checkpointId);
    if (!this.running) return; // a stopped scheduler times nothing out
    const { timeout, clock } = this.options;
    this.timeouts.set(
      checkpointId,
      clock.setTimer(timeout, () => {
        this.timeouts.delete(checkpointId);
        this.track(
          this.coordinator.abort(checkpointId, `it did not complete within the timeout of ${timeout} ms`, 'TIMEOUT'),
        );
      }),
    );
  }

  private ended(checkpointId: number): void {
    this.inFlight.delete(checkpointId);
    this.timeouts.get(checkpointId)?.cancel();
    this.timeouts.delete(checkpointId);
  }

  private onEvent(e: CheckpointEvent): void {
    if (e.type === 'triggered') {
      this.watch(e.checkpoint.checkpointId, e.checkpoint.kind);
      return;
    }
    if (e.type !== 'completed' && e.type !== 'failed') return;
    const c = e.checkpoint;
    this.ended(c.checkpointId);
    if (e.type === 'completed') {
      // Flink: the pause runs from the end of the last successful checkpoint or savepoint.
      this.lastCompletion = this.options.clock.now();
      if (c.kind === 'checkpoint') this.policy.completed(c.checkpointId);
    } else {
      this.handler.checkpointAborted?.(c.checkpointId, c.failureReason ?? 'ABORTED');
      if (c.kind === 'checkpoint') {
        const error = this.policy.failed(c.checkpointId, c.failureReason ?? 'ABORTED', c.failureMessage ?? '');
        if (error !== null) {
          this.coordinator.statistics.reportJobFailed(error, error.consecutiveFailures);
          this.failJob(error);
          return;
        }
      }
    }
    // Reacting later, not inside the coordinator's completion or abort that emitted the event.
    this.track(Promise.resolve().then(() => this.drainQueue()));
  }

  private failJob(error: StreamStateError): void {
    if (this.jobFailed) return;
    this.jobFailed = true;
    this.stop();
    this.handler.failJob(error);
  }

  private track<T>(p: Promise<T>): Promise<T> {
    const guarded = p.finally(() => this.tracked.delete(guarded));
    guarded.catch(() => undefined);
    this.tracked.add(guarded);
    return guarded;
  }
}
