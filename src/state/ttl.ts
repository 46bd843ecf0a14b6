import { StateAccessError, StreamStateError } from '../errors.js';
import { describeSerializer, resolveCompatibility, snapshotOf } from '../serializers/serializer.js';
import type { Serializer, SerializerSnapshot } from '../serializers/serializer.js';
import type {
  AggregateFunction,
  AggregatingStateDescriptor,
  ListStateDescriptor,
  MapStateDescriptor,
  ReducingStateDescriptor,
  StateDescriptor,
  TtlConfig,
  ValueStateDescriptor,
} from './descriptors.js';
import type { AggregatingState, KeyedState, ListState, MapState, ReducingState, ValueState } from './types.js';

/**
 * State TTL, independent of the backend: a descriptor with `ttl` is registered as an inner state
 * (same name and kind, no ttl) whose values, list elements and map values are wrapped with their
 * last-access timestamp, and the handle the user gets is a wrapper that checks expiry. Backends
 * only have to store the wrapped values; full snapshots drop expired entries with isExpired().
 *
 * Every read path applies the same rule (docs/SEMANTICS.md, "TTL"): an expired value is removed
 * when read and returned only under returnExpiredIfNotCleanedUp; a live value read under
 * onReadAndWrite gets its timestamp refreshed. That holds for value(), list get(), reducing and
 * aggregating get(), map get()/contains() and map entries()/keys()/values() iteration.
 */

/** A stored value with its last-access (processing-time) timestamp in ms. */
export interface TtlValue<T> {
  readonly v: T;
  readonly ts: number;
}

export const TTL_SERIALIZER_ID = 'streamstate.ttl';

/** True when `stored` is expired at `now`: last access + ttl <= now. */
export function isExpired(stored: TtlValue<unknown>, ttl: TtlConfig, now: number): boolean {
  return stored.ts + ttl.ttlMs <= now;
}

/** The serializer of TTL-wrapped values: f64 timestamp + the inner serializer's bytes. */
export function ttlSerializer<T>(inner: Serializer<T>): Serializer<TtlValue<T>> {
  return {
    id: TTL_SERIALIZER_ID,
    version: 1,
    config: { id: inner.id, version: inner.version, ...(inner.config === undefined ? {} : { config: inner.config }) },
    mapKey: 'bytes',
    serialize(w) {
      const body = inner.serialize(w.v);
      const out = Buffer.allocUnsafe(8 + body.length);
      out.writeDoubleBE(w.ts, 0);
      out.set(body, 8);
      return out;
    },
    deserialize(bytes) {
      const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      return { ts: b.readDoubleBE(0), v: inner.deserialize(b.subarray(8)) };
    },
    copy: (w) => ({ v: inner.copy(w.v), ts: w.ts }),
    canMigrateFrom(previous) {
      const prevInner = innerSnapshotOf(previous);
      return (
        prevInner !== null && resolveCompatibility(prevInner, inner as Serializer<unknown>).kind !== 'incompatible'
      );
    },
    restoreReader(previous) {
      const prevInner = innerSnapshotOf(previous);
      const c = prevInner === null ? null : resolveCompatibility(prevInner, inner as Serializer<unknown>);
      return ttlSerializer(c !== null && c.kind === 'compatible-after-migration' ? (c.reader as Serializer<T>) : inner);
    },
  };
}

function innerSnapshotOf(s: SerializerSnapshot): SerializerSnapshot | null {
  const c = s.config;
  if (s.id !== TTL_SERIALIZER_ID || c === null || typeof c !== 'object' || Array.isArray(c)) return null;
  if (typeof c.id !== 'string' || typeof c.version !== 'number') return null;
  return c.config === undefined ? { id: c.id, version: c.version } : { id: c.id, version: c.version, config: c.config };
}

/** Human-readable form of a possibly TTL-wrapped serializer snapshot. */
export function describeTtlSerializer(s: SerializerSnapshot): string {
  const inner = innerSnapshotOf(s);
  return inner === null ? describeSerializer(s) : `ttl(${describeSerializer(inner)})`;
}

