import { performance } from 'node:perf_hooks';

/** How the asynchronous part of a heap snapshot shares the thread with record processing. */
export interface SnapshotSlicing {
  /**
   * Longest stretch (ms) of snapshot work between two turns of the event loop: bounds the
   * event-loop delay a checkpoint adds. Default 4. `Infinity`: never yield inside the
   * snapshot (what a savepoint taken with the job stopped may want).
   */
  readonly maxSliceMs?: number;
  /**
   * Share of the thread the snapshot takes while other work is waiting (0 < share <= 1): after
   * the rest of the process had the thread for `t` ms, the snapshot works for
   * `t * share / (1 - share)` ms (at least `minSliceMs`, at most `maxSliceMs`). When nothing else
   * waits, it works in full slices. Default 0.15: records keep about 85% of their idle rate, and
   * a checkpoint under full load takes about 1/0.15 of its idle duration. 1: always full slices.
   */
  readonly cpuShare?: number;
  /** Shortest slice (ms), so a busy process still finishes the snapshot in bounded time. Default 0.5. */
  readonly minSliceMs?: number;
}

export const DEFAULT_MAX_SLICE_MS = 4;
export const DEFAULT_CPU_SHARE = 0.15;
export const DEFAULT_MIN_SLICE_MS = 0.5;
/** A turn of the event loop shorter than this (ms) means nothing else was waiting. */
const IDLE_TURN_MS = 0.25;

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Checks option values; returns a message for the first bad one (null: all fine). */
export function checkSlicing(s: SnapshotSlicing | undefined): string | null {
  if (s === undefined) return null;
  if (s.maxSliceMs !== undefined && !(s.maxSliceMs >= 0))
    return `snapshotSlicing.maxSliceMs must be a number >= 0 (ms); got ${String(s.maxSliceMs)}.`;
  if (s.minSliceMs !== undefined && !(s.minSliceMs >= 0 && Number.isFinite(s.minSliceMs)))
    return `snapshotSlicing.minSliceMs must be a finite number >= 0 (ms); got ${String(s.minSliceMs)}.`;
  if (s.cpuShare !== undefined && !(s.cpuShare > 0 && s.cpuShare <= 1))
    return `snapshotSlicing.cpuShare must be in (0, 1]; got ${String(s.cpuShare)}.`;
  return null;
}

/**
 * Cuts synchronous work into slices: the worker asks `due()` every few items and, when it says
 * so, awaits `yield()`, which gives the event loop a turn and sizes the next slice from how long
 * that turn took (the rest of the process's demand for the thread).
 */
export class TimeSlicer {
  private readonly maxSliceMs: number;
  private readonly minSliceMs: number;
  /** share / (1 - share): slice length per ms of others' work. */
  private readonly ratio: number;
  private sliceEnd: number;
  /** Turns the work gave up (diagnostics and tests). */
  yields = 0;

  constructor(
    opts: SnapshotSlicing = {},
    private readonly now: () => number = () => performance.now(),
  ) {
    this.maxSliceMs = opts.maxSliceMs ?? DEFAULT_MAX_SLICE_MS;
    this.minSliceMs = Math.min(opts.minSliceMs ?? DEFAULT_MIN_SLICE_MS, this.maxSliceMs);
    const share = opts.cpuShare ?? DEFAULT_CPU_SHARE;
    this.ratio = share >= 1 ? Number.POSITIVE_INFINITY : share / (1 - share);
    this.sliceEnd = this.now() + this.maxSliceMs;
  }

  /** The current slice is spent. */
  due(): boolean {
    return this.now() >= this.sliceEnd;
  }

  /** Gives the event loop a turn, then starts the next slice. */
  async yield(): Promise<void> {
    const t = this.now();
    this.yields++;
    await nextTurn();
    this.resumed(this.now() - t);
  }

  /**
   * Work resumes after others had the thread for `otherMs` (an explicit yield, or an await that
   * turned the event loop). A short turn continues the current slice.
   */
  resumed(otherMs: number): void {
    if (otherMs < IDLE_TURN_MS) {
      if (this.due()) this.sliceEnd = this.now() + this.maxSliceMs;
      return;
    }
    const budget = Math.min(this.maxSliceMs, Math.max(this.minSliceMs, otherMs * this.ratio));
    this.sliceEnd = this.now() + budget;
  }
}
