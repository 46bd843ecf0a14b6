import { StreamStateError } from '../errors.js';
import { defaultNamespaceSerializer, defaultSerializer } from '../serializers/builtins.js';
import type { Serializer } from '../serializers/serializer.js';

export type StateKind = 'value' | 'list' | 'map' | 'reducing' | 'aggregating';

/** Processing-time TTL. Expiry is per value, list element or map entry. */
export interface TtlConfig {
  /** Time to live in milliseconds (> 0). */
  readonly ttlMs: number;
  /** When the timestamp is refreshed. Default `onCreateAndWrite`. */
  readonly update?: 'onCreateAndWrite' | 'onReadAndWrite';
  /** Whether an expired value that is not cleaned up yet may be returned. Default `neverReturnExpired`. */
  readonly visibility?: 'neverReturnExpired' | 'returnExpiredIfNotCleanedUp';
  /** Drop expired entries while writing full snapshots (and canonical savepoints). Default true. */
  readonly cleanupInFullSnapshot?: boolean;
  /**
   * Heap backends: a cursor walks the state's stored entries and removes the expired ones,
   * `entries` at a time after every access of the state, and also on every setCurrentKey when
   * `everyRecord` is true (Flink's cleanupIncrementally(n, runCleanupForEveryRecord)). Off when
   * absent or false (docs/SEMANTICS.md, "TTL").
   */
  readonly cleanupIncrementally?: false | { readonly entries: number; readonly everyRecord?: boolean };
}

interface DescriptorBase<N> {
  /** Unique per operator; the identity of the state in snapshots. */
  readonly name: string;
  readonly kind: StateKind;
  readonly namespaceSerializer: Serializer<N>;
  readonly ttl?: TtlConfig;
}

export interface ValueStateDescriptor<T, N = string> extends DescriptorBase<N> {
  readonly kind: 'value';
  readonly serializer: Serializer<T>;
  /** Returned (as a copy) when no value is set. Ignored when TTL is enabled. */
  readonly defaultValue?: T;
}

export interface ListStateDescriptor<T, N = string> extends DescriptorBase<N> {
  readonly kind: 'list';
  readonly elementSerializer: Serializer<T>;
}

export interface MapStateDescriptor<UK, UV, N = string> extends DescriptorBase<N> {
  readonly kind: 'map';
  readonly userKeySerializer: Serializer<UK>;
  readonly valueSerializer: Serializer<UV>;
}

export interface ReducingStateDescriptor<T, N = string> extends DescriptorBase<N> {
  readonly kind: 'reducing';
  readonly serializer: Serializer<T>;
  /** Method syntax on purpose: keeps typed descriptors assignable to StateDescriptor<unknown> (getState's bound). */
  reduce(accumulated: T, value: T): T;
}

export interface AggregateFunction<IN, ACC, OUT> {
  createAccumulator(): ACC;
  /** May mutate and return `acc`, or return a new accumulator. */
  add(value: IN, acc: ACC): ACC;
  getResult(acc: ACC): OUT;
  merge(a: ACC, b: ACC): ACC;
}

export interface AggregatingStateDescriptor<IN, ACC, OUT, N = string> extends DescriptorBase<N> {
  readonly kind: 'aggregating';
  readonly accumulatorSerializer: Serializer<ACC>;
  readonly aggregate: AggregateFunction<IN, ACC, OUT>;
}

export type StateDescriptor<N = unknown> =
  | ValueStateDescriptor<unknown, N>
  | ListStateDescriptor<unknown, N>
  | MapStateDescriptor<unknown, unknown, N>
  | ReducingStateDescriptor<unknown, N>
  | AggregatingStateDescriptor<unknown, unknown, unknown, N>;

interface CommonOptions<N> {
  namespace?: Serializer<N>;
  ttl?: TtlConfig;
}

function checkName(name: string): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > 1024) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `a state name must be a non-empty string of at most 1024 characters, got ${JSON.stringify(name)}`,
    );
  }
}

function checkTtl(ttl: TtlConfig | undefined): void {
  if (ttl !== undefined && !(Number.isFinite(ttl.ttlMs) && ttl.ttlMs > 0)) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `ttl.ttlMs must be a positive number of milliseconds, got ${ttl.ttlMs}`,
    );
  }
  const inc = ttl?.cleanupIncrementally;
  if (inc !== undefined && inc !== false && !(Number.isInteger(inc.entries) && inc.entries > 0)) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `ttl.cleanupIncrementally.entries must be a positive integer, got ${inc.entries}`,
    );
  }
}

function base<N>(
  name: string,
  opts: CommonOptions<N>,
): { name: string; namespaceSerializer: Serializer<N>; ttl?: TtlConfig } {
  checkName(name);
  checkTtl(opts.ttl);
  const namespaceSerializer = (opts.namespace ?? defaultNamespaceSerializer) as Serializer<N>;
  return opts.ttl ? { name, namespaceSerializer, ttl: opts.ttl } : { name, namespaceSerializer };
}

export function valueState<T, N = string>(
  name: string,
  opts: CommonOptions<N> & { serializer?: Serializer<T>; defaultValue?: T } = {},
): ValueStateDescriptor<T, N> {
  const d = { ...base(name, opts), kind: 'value' as const, serializer: opts.serializer ?? defaultSerializer<T>() };
  return opts.defaultValue === undefined || opts.defaultValue === null ? d : { ...d, defaultValue: opts.defaultValue };
}

export function listState<T, N = string>(
  name: string,
  opts: CommonOptions<N> & { serializer?: Serializer<T> } = {},
): ListStateDescriptor<T, N> {
  return { ...base(name, opts), kind: 'list', elementSerializer: opts.serializer ?? defaultSerializer<T>() };
}

export function mapState<UK, UV, N = string>(
  name: string,
  opts: CommonOptions<N> & { keySerializer?: Serializer<UK>; valueSerializer?: Serializer<UV> } = {},
): MapStateDescriptor<UK, UV, N> {
  return {
    ...base(name, opts),
    kind: 'map',
    userKeySerializer: opts.keySerializer ?? defaultSerializer<UK>(),
    valueSerializer: opts.valueSerializer ?? defaultSerializer<UV>(),
  };
}

export function reducingState<T, N = string>(
  name: string,
  reduce: (accumulated: T, value: T) => T,
  opts: CommonOptions<N> & { serializer?: Serializer<T> } = {},
): ReducingStateDescriptor<T, N> {
  return { ...base(name, opts), kind: 'reducing', reduce, serializer: opts.serializer ?? defaultSerializer<T>() };
}

export function aggregatingState<IN, ACC, OUT, N = string>(
  name: string,
  aggregate: AggregateFunction<IN, ACC, OUT>,
  opts: CommonOptions<N> & { accumulatorSerializer?: Serializer<ACC> } = {},
): AggregatingStateDescriptor<IN, ACC, OUT, N> {
  return {
    ...base(name, opts),
    kind: 'aggregating',
    aggregate,
    accumulatorSerializer: opts.accumulatorSerializer ?? defaultSerializer<ACC>(),
  };
}