// ----------------------------------------------------------------------------- inner descriptors

/** A refresh of an aggregating/reducing accumulator's timestamp travels as an input. */
interface Replace<T> {
  readonly replace: TtlValue<T>;
}
type AggInput<IN, ACC> = TtlValue<IN> | Replace<ACC>;

function isReplace<T>(x: unknown): x is Replace<T> {
  return typeof x === 'object' && x !== null && 'replace' in x;
}

/**
 * The descriptor a backend registers for a TTL descriptor: same name and kind, no ttl, values
 * wrapped. The backend records `ttl: true` in the state's meta info.
 */
export function ttlInnerDescriptor(d: StateDescriptor<unknown>): StateDescriptor<unknown> {
  const common = { name: d.name, namespaceSerializer: d.namespaceSerializer };
  switch (d.kind) {
    case 'value':
      return { ...common, kind: 'value', serializer: ttlSerializer(d.serializer) } as ValueStateDescriptor<
        unknown,
        unknown
      >;
    case 'list':
      return { ...common, kind: 'list', elementSerializer: ttlSerializer(d.elementSerializer) } as ListStateDescriptor<
        unknown,
        unknown
      >;
    case 'map':
      return {
        ...common,
        kind: 'map',
        userKeySerializer: d.userKeySerializer,
        valueSerializer: ttlSerializer(d.valueSerializer),
      } as MapStateDescriptor<unknown, unknown, unknown>;
    case 'reducing': {
      const reduce = d.reduce;
      const wrapped = (a: TtlValue<unknown>, b: TtlValue<unknown> | Replace<unknown>): TtlValue<unknown> =>
        isReplace(b) ? b.replace : { v: reduce(a.v, b.v), ts: b.ts };
      return {
        ...common,
        kind: 'reducing',
        serializer: ttlSerializer(d.serializer),
        reduce: wrapped,
      } as unknown as ReducingStateDescriptor<unknown, unknown>;
    }
    case 'aggregating': {
      const agg = d.aggregate;
      const wrapped: AggregateFunction<AggInput<unknown, unknown>, TtlValue<unknown>, TtlValue<unknown>> = {
        createAccumulator: () => ({ v: agg.createAccumulator(), ts: 0 }),
        add: (input, acc) => (isReplace(input) ? input.replace : { v: agg.add(input.v, acc.v), ts: input.ts }),
        getResult: (acc) => acc,
        merge: (a, b) => ({ v: agg.merge(a.v, b.v), ts: Math.max(a.ts, b.ts) }),
      };
      return {
        ...common,
        kind: 'aggregating',
        accumulatorSerializer: ttlSerializer(d.accumulatorSerializer),
        aggregate: wrapped,
      } as AggregatingStateDescriptor<unknown, unknown, unknown, unknown>;
    }
  }
}

// ----------------------------------------------------------------------------- wrapper handles

/** What a backend may give the TTL layer besides the clock. */
export interface TtlHooks {
  /** Called after every access of the state (incremental cleanup runs here on the heap). */
  readonly afterAccess?: () => void;
  /**
   * Identity of the backend's current key (compared with ===). Map iteration refreshes and removes
   * entries only while the key it started on is still current; without this hook it assumes so.
   */
  readonly currentKey?: () => unknown;
}

class TtlPolicy {
  readonly onRead: boolean;
  readonly returnExpired: boolean;
  constructor(
    readonly ttl: TtlConfig,
    readonly clock: () => number,
    readonly hooks: TtlHooks,
  ) {
    this.onRead = ttl.update === 'onReadAndWrite';
    this.returnExpired = ttl.visibility === 'returnExpiredIfNotCleanedUp';
  }
  expired(w: TtlValue<unknown>, now: number): boolean {
    return w.ts + this.ttl.ttlMs <= now;
  }
  /** Runs the backend's after-access hook (incremental cleanup). */
  accessed(): void {
    this.hooks.afterAccess?.();
  }
}

