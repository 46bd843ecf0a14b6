import type { KeyedStateMetaInfo } from '../../src/backend/handles.js';
import { StateAccessError, StreamStateError } from '../../src/errors.js';
import { timerEntries, type RawSection, type SectionWriter } from '../../src/format/key-groups-stream.js';
import { snapshotOf, type Serializer } from '../../src/serializers/serializer.js';
import type { Timer, TimerQueue } from '../../src/state/types.js';
import { CowTable, type CowFrame } from './cow.js';
import { IdCodec } from './ids.js';

/** A stored timer. `timer` is the plain object handed out. */
export interface TimerEntry<K, N> {
  readonly timestamp: number;
  readonly timer: Timer<K, N>;
  readonly keyId: unknown;
  readonly nsId: unknown;
  readonly kgIdx: number;
  /** Position in the binary heap, -1 when not in it. */
  heapIndex: number;
  /** Lazily computed byte-order sort keys for timestamp ties. */
  keySort?: string;
  nsSort?: string;
}

/** Resolves a key to its key-group index and id (throws KEY_OUT_OF_RANGE). */
export type KeyLocator<K> = (key: K) => { readonly kgIdx: number; readonly keyId: unknown };

/**
 * A timer queue: per key group, key id → "timestamp:namespace id" → entry (set semantics and
 * timersInKeyGroup, snapshotted with the same copy-on-write undo log as keyed state), plus an
 * indexed binary heap over all entries for ordering (O(log n) add, remove and poll).
 */
export class HeapTimerQueue<K, N> extends CowTable<TimerEntry<K, N>> implements TimerQueue<K, N> {
  private readonly heap: TimerEntry<K, N>[] = [];
  nsCodec: IdCodec<N>;

  constructor(
    rangeSize: number,
    readonly name: string,
    readonly keyCodec: IdCodec<K>,
    namespaceSerializer: Serializer<N>,
    private readonly locate: KeyLocator<K>,
    private readonly rangeStart: number,
    /** Throws BACKEND_CLOSED once the keyed backend is closed (every public method calls it). */
    private readonly checkOpen: () => void = () => undefined,
  ) {
    super(rangeSize);
    this.nsCodec = new IdCodec(namespaceSerializer);
  }

  get size(): number {
    this.checkOpen();
    return this.heap.length;
  }

  isEmpty(): boolean {
    this.checkOpen();
    return this.heap.length === 0;
  }

  add(timer: Timer<K, N>): boolean {
    this.checkOpen();
    const { kgIdx, keyId, nsId, sub } = this.identify(timer);
    if (this.get(kgIdx, keyId, sub) !== undefined) return false;
    const entry: TimerEntry<K, N> = {
      timestamp: timer.timestamp,
      timer: { timestamp: timer.timestamp, key: timer.key, namespace: timer.namespace },
      keyId,
      nsId,
      kgIdx,
      heapIndex: -1,
    };
    this.set(kgIdx, keyId, sub, entry);
    this.heapPush(entry);
    return this.heap[0] === entry;
  }

  remove(timer: Timer<K, N>): boolean {
    this.checkOpen();
    const { kgIdx, keyId, sub } = this.identify(timer);
    const entry = this.get(kgIdx, keyId, sub);
    if (entry === undefined) return false;
    const wasHead = this.heap[0] === entry;
    this.unlink(entry, sub);
    return wasHead;
  }

  contains(timer: Timer<K, N>): boolean {
    this.checkOpen();
    const { kgIdx, keyId, sub } = this.identify(timer);
    return this.get(kgIdx, keyId, sub) !== undefined;
  }

  peek(): Timer<K, N> | null {
    this.checkOpen();
    return this.heap.length === 0 ? null : this.heap[0].timer;
  }

  poll(): Timer<K, N> | null {
    this.checkOpen();
    if (this.heap.length === 0) return null;
    const head = this.heap[0];
    this.unlink(head, subId(head.timestamp, head.nsId));
    return head.timer;
  }

  pollUntil(time: number): Timer<K, N>[] {
    this.checkOpen();
    const out: Timer<K, N>[] = [];
    while (this.heap.length > 0 && this.heap[0].timestamp <= time) out.push(this.poll()!);
    return out;
  }

  timersInKeyGroup(keyGroup: number): Timer<K, N>[] {
    this.checkOpen();
    const out: Timer<K, N>[] = [];
    const i = keyGroup - this.rangeStart;
    if (i < 0 || i >= this.rangeSize) return out;
    this.forEachLive(i, (_a, _b, e) => out.push(e.timer));
    return out;
  }

  /** In queue order. */
  [Symbol.iterator](): Iterator<Timer<K, N>> {
    this.checkOpen();
    return [...this.heap]
      .sort((a, b) => this.compare(a, b))
      .map((e) => e.timer)
      [Symbol.iterator]();
  }

  metaInfo(stateId: number): KeyedStateMetaInfo {
    return {
      name: this.name,
      kind: 'timers',
      stateId,
      namespaceSerializer: snapshotOf(this.nsCodec.serializer as Serializer<unknown>),
      ttl: false,
    };
  }

