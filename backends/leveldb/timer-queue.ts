import { keyOutOfRange } from '../../src/backend/keyed-rules.js';
import { StateAccessError, StreamStateError } from '../../src/errors.js';
import { keyGroupForBytes, type KeyGroupRange } from '../../src/keygroups/key-groups.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import type { Timer, TimerQueue } from '../../src/state/types.js';

/**
 * Timers of the LevelDB backend live on the heap (a binary heap with a Map for set semantics) and
 * are written into the snapshot's meta stream (docs/FORMAT.md, "LevelDB native snapshot"). Timer
 * counts are small next to keyed state, and peek/poll must be synchronous, which LevelDB
 * iteration is not.
 */

/** A timer in the form snapshots store it. */
export interface RawTimer {
  readonly timestamp: number;
  readonly keyGroup: number;
  readonly key: Buffer;
  readonly namespace: Buffer;
}

interface Entry<K, N> extends RawTimer {
  readonly timer: Timer<K, N>;
  readonly id: string;
}

function compareBytes(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b);
}

function less(a: RawTimer, b: RawTimer): boolean {
  if (a.timestamp !== b.timestamp) return a.timestamp < b.timestamp;
  const c = compareBytes(a.key, b.key);
  if (c !== 0) return c < 0;
  return compareBytes(a.namespace, b.namespace) < 0;
}

function idOf(timestamp: number, key: Buffer, namespace: Buffer): string {
  return `${timestamp}|${key.length}|${key.toString('latin1')}${namespace.toString('latin1')}`;
}

export class HeapTimerQueue<K, N> implements TimerQueue<K, N> {
  private readonly heap: Entry<K, N>[] = [];
  private readonly byId = new Map<string, number>();

  constructor(
    readonly name: string,
    private readonly keySerializer: Serializer<K>,
    readonly namespaceSerializer: Serializer<N>,
    private readonly maxParallelism: number,
    private readonly range: KeyGroupRange,
    /** Throws BACKEND_CLOSED once the backend is closed (every public method calls it). */
    private readonly checkOpen: () => void = () => undefined,
  ) {}

  get size(): number {
    this.checkOpen();
    return this.heap.length;
  }

  isEmpty(): boolean {
    this.checkOpen();
    return this.heap.length === 0;
  }

  private entryOf(timer: Timer<K, N>): { id: string; key: Buffer; namespace: Buffer } {
    this.checkOpen();
    if (
      timer === null ||
      timer === undefined ||
      timer.key === null ||
      timer.key === undefined ||
      timer.namespace === null ||
      timer.namespace === undefined
    ) {
      throw new StateAccessError(
        'NULL_NOT_ALLOWED',
        `timer queue "${this.name}": a timer needs a non-null key and namespace.`,
      );
    }
    if (typeof timer.timestamp !== 'number' || Number.isNaN(timer.timestamp)) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `timer queue "${this.name}": timestamp must be a number, got ${String(timer.timestamp)}.`,
      );
    }
    const key = Buffer.from(this.keySerializer.serialize(timer.key));
    const namespace = Buffer.from(this.namespaceSerializer.serialize(timer.namespace));
    return { id: idOf(timer.timestamp, key, namespace), key, namespace };
  }

  add(timer: Timer<K, N>): boolean {
    const { id, key, namespace } = this.entryOf(timer);
    if (this.byId.has(id)) return false;
    const keyGroup = keyGroupForBytes(key, this.maxParallelism);
    if (!this.range.contains(keyGroup)) {
      throw keyOutOfRange(timer.key, keyGroup, this.range, `timer queue "${this.name}"`);
    }
    const before = this.heap[0];
    this.push({
      timestamp: timer.timestamp,
      keyGroup,
      key,
      namespace,
      id,
      timer: { timestamp: timer.timestamp, key: timer.key, namespace: timer.namespace },
    });
    return this.heap[0] !== before;
  }

  /** Adds a restored timer (already known to be in range). */
  addRaw(raw: RawTimer): void {
    const id = idOf(raw.timestamp, raw.key, raw.namespace);
    if (this.byId.has(id)) return;
    const timer = {
      timestamp: raw.timestamp,
      key: this.keySerializer.deserialize(raw.key),
      namespace: this.namespaceSerializer.deserialize(raw.namespace),
    };
    this.push({ ...raw, id, timer });
  }

  remove(timer: Timer<K, N>): boolean {
    const { id } = this.entryOf(timer);
    const i = this.byId.get(id);
    if (i === undefined) return false;
    this.removeAt(i);
    return i === 0;
  }

  contains(timer: Timer<K, N>): boolean {
    return this.byId.has(this.entryOf(timer).id);
  }

  peek(): Timer<K, N> | null {
    this.checkOpen();
    return this.heap.length === 0 ? null : this.heap[0].timer;
  }

  poll(): Timer<K, N> | null {
    this.checkOpen();
    if (this.heap.length === 0) return null;
    const top = this.heap[0];
    this.removeAt(0);
    return top.timer;
  }

  pollUntil(time: number): Timer<K, N>[] {
    this.checkOpen();
    const out: Timer<K, N>[] = [];
    while (this.heap.length > 0 && this.heap[0].timestamp <= time) out.push(this.poll() as Timer<K, N>);
    return out;
  }

  timersInKeyGroup(keyGroup: number): Timer<K, N>[] {
    this.checkOpen();
    return this.heap.filter((e) => e.keyGroup === keyGroup).map((e) => e.timer);
  }

  [Symbol.iterator](): Iterator<Timer<K, N>> {
    this.checkOpen();
    return [...this.heap]
      .sort((a, b) => (less(a, b) ? -1 : less(b, a) ? 1 : 0))
      .map((e) => e.timer)
      [Symbol.iterator]();
  }

  /** Every timer in raw form (snapshots). */
  raw(): RawTimer[] {
    return this.heap.map((e) => ({ timestamp: e.timestamp, keyGroup: e.keyGroup, key: e.key, namespace: e.namespace }));
  }

  // ------------------------------------------------------------ binary heap

  private push(e: Entry<K, N>): void {
    this.heap.push(e);
    this.byId.set(e.id, this.heap.length - 1);
    this.siftUp(this.heap.length - 1);
  }

  private removeAt(i: number): void {
    const last = this.heap.pop() as Entry<K, N>;
    const removed = i < this.heap.length ? this.heap[i] : last;
    this.byId.delete(removed.id);
    if (i < this.heap.length) {
      this.heap[i] = last;
      this.byId.set(last.id, i);
      this.siftDown(i);
      this.siftUp(i);
    }
  }

  private swap(i: number, j: number): void {
    const a = this.heap[i];
    const b = this.heap[j];
    this.heap[i] = b;
    this.heap[j] = a;
    this.byId.set(b.id, i);
    this.byId.set(a.id, j);
  }

  private siftUp(i: number): void {
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!less(this.heap[i], this.heap[p])) return;
      this.swap(i, p);
      i = p;
    }
  }

  private siftDown(i: number): void {
    const n = this.heap.length;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && less(this.heap[l], this.heap[m])) m = l;
      if (r < n && less(this.heap[r], this.heap[m])) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }
}
