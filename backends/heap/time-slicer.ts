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
   * `s` ms of snapshot work (a slice, plus any step that cannot be cut), the snapshot waits until
   * the rest of the process had the thread for `s * (1 - share) / share` ms. When nothing else
   * waits, it works in full slices. Default 0.1: records keep about 90% of their idle rate, and
   * a checkpoint under full load takes about 1/0.1 of its idle duration (at 1 GB: 92% of idle
   * and 89 s, where 0.15 gave 61-82% and 65-68 s). 1: one turn per slice.
   */
  readonly cpuShare?: number;
  /**
   * Accepted for compatibility (checked, default 0.5): slices now always last `maxSliceMs` and the
   * share is kept by waiting after each slice, so a busy process still finishes the snapshot.
   */
  readonly minSliceMs?: number;
}

export const DEFAULT_MAX_SLICE_MS = 4;
export const DEFAULT_CPU_SHARE = 0.1;
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
 * Cuts synchronous work into slices and keeps its share of the thread at `cpuShare`: the worker
 * asks `due()` every few items and, when it says so, awaits `yield()`. The slicer accounts for
 * all of the snapshot's own time between turns (also steps it cannot cut, such as collecting a
 * key group's entries or checksumming a block), and after a slice of `own` ms gives the event
 * loop turns until others have had `own * (1 - share) / share` ms. A turn shorter than
 * IDLE_TURN_MS means nothing else waits: the debt is dropped and the work goes on in full slices.
 * Awaits inside the work that may turn the event loop (a flush waiting for the store) go between
 * `suspend()` and `resume()`: that time counts as others'.
 */
export class TimeSlicer {
  private readonly sliceMs: number;
  /** (1 - share) / share: others' ms owed per ms of own work. */
  private readonly owedPerMs: number;
  /** Own work (ms) since the last yield, not counting the run in progress. */
  private ownMs = 0;
  /** When the run of own work in progress started. */
  private runStart: number;
  private suspendedAt = 0;
  /** Others' time (ms) still owed before the next slice may start. */
  private debt = 0;
  /** Turns the work gave up (diagnostics and tests). */
  yields = 0;

  constructor(
    opts: SnapshotSlicing = {},
    private readonly now: () => number = () => performance.now(),
  ) {
    this.sliceMs = opts.maxSliceMs ?? DEFAULT_MAX_SLICE_MS;
    const share = opts.cpuShare ?? DEFAULT_CPU_SHARE;
    this.owedPerMs = share >= 1 ? 0 : (1 - share) / share;
    this.runStart = this.now();
  }

  /** The current slice is spent. */
  due(): boolean {
    return this.ownMs + (this.now() - this.runStart) >= this.sliceMs;
  }

  /** Gives the event loop turns until others had their share, then starts the next slice. */
  async yield(): Promise<void> {
    this.ownMs += this.now() - this.runStart;
    this.debt += this.ownMs * this.owedPerMs;
    this.ownMs = 0;
    do {
      const t = this.now();
      this.yields++;
      await nextTurn();
      const other = this.now() - t;
      this.debt = other < IDLE_TURN_MS ? 0 : this.debt - other;
    } while (this.debt > 0);
    this.debt = 0;
    this.runStart = this.now();
  }

  /** Own work stops for an await that may turn the event loop. */
  suspend(): void {
    const t = this.now();
    this.ownMs += t - this.runStart;
    this.suspendedAt = t;
  }

  /** Own work goes on: the time since `suspend()` was others' (it pays off debt). */
  resume(): void {
    const t = this.now();
    this.debt = Math.max(0, this.debt - (t - this.suspendedAt));
    this.runStart = t;
  }
}
