/**
 * Time for the checkpoint scheduler: "now" and one-shot timers. Injectable so that tests (and a
 * runtime's own tests) drive every option deterministically with ManualClock.
 */
export interface SchedulerClock {
  /** ms since epoch (or any monotonic origin, if the coordinator's `clock` uses the same one). */
  now(): number;
  /** Calls `fn` once after `delayMs` (0 or more); the returned handle cancels it. */
  setTimer(delayMs: number, fn: () => void): TimerHandle;
}

export interface TimerHandle {
  cancel(): void;
}

/** Real time: Date.now and setTimeout. Timers are unref'd: a scheduler alone does not keep the process alive. */
export const systemClock: SchedulerClock = {
  now: () => Date.now(),
  setTimer(delayMs, fn) {
    const t = setTimeout(fn, delayMs);
    t.unref?.();
    return { cancel: () => clearTimeout(t) };
  },
};

interface ManualTimer {
  readonly due: number;
  readonly seq: number;
  readonly fn: () => void;
  cancelled: boolean;
}

/**
 * A clock that moves only when told (`advance`). Timers fire in due order, each with `now()` set
 * to its due time; a timer set by a firing timer fires in the same advance when it is due by then.
 */
export class ManualClock implements SchedulerClock {
  private time: number;
  private seq = 0;
  private timers: ManualTimer[] = [];

  constructor(start = 0) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  setTimer(delayMs: number, fn: () => void): TimerHandle {
    const timer: ManualTimer = { due: this.time + Math.max(0, delayMs), seq: this.seq++, fn, cancelled: false };
    this.timers.push(timer);
    return { cancel: () => void (timer.cancelled = true) };
  }

  /** Moves time forward by `ms`, firing every timer due until then. */
  advance(ms: number): void {
    const until = this.time + ms;
    for (;;) {
      this.timers = this.timers.filter((t) => !t.cancelled);
      let next: ManualTimer | undefined;
      for (const t of this.timers)
        if (t.due <= until && (next === undefined || t.due < next.due || (t.due === next.due && t.seq < next.seq)))
          next = t;
      if (next === undefined) break;
      next.cancelled = true;
      this.time = Math.max(this.time, next.due);
      next.fn();
    }
    this.time = until;
  }

  /** Timers not yet fired nor cancelled. */
  pendingTimers(): number {
    return this.timers.filter((t) => !t.cancelled).length;
  }
}
