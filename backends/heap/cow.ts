/**
 * Copy-on-write for asynchronous snapshots, by undo log. Taking a snapshot copies nothing: it
 * registers a SnapshotRun with every table it covers and bumps the table's per-key-group
 * `pending` counter. While a key group is pending, the first write to a slot stores the slot's
 * current value (or ABSENT) in each pending run's undo map; containers (arrays, Maps, mutable
 * objects) are copied before being mutated in place, so the recorded object stays frozen. The
 * snapshot writer reads live entries overlaid by the undo entries, one key group at a time, in
 * bounded steps (snapshot-entries.ts), then marks it done and drops that key group's undo.
 */

/** Marks a slot that did not exist when the snapshot was taken. */
export const ABSENT: unique symbol = Symbol('absent');
export type Undo<V> = V | typeof ABSENT;

/** Two-level storage of one key group: outer id → inner id → value. */
export type Slot<V> = Map<unknown, Map<unknown, V>>;

export class SnapshotRun {
  /** 1 once the key group (index in the backend's range) has been written. */
  readonly done: Uint8Array;
  cancelled = false;
  private released = false;
  private readonly frames: CowFrame<unknown>[] = [];

  constructor(readonly rangeSize: number) {
    this.done = new Uint8Array(rangeSize);
  }

  /** Starts recording undo for `table` (the synchronous part of a snapshot). */
  cover<V>(table: CowTable<V>): CowFrame<V> {
    const frame: CowFrame<V> = { run: this, table, undo: new Array(this.rangeSize), collecting: -1, touched: [] };
    table.attach(frame);
    this.frames.push(frame as CowFrame<unknown>);
    return frame;
  }

  /** Key group `i` is written: its undo is no longer needed. */
  markDone(i: number): void {
    if (this.released || this.done[i] === 1) return;
    this.done[i] = 1;
    for (const f of this.frames) {
      f.undo[i] = undefined;
      f.table.pending[i]--;
      f.table.forgetLastPreserved();
    }
  }

  /** Stops recording and frees the undo maps (success, failure or cancellation). Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    for (const f of this.frames) f.table.detach(f);
    this.frames.length = 0;
  }
}

export interface CowFrame<V> {
  readonly run: SnapshotRun;
  readonly table: CowTable<V>;
  /** Per key group: outer id → inner id → value at snapshot time. */
  readonly undo: (Map<unknown, Map<unknown, Undo<V>>> | undefined)[];
  /** Key group whose entries the snapshot is walking (snapshot-entries.ts), or -1. */
  collecting: number;
  /** Slots written in key group `collecting` during the walk: flat pairs outer id, inner id. */
  readonly touched: unknown[];
}

/** A key-group-partitioned two-level map whose slots can be frozen for in-flight snapshots. */
export class CowTable<V> {
  /** Index = key group - range start. */
  readonly slots: (Slot<V> | undefined)[];
  /** Per key group: number of covering snapshots that have not written it yet. */
  readonly pending: Int32Array;
  private frames: CowFrame<V>[] = [];
  /**
   * The slot the last preserve() call left recorded in every pending snapshot (key group -1:
   * none). A read-and-update of one key preserves the same slot twice in a row; the second
   * call would only find the undo record again (three Map lookups per record of a pending key
   * group), so it stops at this comparison. Forgotten whenever the bookkeeping preserve()
   * reads changes: a frame attached or detached, a key group done, a walk started or ended.
   */
  private lastI = -1;
  private lastA: unknown;
  private lastB: unknown;

  constructor(readonly rangeSize: number) {
    this.slots = new Array(rangeSize);
    this.pending = new Int32Array(rangeSize);
  }

  attach(frame: CowFrame<V>): void {
    this.frames.push(frame);
    for (let i = 0; i < this.rangeSize; i++) this.pending[i]++;
    this.forgetLastPreserved();
  }

  detach(frame: CowFrame<V>): void {
    const at = this.frames.indexOf(frame);
    if (at < 0) return;
    this.frames.splice(at, 1);
    this.forgetLastPreserved();
    for (let i = 0; i < this.rangeSize; i++) {
      if (frame.run.done[i] === 0) {
        this.pending[i]--;
        frame.undo[i] = undefined;
      }
    }
  }

  get(i: number, a: unknown, b: unknown): V | undefined {
    return this.slots[i]?.get(a)?.get(b);
  }

  /** Stores a value (recording the old one for pending snapshots first). */
  set(i: number, a: unknown, b: unknown, value: V): void {
    if (this.pending[i] !== 0) this.preserve(i, a, b);
    this.innerForWrite(i, a).set(b, value);
  }