function nullNotAllowed(what: string): never {
  throw new StateAccessError(
    'NULL_NOT_ALLOWED',
    `${what}: null is not allowed as a list element. Use clear() to remove the list.`,
  );
}

abstract class TtlHandle<N> implements KeyedState<N> {
  constructor(
    protected readonly inner: KeyedState<N>,
    protected readonly p: TtlPolicy,
  ) {}
  setCurrentNamespace(namespace: N): void {
    this.inner.setCurrentNamespace(namespace);
  }
  getCurrentNamespace(): N {
    return this.inner.getCurrentNamespace();
  }
  clear(): void {
    this.inner.clear();
  }
}

class TtlValueState<T, N> extends TtlHandle<N> implements ValueState<T, N> {
  private get v(): ValueState<TtlValue<T>, N> {
    return this.inner as ValueState<TtlValue<T>, N>;
  }
  value(): T | null {
    const r = this.read();
    this.p.accessed();
    return r;
  }
  private read(): T | null {
    const w = this.v.value();
    if (w === null) return null;
    const now = this.p.clock();
    if (this.p.expired(w, now)) {
      this.v.clear();
      return this.p.returnExpired ? w.v : null;
    }
    if (this.p.onRead) this.v.update({ v: w.v, ts: now });
    return w.v;
  }
  update(value: T | null): void {
    if (value === null || value === undefined) this.v.clear();
    else this.v.update({ v: value, ts: this.p.clock() });
    this.p.accessed();
  }
}

/** Drops expired sources and target before a merge, so expired data is not merged in. */
function dropExpiredBeforeMerge<N>(
  inner: KeyedState<N> & { get(): unknown },
  p: TtlPolicy,
  target: N,
  sources: readonly N[],
): void {
  const current = inner.getCurrentNamespace();
  const now = p.clock();
  for (const ns of [target, ...sources]) {
    inner.setCurrentNamespace(ns);
    const w = inner.get() as TtlValue<unknown> | null;
    if (w !== null && p.expired(w, now)) inner.clear();
  }
  inner.setCurrentNamespace(current);
}

class TtlListState<T, N> extends TtlHandle<N> implements ListState<T, N> {
  private get l(): ListState<TtlValue<T>, N> {
    return this.inner as ListState<TtlValue<T>, N>;
  }
  get(): readonly T[] | null {
    const r = this.read();
    this.p.accessed();
    return r;
  }
  private read(): readonly T[] | null {
    const ws = this.l.get();
    if (ws === null) return null;
    const now = this.p.clock();
    const live: TtlValue<T>[] = [];
    for (const w of ws) if (!this.p.expired(w, now)) live.push(w);
    const anyExpired = live.length !== ws.length;
    const result = (anyExpired && this.p.returnExpired ? ws : live).map((w) => w.v);
    if (anyExpired || this.p.onRead) {
      const kept = this.p.onRead ? live.map((w) => ({ v: w.v, ts: now })) : live;
      if (kept.length === 0) this.l.clear();
      else this.l.update(kept);
    }
    return result.length === 0 ? null : result;
  }
  add(value: T): void {
    if (value === null || value === undefined) nullNotAllowed('ListState.add');
    this.l.add({ v: value, ts: this.p.clock() });
    this.p.accessed();
  }
  addAll(values: readonly T[]): void {
    this.l.addAll(this.wrapAll(values, 'ListState.addAll'));
    this.p.accessed();
  }
  update(values: readonly T[]): void {
    this.l.update(this.wrapAll(values, 'ListState.update'));
    this.p.accessed();
  }
  mergeNamespaces(target: N, sources: readonly N[]): void {
    // Lists expire per element; expired elements are filtered when read.
    this.l.mergeNamespaces(target, sources);
  }
  private wrapAll(values: readonly T[] | null, what: string): TtlValue<T>[] {
    if (values === null || values === undefined) nullNotAllowed(what);
    const now = this.p.clock();
    return values.map((v) => {
      if (v === null || v === undefined) nullNotAllowed(what);
      return { v, ts: now };
    });
  }
}

