import { StreamStateError } from '../errors.js';
import type { ByteWriter } from '../format/bytes.js';
import type { Serializer } from '../serializers/serializer.js';
import type { StateDescriptor, TtlConfig } from '../state/descriptors.js';
import type {
  AggregatingState,
  KeyedState,
  ListState,
  MapState,
  ReducingState,
  Timer,
  TimerQueue,
  ValueState,
} from '../state/types.js';
import type { FunctionHooks } from './hooks.js';
import { ChangeOp, writeByteList, type ChangeOpCode, type StateMetaRecord } from './records.js';
import { valueSerializerOf } from './replay.js';

/** A registered state as the log sees it. */
export interface LoggedState {
  readonly id: number;
  readonly meta: StateMetaRecord;
  /** The materialization epoch in which the METADATA record was last logged (-1: never). */
  loggedEpoch: number;
  /** TTL state: records carry the write time. */
  readonly timed: boolean;
  /** TTL state whose reads change it (refresh on read, or cleanup visible through returnExpiredIfNotCleanedUp). */
  readonly readsLogged: boolean;
}

/** What wrapper handles need from the changelog backend to log a change. */
export interface ChangeSink {
  /** The write time for `st` (NaN when the state has no TTL). */
  time(st: LoggedState): number;
  /** Runs `fn` against the wrapped backend with its TTL clock pinned to `time` (unless NaN). */
  at<T>(time: number, fn: () => T): T;
  /** Starts a record for the current key (logging METADATA first when due); append the payload, then commit(). */
  begin(st: LoggedState, op: ChangeOpCode, namespace: Uint8Array, time: number): ByteWriter;
  /** Starts a record for an explicit key (timers). */
  beginFor(st: LoggedState, op: ChangeOpCode, keyGroup: number, key: Uint8Array, namespace: Uint8Array): ByteWriter;
  commit(): void;
  /** The serialized current key (map iteration logs its reads only while its key is current). */
  currentKeyBytes(): Uint8Array;
}

export function loggedStateFor(id: number, meta: StateMetaRecord, ttl: TtlConfig | undefined): LoggedState {
  return {
    id,
    meta,
    loggedEpoch: -1,
    timed: ttl !== undefined,
    readsLogged:
      ttl !== undefined && (ttl.update === 'onReadAndWrite' || ttl.visibility === 'returnExpiredIfNotCleanedUp'),
  };
}

const UNSET: unique symbol = Symbol('unset');

/** Shared plumbing: namespace bytes cached per namespace value, logging helpers. */
abstract class LoggingState<S extends KeyedState<unknown>> implements KeyedState<unknown> {
  private nsValue: unknown = UNSET;
  private nsBytes: Uint8Array = new Uint8Array(0);
  protected readonly valueSer: Serializer<unknown>;

  constructor(
    protected readonly inner: S,
    protected readonly st: LoggedState,
    protected readonly sink: ChangeSink,
    protected readonly descriptor: StateDescriptor<unknown>,
  ) {
    this.valueSer = valueSerializerOf(descriptor);
  }

  setCurrentNamespace(namespace: unknown): void {
    this.inner.setCurrentNamespace(namespace);
  }

  getCurrentNamespace(): unknown {
    return this.inner.getCurrentNamespace();
  }

  /** Serialized current namespace; validated against the wrapped handle (applyToAllKeys may switch it behind our back). */
  protected ns(): Uint8Array {
    const ns = this.inner.getCurrentNamespace();
    if (!Object.is(ns, this.nsValue)) {
      this.nsBytes = this.descriptor.namespaceSerializer.serialize(ns);
      this.nsValue = ns;
    }
    return this.nsBytes;
  }

  clear(): void {
    const t = this.sink.time(this.st);
    this.sink.at(t, () => this.inner.clear());
    this.sink.begin(this.st, ChangeOp.CLEAR, this.ns(), t);
    this.sink.commit();
  }

  /** A read of a TTL state that may change it: pinned clock, logged so replay repeats it. */
  protected read<T>(fn: () => T, op: ChangeOpCode = ChangeOp.READ, userKey?: Uint8Array): T {
    if (!this.st.readsLogged) return fn();
    const t = this.sink.time(this.st);
    const r = this.sink.at(t, fn);
    const w = this.sink.begin(this.st, op, this.ns(), t);
    if (userKey !== undefined) w.bytes(userKey);
    this.sink.commit();
    return r;
  }

  protected logValue(op: ChangeOpCode, t: number, bytes: Uint8Array): void {
    this.sink.begin(this.st, op, this.ns(), t).bytes(bytes);
    this.sink.commit();
  }

  protected logMerge(target: unknown, sources: readonly unknown[], t: number): void {
    const nsSer = this.descriptor.namespaceSerializer;
    const tb = nsSer.serialize(target);
    const sb = sources.map((s) => nsSer.serialize(s));
    // The record's namespace is the target: a merge does not use the current namespace, which may never have been set.
    const w = this.sink.begin(this.st, ChangeOp.MERGE_NS, tb, t);
    w.bytes(tb);
    writeByteList(w, sb);
    this.sink.commit();
  }
}

