import { ABSENT, type CowFrame, type CowTable, type Undo } from './cow.js';

/** Writes one entry; returns 1 if written, 0 if left out (expired or empty). */
export type EntrySink = (a: unknown, b: unknown, v: unknown) => number;

/** Entries collected between two looks at the clock (collecting costs a few ns an entry). */
const COLLECT_PER_CHECK = 64;
/** Entries written between two looks at the clock. */
const WRITE_PER_CHECK = 8;

// Phases of a SnapshotEntries.
const COLLECT = 0;
const WRITE = 1;
const REMOVED = 2;
const DONE = 3;

/**
 * The entries of key group `i` as the snapshot of `frame` saw it, enumerated in bounded steps
 * while writes go on between them (a time-sliced snapshot). Three phases, each cut by `due()`:
 *
 * 1. Collect: walk the live maps (Map iterators survive writes) and keep a reference to each
 *    visited entry's snapshot value — its undo record if it has one, else the live value (an
 *    entry without undo has not changed since the snapshot). Meanwhile the table notes every
 *    slot written in this key group (`frame.touched`): a touched slot may have been visited
 *    twice (deleted and re-added) or not at all (deleted before the walk reached it).
 * 2. Write: the collected references, skipping a touched slot's second visit.
 * 3. Removed: slots whose undo says they existed at the snapshot but the walk did not visit —
 *    touched and unseen, or (untouched) not live while the walk ran. So the entries of a key
 *    group are the snapshot's, but one deleted before the walk reached it comes after the live
 *    ones: the order within a section is not the unsliced order (no reader depends on it).
 *
 * At the end of phase 1 the undo map is detached (kept here, frozen) and the table starts a
 * fresh one: it records the values as of the end of the walk, which tells phase 3 whether an
 * untouched slot was live during the walk. The collected values stay frozen until the key group
 * is marked done: writers replace values or copy containers before mutating them in place.
 * Before, the whole key group was collected in one synchronous step (~39k entries at 1 GB).
 */
export class SnapshotEntries<V> {
  private phase: number = COLLECT;
  /** Flat triples namespace id, key id, value; `n` used (capacity kept across key groups). */
  private n = 0;
  private at = 0;
  private outer: Iterator<[unknown, Map<unknown, V>]> | undefined;
  private inner: Iterator<[unknown, V]> | undefined;
  private a: unknown;
  /** Touched slots (namespace id → key id → written yet), or null when none was touched. */
  private touched: Map<unknown, Map<unknown, boolean>> | null = null;
  /** The undo of key group `i` as it was when the walk ended. */
  private undo: Map<unknown, Map<unknown, Undo<V>>> | undefined;
  private removedOuter: Iterator<[unknown, Map<unknown, Undo<V>>]> | undefined;
  private removedInner: Iterator<[unknown, Undo<V>]> | undefined;
  private removedA: unknown;

  constructor(
    private readonly table: CowTable<V>,
    private readonly frame: CowFrame<V>,
    private readonly i: number,
    private readonly refs: unknown[],
  ) {
    const live = table.slots[i];
    frame.collecting = i;
    frame.touched.length = 0;
    // Writes from now on must be noted in `touched`, also a repeat of the last preserved slot.
    table.forgetLastPreserved();
    this.outer = live?.entries();
  }

  /** Writes entries through `sink` until all are written (returns true) or `due()` (false). */
  writeSome(sink: EntrySink, due: () => boolean): { readonly done: boolean; readonly count: number } {
    let count = 0;
    if (this.phase === COLLECT && !this.collect(due)) return { done: false, count };
    if (this.phase === WRITE) {
      count += this.writeCollected(sink, due);
      if (this.phase === WRITE) return { done: false, count };
    }
    if (this.phase === REMOVED) count += this.writeRemoved(sink, due);
    return { done: this.phase === DONE, count };
  }