class TtlReducingState<T, N> extends TtlHandle<N> implements ReducingState<T, N> {
  private get r(): ReducingState<TtlValue<T> | Replace<T>, N> {
    return this.inner as ReducingState<TtlValue<T> | Replace<T>, N>;
  }
  get(): T | null {
    const r = this.read();
    this.p.accessed();
    return r;
  }
  private read(): T | null {
    const w = this.r.get() as TtlValue<T> | null;
    if (w === null) return null;
    const now = this.p.clock();
    if (this.p.expired(w, now)) {
      this.r.clear();
      return this.p.returnExpired ? w.v : null;
    }
    if (this.p.onRead) this.r.add({ replace: { v: w.v, ts: now } });
    return w.v;
  }
  add(value: T): void {
    const now = this.p.clock();
    const w = this.r.get() as TtlValue<T> | null;
    if (w !== null && this.p.expired(w, now)) this.r.clear();
    this.r.add({ v: value, ts: now });
    this.p.accessed();
  }
  mergeNamespaces(target: N, sources: readonly N[]): void {
    dropExpiredBeforeMerge(this.r, this.p, target, sources);
    this.r.mergeNamespaces(target, sources);
  }
}

class TtlAggregatingState<IN, ACC, OUT, N> extends TtlHandle<N> implements AggregatingState<IN, OUT, N> {
  constructor(
    inner: KeyedState<N>,
    p: TtlPolicy,
    private readonly agg: AggregateFunction<IN, ACC, OUT>,
  ) {
    super(inner, p);
  }
  private get a(): AggregatingState<AggInput<IN, ACC>, TtlValue<ACC>, N> {
    return this.inner as AggregatingState<AggInput<IN, ACC>, TtlValue<ACC>, N>;
  }
  get(): OUT | null {
    const r = this.read();
    this.p.accessed();
    return r;
  }
  private read(): OUT | null {
    const w = this.a.get();
    if (w === null) return null;
    const now = this.p.clock();
    if (this.p.expired(w, now)) {
      this.a.clear();
      return this.p.returnExpired ? this.agg.getResult(w.v) : null;
    }
    if (this.p.onRead) this.a.add({ replace: { v: w.v, ts: now } });
    return this.agg.getResult(w.v);
  }
  add(value: IN): void {
    const now = this.p.clock();
    const w = this.a.get();
    if (w !== null && this.p.expired(w, now)) this.a.clear();
    this.a.add({ v: value, ts: now });
    this.p.accessed();
  }
  mergeNamespaces(target: N, sources: readonly N[]): void {
    dropExpiredBeforeMerge(this.a, this.p, target, sources);
    this.a.mergeNamespaces(target, sources);
  }
}