export class LoggingValueState
  extends LoggingState<ValueState<unknown, unknown>>
  implements ValueState<unknown, unknown>
{
  value(): unknown {
    return this.read(() => this.inner.value());
  }

  update(value: unknown): void {
    if (value === null || value === undefined) return this.clear();
    const bytes = this.valueSer.serialize(value);
    const t = this.sink.time(this.st);
    this.sink.at(t, () => this.inner.update(value));
    this.logValue(ChangeOp.SET, t, bytes);
  }
}

function hasNull(values: readonly unknown[] | null | undefined): boolean {
  if (values === null || values === undefined) return true;
  for (const v of values) if (v === null || v === undefined) return true;
  return false;
}

export class LoggingListState extends LoggingState<ListState<unknown, unknown>> implements ListState<unknown, unknown> {
  get(): readonly unknown[] | null {
    return this.read(() => this.inner.get());
  }

  add(value: unknown): void {
    if (value === null || value === undefined) return this.inner.add(value); // the wrapped backend rejects it
    const bytes = this.valueSer.serialize(value);
    const t = this.sink.time(this.st);
    this.sink.at(t, () => this.inner.add(value));
    this.logValue(ChangeOp.ADD_ELEMENT, t, bytes);
  }

  addAll(values: readonly unknown[]): void {
    if (hasNull(values)) return this.inner.addAll(values); // rejected by the wrapped backend
    if (values.length === 0) return this.inner.addAll(values); // no change
    this.writeList(ChangeOp.ADD_ALL, values, () => this.inner.addAll(values));
  }

  update(values: readonly unknown[]): void {
    if (hasNull(values)) return this.inner.update(values);
    if (values.length === 0) return this.clear();
    this.writeList(ChangeOp.SET, values, () => this.inner.update(values));
  }

  mergeNamespaces(target: unknown, sources: readonly unknown[]): void {
    const t = this.sink.time(this.st);
    this.sink.at(t, () => this.inner.mergeNamespaces(target, sources));
    this.logMerge(target, sources, t);
  }

  private writeList(op: ChangeOpCode, values: readonly unknown[], apply: () => void): void {
    const encoded = values.map((v) => this.valueSer.serialize(v));
    const t = this.sink.time(this.st);
    this.sink.at(t, apply);
    writeByteList(this.sink.begin(this.st, op, this.ns(), t), encoded);
    this.sink.commit();
  }
}

/** Reducing and aggregating: the log records the resulting value / accumulator (see FunctionHooks). */
export class LoggingFoldingState
  extends LoggingState<ReducingState<unknown, unknown> | AggregatingState<unknown, unknown, unknown>>
  implements ReducingState<unknown, unknown>, AggregatingState<unknown, unknown, unknown>
{
  constructor(
    inner: ReducingState<unknown, unknown> | AggregatingState<unknown, unknown, unknown>,
    st: LoggedState,
    sink: ChangeSink,
    descriptor: StateDescriptor<unknown>,
    private readonly hooks: FunctionHooks,
  ) {
    super(inner, st, sink, descriptor);
  }

  get(): unknown {
    return this.read(() => this.inner.get());
  }

  add(value: unknown): void {
    if (this.descriptor.kind === 'reducing' && (value === null || value === undefined)) return this.inner.add(value);
    const t = this.sink.time(this.st);
    const missing = UNSET as unknown;
    const result = this.hooks.capture(
      () => this.sink.at(t, () => this.inner.add(value)),
      this.descriptor.kind === 'reducing' ? value : missing,
    );
    if (result === missing) {
      throw new StreamStateError(
        'SERIALIZATION_FAILED',
        `aggregating state "${this.descriptor.name}": the wrapped backend did not call aggregate.add, so the change cannot be logged.`,
      );
    }
    this.logValue(ChangeOp.SET, t, this.valueSer.serialize(result));
  }

  mergeNamespaces(target: unknown, sources: readonly unknown[]): void {
    const t = this.sink.time(this.st);
    this.sink.at(t, () => this.inner.mergeNamespaces(target, sources));
    this.logMerge(target, sources, t);
  }
}