  /** Phase 1; true when the walk is complete. */
  private collect(due: () => boolean): boolean {
    const refs = this.refs;
    const frame = this.frame;
    const i = this.i;
    let n = this.n;
    let sinceCheck = 0;
    // Undo maps may have been created while the walk waited: look them up again on every step.
    let undoA = this.inner === undefined ? undefined : frame.undo[i]?.get(this.a);
    for (;;) {
      if (this.inner === undefined) {
        const next = this.outer?.next();
        if (next === undefined || next.done === true) break;
        this.a = next.value[0];
        this.inner = next.value[1].entries();
        undoA = frame.undo[i]?.get(this.a);
      }
      const a = this.a;
      const inner = this.inner;
      let e = inner.next();
      while (e.done !== true) {
        const b = e.value[0];
        const u = undoA?.get(b);
        if (u === undefined) {
          refs[n++] = a;
          refs[n++] = b;
          refs[n++] = e.value[1];
        } else if (u !== ABSENT) {
          refs[n++] = a;
          refs[n++] = b;
          refs[n++] = u;
        }
        if (++sinceCheck === COLLECT_PER_CHECK) {
          sinceCheck = 0;
          if (due()) {
            this.n = n;
            return false;
          }
        }
        e = inner.next();
      }
      this.inner = undefined;
    }
    this.n = n;
    this.outer = undefined;
    this.endWalk();
    return true;
  }

  private endWalk(): void {
    const frame = this.frame;
    const t = frame.touched;
    if (t.length > 0) {
      const touched = new Map<unknown, Map<unknown, boolean>>();
      for (let j = 0; j < t.length; j += 2) {
        let byB = touched.get(t[j]);
        if (byB === undefined) touched.set(t[j], (byB = new Map()));
        byB.set(t[j + 1], false);
      }
      this.touched = touched;
      t.length = 0;
    }
    frame.collecting = -1;
    this.undo = frame.undo[this.i];
    // Detached: from now on the table records into a fresh map (values as of the end of the walk).
    frame.undo[this.i] = undefined;
    this.table.forgetLastPreserved();
    this.phase = WRITE;
  }

  /** Phase 2; drops each reference once written. */
  private writeCollected(sink: EntrySink, due: () => boolean): number {
    const refs = this.refs;
    const touched = this.touched;
    const end = this.n;
    let at = this.at;
    let count = 0;
    let sinceCheck = 0;
    while (at < end) {
      const a = refs[at];
      const b = refs[at + 1];
      const v = refs[at + 2];
      refs[at] = refs[at + 1] = refs[at + 2] = undefined;
      at += 3;
      const t = touched?.get(a);
      const seen = t?.get(b);
      if (seen === undefined) count += sink(a, b, v);
      else if (!seen) {
        t!.set(b, true);
        count += sink(a, b, v);
      }
      if (++sinceCheck === WRITE_PER_CHECK) {
        sinceCheck = 0;
        if (at < end && due()) break;
      }
    }
    this.at = at;
    if (at === end) {
      this.n = this.at = 0;
      this.removedOuter = this.undo?.entries();
      this.phase = REMOVED;
    }
    return count;
  }

  /** Phase 3. */
  private writeRemoved(sink: EntrySink, due: () => boolean): number {
    const touched = this.touched;
    const table = this.table;
    const frame = this.frame;
    const i = this.i;
    let count = 0;
    let sinceCheck = 0;
    for (;;) {
      if (this.removedInner === undefined) {
        const next = this.removedOuter?.next();
        if (next === undefined || next.done === true) break;
        this.removedA = next.value[0];
        this.removedInner = next.value[1].entries();
      }
      const a = this.removedA;
      const t = touched?.get(a);
      let e = this.removedInner.next();
      while (e.done !== true) {
        const [b, u] = e.value;
        if (u !== ABSENT) {
          const seen = t?.get(b);
          if (seen === undefined ? !liveDuringWalk(table, frame, i, a, b) : !seen) count += sink(a, b, u);
        }
        if (++sinceCheck === WRITE_PER_CHECK) {
          sinceCheck = 0;
          if (due()) return count;
        }
        e = this.removedInner.next();
      }
      this.removedInner = undefined;
    }
    this.removedOuter = undefined;
    this.undo = undefined;
    this.touched = null;
    this.phase = DONE;
    return count;
  }
}

/**
 * Whether an untouched slot was live while the walk ran (it cannot have changed during it): the
 * fresh undo map holds its value as of the end of the walk if it changed since, else it is as live now.
 */
function liveDuringWalk<V>(table: CowTable<V>, frame: CowFrame<V>, i: number, a: unknown, b: unknown): boolean {
  const since = frame.undo[i]?.get(a)?.get(b);
  if (since !== undefined) return since !== ABSENT;
  return table.slots[i]?.get(a)?.has(b) === true;
}