class TtlMapState<UK, UV, N> extends TtlHandle<N> implements MapState<UK, UV, N> {
  private get m(): MapState<UK, TtlValue<UV>, N> {
    return this.inner as MapState<UK, TtlValue<UV>, N>;
  }
  get(key: UK): UV | null {
    const w = this.m.get(key);
    const r = w === null ? null : this.check(key, w, this.p.clock());
    this.p.accessed();
    return r === null ? null : r.v;
  }
  /**
   * The one read rule for a present entry: expired → removed, returned only under
   * returnExpiredIfNotCleanedUp; live → refreshed under onReadAndWrite. Null: not visible.
   */
  private check(key: UK, w: TtlValue<UV>, now: number): TtlValue<UV> | null {
    if (this.p.expired(w, now)) {
      this.m.remove(key);
      return this.p.returnExpired ? w : null;
    }
    if (this.p.onRead) this.m.put(key, { v: w.v, ts: now });
    return w;
  }
  put(key: UK, value: UV): void {
    this.m.put(key, { v: value, ts: this.p.clock() });
    this.p.accessed();
  }
  putAll(entries: Iterable<readonly [UK, UV]> | ReadonlyMap<UK, UV>): void {
    const now = this.p.clock();
    for (const [k, v] of entries) this.m.put(k, { v, ts: now });
    this.p.accessed();
  }
  contains(key: UK): boolean {
    const w = this.m.get(key);
    // A stored null (only possible without TTL wrapping) cannot occur here: values are wrapped.
    const r = w === null ? this.m.contains(key) : this.check(key, w, this.p.clock()) !== null;
    this.p.accessed();
    return r;
  }
  remove(key: UK): void {
    this.m.remove(key);
    this.p.accessed();
  }
  /**
   * Scans synchronously when the inner state offers entriesSync (heap); otherwise expired
   * entries that were not cleaned up yet still count. Does not refresh (no entry is read).
   */
  isEmpty(): boolean {
    const r = this.isEmptyNow();
    this.p.accessed();
    return r;
  }
  private isEmptyNow(): boolean {
    if (this.m.isEmpty()) return true;
    const sync = (this.m as Partial<SyncMapIteration<UK, TtlValue<UV>>>).entriesSync;
    if (sync === undefined) return false;
    const now = this.p.clock();
    for (const [, w] of sync.call(this.m)) if (this.p.returnExpired || !this.p.expired(w, now)) return false;
    return true;
  }
  /**
   * Every yielded entry is read under the same rule as get(): expired entries are removed (and
   * yielded only under returnExpiredIfNotCleanedUp), live ones refreshed under onReadAndWrite.
   * The writes happen only while the key and namespace the iteration started on are current
   * (the caller may switch keys between steps); otherwise the entry is yielded unchanged.
   */
  async *entries(): AsyncIterable<[UK, UV]> {
    const ns = this.m.getCurrentNamespace();
    const keyOf = this.p.hooks.currentKey;
    const key = keyOf?.();
    const onItsSlot = (): boolean => this.m.getCurrentNamespace() === ns && (keyOf === undefined || keyOf() === key);
    this.p.accessed();
    for await (const [k, w] of this.m.entries()) {
      const now = this.p.clock();
      if (!onItsSlot()) {
        if (this.p.returnExpired || !this.p.expired(w, now)) yield [k, w.v];
        continue;
      }
      const r = this.check(k, w, now);
      if (r !== null) yield [k, r.v];
    }
  }
  async *keys(): AsyncIterable<UK> {
    for await (const [k] of this.entries()) yield k;
  }
  async *values(): AsyncIterable<UV> {
    for await (const [, v] of this.entries()) yield v;
  }
}

/**
 * Optional capability of a backend's map state: synchronous iteration of the current entries.
 * TTL map state uses it to answer isEmpty() exactly.
 */
export interface SyncMapIteration<UK, UV> {
  entriesSync(): Iterable<[UK, UV]>;
}

/**
 * Registers the inner state of a TTL descriptor through `registerInner` and returns the wrapper
 * handle implementing the descriptor's state interface.
 */
export function createTtlState(
  descriptor: StateDescriptor<unknown>,
  registerInner: (inner: StateDescriptor<unknown>) => KeyedState<unknown>,
  clock: () => number,
  hooks: TtlHooks = {},
): KeyedState<unknown> {
  const ttl = descriptor.ttl;
  if (ttl === undefined)
    throw new StreamStateError('INVALID_ARGUMENT', `state "${descriptor.name}" has no ttl configured`);
  const p = new TtlPolicy(ttl, clock, hooks);
  const inner = registerInner(ttlInnerDescriptor(descriptor));
  switch (descriptor.kind) {
    case 'value':
      return new TtlValueState(inner, p);
    case 'list':
      return new TtlListState(inner, p);
    case 'map':
      return new TtlMapState(inner, p);
    case 'reducing':
      return new TtlReducingState(inner, p);
    case 'aggregating':
      return new TtlAggregatingState(inner, p, descriptor.aggregate);
  }
}

/** The value serializer snapshot a TTL state records (for comparing with restored meta infos). */
export function ttlSerializerSnapshot(inner: Serializer<unknown>): SerializerSnapshot {
  return snapshotOf(ttlSerializer(inner) as Serializer<unknown>);
}
