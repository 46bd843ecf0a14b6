import { StreamStateError } from '../errors.js';
import { systemClock, type SchedulerClock } from './scheduler-clock.js';

/** The scheduler's options (docs/RUNTIME.md, "Scheduling checkpoints": Flink's names and defaults). */
export interface CheckpointSchedulerOptions {
  /** ms between periodic checkpoints (execution.checkpointing.interval). Unset: none; trigger with requestCheckpoint(). */
  readonly interval?: number;
  /** ms before the first periodic checkpoint. Default `interval` (Flink picks a random delay in [minPause, interval]). */
  readonly initialDelay?: number;
  /** ms a checkpoint may stay pending before it is aborted with reason TIMEOUT (execution.checkpointing.timeout). Default 10 minutes. */
  readonly timeout?: number;
  /** Checkpoints pending at once (execution.checkpointing.max-concurrent-checkpoints). Default 1. */
  readonly maxConcurrent?: number;
  /** ms from the end of the last completed checkpoint to the start of the next periodic one (execution.checkpointing.min-pause). Default 0. */
  readonly minPause?: number;
  /** Consecutive counted failures tolerated; one more fails the job (execution.checkpointing.tolerable-failed-checkpoints). Default 0. */
  readonly tolerableFailures?: number;
  /** Time and timers. Default systemClock; give the coordinator the same time (`clock: () => clock.now()`). */
  readonly clock?: SchedulerClock;
}

export interface ResolvedSchedulerOptions {
  readonly interval: number | undefined;
  readonly initialDelay: number | undefined;
  readonly timeout: number;
  readonly maxConcurrent: number;
  readonly minPause: number;
  readonly tolerableFailures: number;
  readonly clock: SchedulerClock;
}

export const SCHEDULER_DEFAULTS = {
  timeout: 10 * 60 * 1000,
  maxConcurrent: 1,
  minPause: 0,
  tolerableFailures: 0,
} as const;

/** An option of the checkpoint scheduler is out of range, not an integer, or inconsistent with another. `option` names it. */
export class InvalidCheckpointOptionError extends StreamStateError {
  constructor(
    readonly option: string,
    message: string,
  ) {
    super('INVALID_CHECKPOINT_OPTION', message);
  }
}

/** Checks every option (all problems are reported one at a time, the first found) and fills in the defaults. */
export function resolveSchedulerOptions(o: CheckpointSchedulerOptions): ResolvedSchedulerOptions {
  const int = (option: keyof CheckpointSchedulerOptions, value: unknown, min: number, fix: string): void => {
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min) {
      throw new InvalidCheckpointOptionError(
        option,
        `checkpoint option ${option} is ${describe(value)}; it must be an integer of at least ${min}${option === 'tolerableFailures' || option === 'maxConcurrent' ? '' : ' ms'}. ${fix}`,
      );
    }
  };
  if (o.interval !== undefined)
    int('interval', o.interval, 1, 'Leave interval unset to trigger checkpoints only with requestCheckpoint().');
  if (o.initialDelay !== undefined) {
    if (o.interval === undefined)
      throw new InvalidCheckpointOptionError(
        'initialDelay',
        'checkpoint option initialDelay is set but interval is not; set interval too, or drop initialDelay.',
      );
    int('initialDelay', o.initialDelay, 0, 'Use 0 to take the first checkpoint at start().');
  }
  const timeout = o.timeout ?? SCHEDULER_DEFAULTS.timeout;
  int('timeout', timeout, 1, `Leave it unset for Flink's default of 10 minutes.`);
  const maxConcurrent = o.maxConcurrent ?? SCHEDULER_DEFAULTS.maxConcurrent;
  int('maxConcurrent', maxConcurrent, 1, 'Use 1 (the default) for one checkpoint at a time.');
  const minPause = o.minPause ?? SCHEDULER_DEFAULTS.minPause;
  int('minPause', minPause, 0, 'Use 0 (the default) for no pause.');
  const tolerableFailures = o.tolerableFailures ?? SCHEDULER_DEFAULTS.tolerableFailures;
  int('tolerableFailures', tolerableFailures, 0, 'Use 0 (the default) to fail the job at the first counted failure.');
  const clock = o.clock ?? systemClock;
  if (typeof clock.now !== 'function' || typeof clock.setTimer !== 'function') {
    throw new InvalidCheckpointOptionError(
      'clock',
      'checkpoint option clock must have now() and setTimer(delayMs, fn); use systemClock or a ManualClock.',
    );
  }
  return {
    interval: o.interval,
    initialDelay: o.initialDelay,
    timeout,
    maxConcurrent,
    minPause,
    tolerableFailures,
    clock,
  };
}

function describe(v: unknown): string {
  return typeof v === 'number' ? String(v) : `${typeof v} ${JSON.stringify(v) ?? String(v)}`;
}