  /** Removes a slot; false when it was absent. Empty inner maps are dropped. */
  delete(i: number, a: unknown, b: unknown): boolean {
    const slot = this.slots[i];
    const inner = slot?.get(a);
    if (inner === undefined || !inner.has(b)) return false;
    if (this.pending[i] !== 0) this.preserve(i, a, b);
    inner.delete(b);
    if (inner.size === 0) slot!.delete(a);
    return true;
  }

  /**
   * The stored value, safe to mutate in place: when a pending snapshot just recorded it, the
   * live slot gets `copy(value)` and the copy is returned.
   */
  mutable(i: number, a: unknown, b: unknown, copy: (v: V) => V): V | undefined {
    const inner = this.slots[i]?.get(a);
    const v = inner?.get(b);
    if (v === undefined || this.pending[i] === 0) return v;
    return this.mutableFound(i, a, b, inner!, v, copy);
  }

  /**
   * mutable() for a caller that already looked the slot up (`v` is `inner.get(b)`, `inner` is
   * the live map of namespace id `a` in key group `i`): spares the lookups on every read of a
   * pending key group.
   */
  mutableFound(i: number, a: unknown, b: unknown, inner: Map<unknown, V>, v: V, copy: (v: V) => V): V {
    if (!this.preserve(i, a, b, v)) return v;
    const c = copy(v);
    inner.set(b, c);
    return c;
  }

  /**
   * Records the slot's current value (`known`, when the caller just looked it up) in every
   * pending snapshot lacking it; true if any recorded.
   */
  preserve(i: number, a: unknown, b: unknown, known?: V): boolean {
    if (b === this.lastB && a === this.lastA && i === this.lastI) return false;
    let recorded = false;
    let current: Undo<V> | undefined = known;
    for (const f of this.frames) {
      if (f.run.done[i] === 1) continue;
      if (f.collecting === i) f.touched.push(a, b);
      let byA = f.undo[i];
      if (byA === undefined) f.undo[i] = byA = new Map();
      let byB = byA.get(a);
      if (byB === undefined) byA.set(a, (byB = new Map()));
      if (byB.has(b)) continue;
      if (current === undefined) {
        const v = this.get(i, a, b);
        current = v === undefined ? ABSENT : v;
      }
      byB.set(b, current);
      recorded = true;
    }
    this.lastI = i;
    this.lastA = a;
    this.lastB = b;
    return recorded;
  }

  /** The next preserve() looks at the undo maps again (see `lastI`). */
  forgetLastPreserved(): void {
    this.lastI = -1;
    this.lastA = this.lastB = undefined;
  }

  /** Calls `fn` for every entry of key group `i` as it was when `frame`'s snapshot was taken. */
  forEachInSnapshot(frame: CowFrame<V>, i: number, fn: (a: unknown, b: unknown, value: V) => void): void {
    const live = this.slots[i];
    const undo = frame.undo[i];
    if (live !== undefined) {
      for (const [a, inner] of live) {
        const undoA = undo?.get(a);
        for (const [b, v] of inner) {
          const u = undoA?.get(b);
          if (u === undefined) fn(a, b, v);
          else if (u !== ABSENT) fn(a, b, u);
        }
      }
    }
    if (undo !== undefined) {
      // Slots that were removed (or moved) since the snapshot.
      for (const [a, undoA] of undo) {
        const liveA = live?.get(a);
        for (const [b, u] of undoA) {
          if (u !== ABSENT && (liveA === undefined || !liveA.has(b))) fn(a, b, u);
        }
      }
    }
  }

  /** Calls `fn` for every live entry of key group `i`. */
  forEachLive(i: number, fn: (a: unknown, b: unknown, value: V) => void): void {
    const live = this.slots[i];
    if (live === undefined) return;
    for (const [a, inner] of live) for (const [b, v] of inner) fn(a, b, v);
  }

  /** Stores a value without undo bookkeeping (restore into a table no snapshot covers yet). */
  load(i: number, a: unknown, b: unknown, value: V): void {
    this.innerForWrite(i, a).set(b, value);
  }

  private innerForWrite(i: number, a: unknown): Map<unknown, V> {
    let slot = this.slots[i];
    if (slot === undefined) this.slots[i] = slot = new Map();
    let inner = slot.get(a);
    if (inner === undefined) slot.set(a, (inner = new Map()));
    return inner;
  }
}