export class LoggingMapState
  extends LoggingState<MapState<unknown, unknown, unknown>>
  implements MapState<unknown, unknown, unknown>
{
  private get ukSer(): Serializer<unknown> {
    return (this.descriptor as { userKeySerializer: Serializer<unknown> }).userKeySerializer;
  }

  get(key: unknown): unknown {
    if (!this.st.readsLogged) return this.inner.get(key);
    return this.read(() => this.inner.get(key), ChangeOp.READ_ENTRY, this.ukSer.serialize(key));
  }

  contains(key: unknown): boolean {
    if (!this.st.readsLogged) return this.inner.contains(key);
    return this.read(() => this.inner.contains(key), ChangeOp.READ_ENTRY, this.ukSer.serialize(key));
  }

  put(key: unknown, value: unknown): void {
    const kb = this.ukSer.serialize(key);
    const vb = value === null || value === undefined ? null : this.valueSer.serialize(value);
    const t = this.sink.time(this.st);
    this.sink.at(t, () => this.inner.put(key, value));
    const w = this.sink.begin(this.st, ChangeOp.PUT, this.ns(), t);
    w.bytes(kb);
    if (vb === null) w.u8(1);
    else w.u8(0).bytes(vb);
    this.sink.commit();
  }

  putAll(entries: Iterable<readonly [unknown, unknown]> | ReadonlyMap<unknown, unknown>): void {
    for (const [k, v] of entries) this.put(k, v);
  }

  remove(key: unknown): void {
    const kb = this.ukSer.serialize(key);
    const t = this.sink.time(this.st);
    this.sink.at(t, () => this.inner.remove(key));
    this.logValue(ChangeOp.REMOVE, t, kb);
  }

  isEmpty(): boolean {
    return this.inner.isEmpty();
  }

  entries(): AsyncIterable<[unknown, unknown]> {
    return this.st.readsLogged ? this.loggedEntries() : this.inner.entries();
  }

  keys(): AsyncIterable<unknown> {
    return this.st.readsLogged ? project(this.loggedEntries(), 0) : this.inner.keys();
  }

  values(): AsyncIterable<unknown> {
    return this.st.readsLogged ? project(this.loggedEntries(), 1) : this.inner.values();
  }

  /**
   * A TTL map iteration reads every entry it yields (a refresh under onReadAndWrite, the removal
   * of an expired one: docs/SEMANTICS.md, "TTL"), so each is logged as READ_ENTRY and replay
   * repeats the read. Only while the key and namespace the iteration started on are current: the
   * wrapped TTL state writes only then.
   */
  private async *loggedEntries(): AsyncIterable<[unknown, unknown]> {
    const ns = this.inner.getCurrentNamespace();
    const nsBytes = this.ns();
    const key = Buffer.from(this.sink.currentKeyBytes());
    for await (const entry of this.inner.entries()) {
      if (this.inner.getCurrentNamespace() === ns && key.equals(this.sink.currentKeyBytes())) {
        const w = this.sink.begin(this.st, ChangeOp.READ_ENTRY, nsBytes, this.sink.time(this.st));
        w.bytes(this.ukSer.serialize(entry[0]));
        this.sink.commit();
      }
      yield entry;
    }
  }
}

async function* project(entries: AsyncIterable<[unknown, unknown]>, i: 0 | 1): AsyncIterable<unknown> {
  for await (const e of entries) yield e[i];
}

/** Timer queues: every add/remove/poll is logged with the timer's own key. */
export class LoggingTimerQueue implements TimerQueue<unknown, unknown> {
  constructor(
    private readonly inner: TimerQueue<unknown, unknown>,
    private readonly st: LoggedState,
    private readonly sink: ChangeSink,
    private readonly keySerializer: Serializer<unknown>,
    private readonly namespaceSerializer: Serializer<unknown>,
    private readonly keyGroupOf: (key: unknown) => number,
  ) {}

  private log(
    op: ChangeOpCode,
    timer: Timer<unknown, unknown>,
    encoded?: { key: Uint8Array; ns: Uint8Array; kg: number },
  ): void {
    const e = encoded ?? this.encode(timer);
    this.sink.beginFor(this.st, op, e.kg, e.key, e.ns).f64(timer.timestamp);
    this.sink.commit();
  }

  private encode(timer: Timer<unknown, unknown>): { key: Uint8Array; ns: Uint8Array; kg: number } {
    return {
      key: this.keySerializer.serialize(timer.key),
      ns: this.namespaceSerializer.serialize(timer.namespace),
      kg: this.keyGroupOf(timer.key),
    };
  }

  add(timer: Timer<unknown, unknown>): boolean {
    const e = this.encode(timer);
    const changed = this.inner.add(timer);
    this.log(ChangeOp.TIMER_ADD, timer, e);
    return changed;
  }

  remove(timer: Timer<unknown, unknown>): boolean {
    const e = this.encode(timer);
    const changed = this.inner.remove(timer);
    this.log(ChangeOp.TIMER_REMOVE, timer, e);
    return changed;
  }

  contains(timer: Timer<unknown, unknown>): boolean {
    return this.inner.contains(timer);
  }

  peek(): Timer<unknown, unknown> | null {
    return this.inner.peek();
  }

  poll(): Timer<unknown, unknown> | null {
    const t = this.inner.poll();
    if (t !== null) this.log(ChangeOp.TIMER_REMOVE, t);
    return t;
  }

  pollUntil(time: number): Timer<unknown, unknown>[] {
    const out = this.inner.pollUntil(time);
    for (const t of out) this.log(ChangeOp.TIMER_REMOVE, t);
    return out;
  }

  get size(): number {
    return this.inner.size;
  }

  isEmpty(): boolean {
    return this.inner.isEmpty();
  }

  timersInKeyGroup(keyGroup: number): Timer<unknown, unknown>[] {
    return this.inner.timersInKeyGroup(keyGroup);
  }

  [Symbol.iterator](): Iterator<Timer<unknown, unknown>> {
    return this.inner[Symbol.iterator]();
  }
}
