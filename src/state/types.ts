import type {
  AggregatingStateDescriptor,
  ListStateDescriptor,
  MapStateDescriptor,
  ReducingStateDescriptor,
  ValueStateDescriptor,
} from './descriptors.js';

/**
 * Keyed state handles. Every handle reads and writes the slot of the backend's current key and the
 * handle's current namespace. Point operations are synchronous; iteration is an async iterable
 * (bound to the key and namespace current when it started).
 *
 * Values handed out are the stored objects, not copies: treat them as immutable and write changes
 * back with update()/put(). (The backends copy-on-write around snapshots; in-place mutation of a
 * returned object bypasses that.)
 */
export interface KeyedState<N> {
  /** Switches the namespace (e.g. window) this handle reads and writes. Default: the void namespace ''. */
  setCurrentNamespace(namespace: N): void;
  getCurrentNamespace(): N;
  /** Removes the entry of the current key and namespace. */
  clear(): void;
}

export interface ValueState<T, N = string> extends KeyedState<N> {
  /** The value, or the descriptor's default (a fresh copy), or null. */
  value(): T | null;
  /** update(null) is clear(). */
  update(value: T | null): void;
}

/** States whose contents from several namespaces can be merged (session windows). */
export interface MergingState<N> extends KeyedState<N> {
  /** Merges the sources' contents into `target` and removes the sources. All empty: target stays absent. */
  mergeNamespaces(target: N, sources: readonly N[]): void;
}

export interface ListState<T, N = string> extends MergingState<N> {
  /** The elements in insertion order, or null when the list is absent. Do not mutate the array. */
  get(): readonly T[] | null;
  add(value: T): void;
  addAll(values: readonly T[]): void;
  /** Replaces the list; update([]) clears it. */
  update(values: readonly T[]): void;
}

export interface ReducingState<T, N = string> extends MergingState<N> {
  get(): T | null;
  add(value: T): void;
}

export interface AggregatingState<IN, OUT, N = string> extends MergingState<N> {
  get(): OUT | null;
  add(value: IN): void;
}

export interface MapState<UK, UV, N = string> extends KeyedState<N> {
  /** The value, or null when the user key is absent (use contains() when null is a legal value). */
  get(key: UK): UV | null;
  put(key: UK, value: UV): void;
  putAll(entries: Iterable<readonly [UK, UV]> | ReadonlyMap<UK, UV>): void;
  contains(key: UK): boolean;
  remove(key: UK): void;
  isEmpty(): boolean;
  /** Iteration order is not part of the API. Removing or putting entries while iterating is allowed. */
  entries(): AsyncIterable<[UK, UV]>;
  keys(): AsyncIterable<UK>;
  values(): AsyncIterable<UV>;
}

/** The state handle type a descriptor yields. */
export type StateFor<D> =
  D extends ValueStateDescriptor<infer T, infer N>
    ? ValueState<T, N>
    : D extends ListStateDescriptor<infer T, infer N>
      ? ListState<T, N>
      : D extends MapStateDescriptor<infer UK, infer UV, infer N>
        ? MapState<UK, UV, N>
        : D extends ReducingStateDescriptor<infer T, infer N>
          ? ReducingState<T, N>
          : D extends AggregatingStateDescriptor<infer IN, infer _ACC, infer OUT, infer N>
            ? AggregatingState<IN, OUT, N>
            : never;

/** A timer: fires at `timestamp` for `key` in `namespace`. Identity is (timestamp, key, namespace). */
export interface Timer<K, N = string> {
  readonly timestamp: number;
  readonly key: K;
  readonly namespace: N;
}

/**
 * A per-key-group priority queue of timers with set semantics, kept in the keyed backend and
 * snapshotted and rescaled with it. Ordered by timestamp (ties: by key bytes, then namespace bytes).
 */
export interface TimerQueue<K, N = string> {
  /** Adds a timer (no-op when present). Returns true iff the head of the queue changed. */
  add(timer: Timer<K, N>): boolean;
  /** Removes a timer (no-op when absent). Returns true iff the head of the queue changed. */
  remove(timer: Timer<K, N>): boolean;
  contains(timer: Timer<K, N>): boolean;
  peek(): Timer<K, N> | null;
  poll(): Timer<K, N> | null;
  /** Removes and returns, in order, every timer with timestamp <= `time`. */
  pollUntil(time: number): Timer<K, N>[];
  readonly size: number;
  isEmpty(): boolean;
  /** The timers of one key group, in no particular order. */
  timersInKeyGroup(keyGroup: number): Timer<K, N>[];
  [Symbol.iterator](): Iterator<Timer<K, N>>;
}

/** Operator (non-keyed) state: one per operator subtask. */
export interface OperatorListState<T> {
  get(): readonly T[];
  add(value: T): void;
  addAll(values: readonly T[]): void;
  update(values: readonly T[]): void;
  clear(): void;
}

export interface BroadcastState<K, V> {
  get(key: K): V | null;
  put(key: K, value: V): void;
  putAll(entries: Iterable<readonly [K, V]> | ReadonlyMap<K, V>): void;
  contains(key: K): boolean;
  remove(key: K): void;
  clear(): void;
  entries(): IterableIterator<[K, V]>;
  readonly size: number;
}