  countEntries(): number {
    return this.heap.length;
  }

  writeSection(frame: CowFrame<TimerEntry<K, N>>, i: number, out: SectionWriter): void {
    const w = out.out;
    const keyW = this.keyCodec.write;
    const nsW = this.nsCodec.write;
    let count = 0;
    // Serialized straight into the section's buffer: the bytes of out.timerEntry without the per-timer Buffers.
    this.forEachInSnapshot(frame, i, (keyId, _sub, e) => {
      count++;
      w.f64(e.timestamp);
      keyW(w, keyId);
      nsW(w, e.nsId);
    });
    out.count += count;
  }

  loadSection(section: RawSection, i: number, nsReader: Serializer<N>, what: string): void {
    for (const e of timerEntries(section, what)) {
      const keyId = this.keyCodec.idFromBytes(e.key, this.keyCodec.serializer);
      const namespace = nsReader.deserialize(e.namespace);
      const nsId = this.nsCodec.id(namespace);
      const sub = subId(e.timestamp, nsId);
      if (this.get(i, keyId, sub) !== undefined) continue;
      const timer = { timestamp: e.timestamp, key: this.keyCodec.value(keyId), namespace };
      const entry: TimerEntry<K, N> = { timestamp: e.timestamp, timer, keyId, nsId, kgIdx: i, heapIndex: -1 };
      this.load(i, keyId, sub, entry);
      this.heapPush(entry);
    }
  }

  private identify(timer: Timer<K, N>): { kgIdx: number; keyId: unknown; nsId: unknown; sub: string } {
    if (timer === null || timer === undefined || typeof timer.timestamp !== 'number' || Number.isNaN(timer.timestamp)) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `timer queue "${this.name}": a timer needs a numeric timestamp, got ${JSON.stringify(timer)}`,
      );
    }
    if (timer.key === null || timer.key === undefined || timer.namespace === null || timer.namespace === undefined) {
      throw new StateAccessError(
        'NULL_NOT_ALLOWED',
        `timer queue "${this.name}": a timer needs a key and a namespace (use '' for none).`,
      );
    }
    const { kgIdx, keyId } = this.locate(timer.key);
    const nsId = this.nsCodec.id(timer.namespace);
    return { kgIdx, keyId, nsId, sub: subId(timer.timestamp, nsId) };
  }

  private unlink(entry: TimerEntry<K, N>, sub: string): void {
    this.delete(entry.kgIdx, entry.keyId, sub);
    this.heapRemove(entry);
  }

  // ---------------------------------------------------------------- indexed binary heap

  private compare(a: TimerEntry<K, N>, b: TimerEntry<K, N>): number {
    if (a.timestamp !== b.timestamp) return a.timestamp < b.timestamp ? -1 : 1;
    if (a.keyId !== b.keyId) {
      const ka = (a.keySort ??= this.keyCodec.sortKey(a.keyId));
      const kb = (b.keySort ??= this.keyCodec.sortKey(b.keyId));
      if (ka !== kb) return ka < kb ? -1 : 1;
    }
    if (a.nsId === b.nsId) return 0;
    const na = (a.nsSort ??= this.nsCodec.sortKey(a.nsId));
    const nb = (b.nsSort ??= this.nsCodec.sortKey(b.nsId));
    return na < nb ? -1 : na > nb ? 1 : 0;
  }

  private heapPush(e: TimerEntry<K, N>): void {
    e.heapIndex = this.heap.length;
    this.heap.push(e);
    this.siftUp(e.heapIndex);
  }

  private heapRemove(e: TimerEntry<K, N>): void {
    const at = e.heapIndex;
    if (at < 0) return;
    const last = this.heap.pop()!;
    e.heapIndex = -1;
    if (last === e) return;
    this.heap[at] = last;
    last.heapIndex = at;
    this.siftUp(at);
    this.siftDown(last.heapIndex);
  }

  private siftUp(at: number): void {
    const h = this.heap;
    const e = h[at];
    while (at > 0) {
      const parent = (at - 1) >> 1;
      if (this.compare(h[parent], e) <= 0) break;
      h[at] = h[parent];
      h[at].heapIndex = at;
      at = parent;
    }
    h[at] = e;
    e.heapIndex = at;
  }

  private siftDown(at: number): void {
    const h = this.heap;
    const n = h.length;
    const e = h[at];
    for (;;) {
      const l = 2 * at + 1;
      if (l >= n) break;
      const r = l + 1;
      const child = r < n && this.compare(h[r], h[l]) < 0 ? r : l;
      if (this.compare(h[child], e) >= 0) break;
      h[at] = h[child];
      h[at].heapIndex = at;
      at = child;
    }
    h[at] = e;
    e.heapIndex = at;
  }
}

/** Inner id of a timer under its key: timestamp and namespace id (String() is injective per serializer type). */
function subId(timestamp: number, nsId: unknown): string {
  return `${timestamp}:${typeof nsId === 'string' ? nsId : String(nsId)}`;
}
