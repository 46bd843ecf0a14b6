import { StateAccessError } from '../../src/errors.js';
import { VOID_NAMESPACE } from '../../src/serializers/builtins.js';
import type { AggregateFunction } from '../../src/state/descriptors.js';
import type { SyncMapIteration } from '../../src/state/ttl.js';
import type {
  AggregatingState,
  KeyedState,
  ListState,
  MapState,
  ReducingState,
  ValueState,
} from '../../src/state/types.js';
import type { KeyContext } from './key-context.js';
import { noCurrentKey } from './key-context.js';
import type { StateTable, UserMap } from './state-table.js';

/**
 * Heap state handles. Every point operation is synchronous and allocation-free on the common
 * path: two Map lookups (namespace id, key id) in the current key group's slot, plus one
 * integer check that skips copy-on-write bookkeeping when no snapshot is pending.
 */

function nullNotAllowed(what: string): never {
  throw new StateAccessError(
    'NULL_NOT_ALLOWED',
    `${what}: null/undefined is not allowed. Use clear() to remove the entry.`,
  );
}

const copyArray = (v: unknown): unknown => (v as unknown[]).slice();
const copyMap = (v: unknown): unknown => new Map(v as UserMap);

abstract class HeapState<N> implements KeyedState<N> {
  protected nsId: unknown;
  protected ns: N;

  constructor(
    protected readonly ctx: KeyContext<unknown>,
    readonly table: StateTable,
  ) {
    this.ns = VOID_NAMESPACE as N;
    this.nsId = table.nsCodec.id(this.ns);
  }

  setCurrentNamespace(namespace: N): void {
    if (this.ctx.closed) noCurrentKey(this.ctx);
    if (namespace === null || namespace === undefined)
      nullNotAllowed(`state "${this.table.name}": setCurrentNamespace`);
    this.nsId = this.table.nsCodec.id(namespace);
    this.ns = namespace;
  }

  getCurrentNamespace(): N {
    return this.ns;
  }

  clear(): void {
    const i = this.ctx.kgIdx;
    if (i < 0) noCurrentKey(this.ctx);
    this.table.delete(i, this.nsId, this.ctx.keyId);
  }

  protected index(): number {
    const i = this.ctx.kgIdx;
    if (i < 0) noCurrentKey(this.ctx);
    return i;
  }
}

export class HeapValueState<T, N> extends HeapState<N> implements ValueState<T, N> {
  constructor(
    ctx: KeyContext<unknown>,
    table: StateTable,
    private readonly defaultValue: T | undefined,
  ) {
    super(ctx, table);
  }

  value(): T | null {
    const i = this.ctx.kgIdx;
    if (i < 0) noCurrentKey(this.ctx);
    const t = this.table;
    const inner = t.slots[i]?.get(this.nsId);
    const v = inner?.get(this.ctx.keyId) as T | undefined;
    if (v === undefined)
      return this.defaultValue === undefined ? null : (t.valueSerializer.copy(this.defaultValue) as T);
    // A returned object may be mutated in place by the caller: freeze the snapshot's copy first.
    if (t.pending[i] !== 0 && typeof v === 'object' && v !== null)
      return t.mutableFound(i, this.nsId, this.ctx.keyId, inner!, v, t.copyValue) as T;
    return v;
  }

  update(value: T | null): void {
    const i = this.ctx.kgIdx;
    if (i < 0) noCurrentKey(this.ctx);
    if (value === null || value === undefined) this.table.delete(i, this.nsId, this.ctx.keyId);
    else this.table.set(i, this.nsId, this.ctx.keyId, value);
  }
}

export class HeapListState<T, N> extends HeapState<N> implements ListState<T, N> {
  get(): readonly T[] | null {
    const i = this.index();
    return (this.table.get(i, this.nsId, this.ctx.keyId) as T[] | undefined) ?? null;
  }

  add(value: T): void {
    if (value === null || value === undefined) nullNotAllowed(`ListState "${this.table.name}".add`);
    const i = this.index();
    const list = this.table.mutable(i, this.nsId, this.ctx.keyId, copyArray) as T[] | undefined;
    if (list === undefined) this.table.set(i, this.nsId, this.ctx.keyId, [value]);
    else list.push(value);
  }

  addAll(values: readonly T[]): void {
    this.checkValues(values, 'addAll');
    if (values.length === 0) return;
    const i = this.index();
    const list = this.table.mutable(i, this.nsId, this.ctx.keyId, copyArray) as T[] | undefined;
    if (list === undefined) this.table.set(i, this.nsId, this.ctx.keyId, values.slice());
    else for (const v of values) list.push(v);
  }

  update(values: readonly T[]): void {
    this.checkValues(values, 'update');
    const i = this.index();
    if (values.length === 0) this.table.delete(i, this.nsId, this.ctx.keyId);
    else this.table.set(i, this.nsId, this.ctx.keyId, values.slice());
  }

  mergeNamespaces(target: N, sources: readonly N[]): void {
    const i = this.index();
    const t = this.table;
    const keyId = this.ctx.keyId;
    const targetId = t.nsCodec.id(target);
    const merged: T[] = [];
    for (const source of sources) {
      const sourceId = t.nsCodec.id(source);
      if (sourceId === targetId) continue;
      const list = t.get(i, sourceId, keyId) as T[] | undefined;
      if (list === undefined) continue;
      t.delete(i, sourceId, keyId);
      for (const v of list) merged.push(v);
    }
    if (merged.length === 0) return;
    const list = t.mutable(i, targetId, keyId, copyArray) as T[] | undefined;
    if (list === undefined) t.set(i, targetId, keyId, merged);
    else for (const v of merged) list.push(v);
  }

  private checkValues(values: readonly T[] | null, op: string): void {
    if (values === null || values === undefined) nullNotAllowed(`ListState "${this.table.name}".${op}`);
    for (const v of values)
      if (v === null || v === undefined) nullNotAllowed(`ListState "${this.table.name}".${op} (an element)`);
  }
}

/** Shared by reducing and aggregating state: a single accumulated value per slot, mergeable. */
abstract class HeapAccumulatingState<ACC, N> extends HeapState<N> {
  protected readonly copyAcc = (v: unknown): unknown => this.table.valueSerializer.copy(v);

  protected abstract combine(a: ACC, b: ACC): ACC;

  mergeNamespaces(target: N, sources: readonly N[]): void {
    const i = this.index();
    const t = this.table;
    const keyId = this.ctx.keyId;
    const targetId = t.nsCodec.id(target);
    let merged: ACC | undefined;
    for (const source of sources) {
      const sourceId = t.nsCodec.id(source);
      if (sourceId === targetId) continue;
      const v = t.get(i, sourceId, keyId) as ACC | undefined;
      if (v === undefined) continue;
      t.delete(i, sourceId, keyId);
      // The first source becomes the accumulator: copy it so a pending snapshot's view stays intact.
      merged = merged === undefined ? (t.pending[i] !== 0 ? (this.copyAcc(v) as ACC) : v) : this.combine(merged, v);
    }
    if (merged === undefined) return;
    const current = t.mutable(i, targetId, keyId, this.copyAcc) as ACC | undefined;
    t.set(i, targetId, keyId, current === undefined ? merged : this.combine(current, merged));
  }
}

export class HeapReducingState<T, N> extends HeapAccumulatingState<T, N> implements ReducingState<T, N> {
  constructor(
    ctx: KeyContext<unknown>,
    table: StateTable,
    private readonly reduce: (a: T, b: T) => T,
  ) {
    super(ctx, table);
  }

  protected combine(a: T, b: T): T {
    return this.reduce(a, b);
  }

  get(): T | null {
    const i = this.index();
    return (this.table.get(i, this.nsId, this.ctx.keyId) as T | undefined) ?? null;
  }

  add(value: T): void {
    if (value === null || value === undefined) nullNotAllowed(`ReducingState "${this.table.name}".add`);
    const i = this.index();
    const current = this.table.mutable(i, this.nsId, this.ctx.keyId, this.copyAcc) as T | undefined;
    this.table.set(i, this.nsId, this.ctx.keyId, current === undefined ? value : this.reduce(current, value));
  }
}

export class HeapAggregatingState<IN, ACC, OUT, N>
  extends HeapAccumulatingState<ACC, N>
  implements AggregatingState<IN, OUT, N>
{
  constructor(
    ctx: KeyContext<unknown>,
    table: StateTable,
    private readonly fn: AggregateFunction<IN, ACC, OUT>,
  ) {
    super(ctx, table);
  }

  protected combine(a: ACC, b: ACC): ACC {
    return this.fn.merge(a, b);
  }

  get(): OUT | null {
    const i = this.index();
    const acc = this.table.get(i, this.nsId, this.ctx.keyId) as ACC | undefined;
    return acc === undefined ? null : this.fn.getResult(acc);
  }

  add(value: IN): void {
    if (value === null || value === undefined) nullNotAllowed(`AggregatingState "${this.table.name}".add`);
    const i = this.index();
    // Mutable accumulators are changed in place by fn.add: work on a copy while a snapshot needs the old one.
    const acc =
      (this.table.mutable(i, this.nsId, this.ctx.keyId, this.copyAcc) as ACC | undefined) ??
      this.fn.createAccumulator();
    this.table.set(i, this.nsId, this.ctx.keyId, this.fn.add(value, acc));
  }
}

export class HeapMapState<UK, UV, N> extends HeapState<N> implements MapState<UK, UV, N>, SyncMapIteration<UK, UV> {
  private userMap(i: number): UserMap | undefined {
    return this.table.get(i, this.nsId, this.ctx.keyId) as UserMap | undefined;
  }

  get(key: UK): UV | null {
    const m = this.userMap(this.index());
    if (m === undefined) return null;
    const e = m.get(this.table.userKeyCodec!.id(key));
    return e === undefined ? null : ((e[1] as UV) ?? null);
  }

  put(key: UK, value: UV): void {
    if (key === null || key === undefined) nullNotAllowed(`MapState "${this.table.name}".put (the key)`);
    const i = this.index();
    const codec = this.table.userKeyCodec!;
    const ukId = codec.id(key);
    // Identity ids may be canonical forms of the key (docs/SEMANTICS.md, "Map keys"): store the key its bytes stand for.
    const stored = codec.identity ? codec.value(ukId) : key;
    const m = this.table.mutable(i, this.nsId, this.ctx.keyId, copyMap) as UserMap | undefined;
    if (m === undefined) this.table.set(i, this.nsId, this.ctx.keyId, new Map([[ukId, [stored, value] as const]]));
    else m.set(ukId, [stored, value]);
  }

  putAll(entries: Iterable<readonly [UK, UV]> | ReadonlyMap<UK, UV>): void {
    for (const [k, v] of entries) this.put(k, v);
  }

  contains(key: UK): boolean {
    const m = this.userMap(this.index());
    return m !== undefined && m.has(this.table.userKeyCodec!.id(key));
  }

  remove(key: UK): void {
    const i = this.index();
    const ukId = this.table.userKeyCodec!.id(key);
    const current = this.userMap(i);
    if (current === undefined || !current.has(ukId)) return;
    if (current.size === 1) {
      this.table.delete(i, this.nsId, this.ctx.keyId);
      return;
    }
    (this.table.mutable(i, this.nsId, this.ctx.keyId, copyMap) as UserMap).delete(ukId);
  }

  isEmpty(): boolean {
    const m = this.userMap(this.index());
    return m === undefined || m.size === 0;
  }

  /**
   * Bound to the key and namespace current at the start. Entries removed meanwhile are skipped;
   * each yielded value is the current one.
   */
  entries(): AsyncIterable<[UK, UV]> {
    return this.iterate((e) => [e[0] as UK, e[1] as UV]);
  }

  keys(): AsyncIterable<UK> {
    return this.iterate((e) => e[0] as UK);
  }

  values(): AsyncIterable<UV> {
    return this.iterate((e) => e[1] as UV);
  }

  /** One plain iterator object per iteration (no async generator per level: issue 15, item 5). */
  private iterate<R>(project: (entry: readonly [unknown, unknown]) => R): AsyncIterable<R> {
    const i = this.index();
    return {
      [Symbol.asyncIterator]: () => new MapStateIterator(this.ctx, this.table, i, this.nsId, this.ctx.keyId, project),
    };
  }

  /** Synchronous iteration of the current entries (SyncMapIteration; used by TTL's isEmpty). */
  *entriesSync(): Iterable<[UK, UV]> {
    const m = this.userMap(this.index());
    if (m !== undefined) for (const e of [...m.values()]) yield [e[0] as UK, e[1] as UV];
  }
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ value: undefined, done: true });

/**
 * Iterates the user-map ids present at the start; each step looks the map up again in the table
 * (copy-on-write may have replaced it), skips entries removed meanwhile and yields current values.
 */
class MapStateIterator<R> implements AsyncIterator<R> {
  private readonly ids: Iterator<unknown> | null;

  constructor(
    private readonly ctx: KeyContext<unknown>,
    private readonly table: StateTable,
    private readonly index: number,
    private readonly nsId: unknown,
    private readonly keyId: unknown,
    private readonly project: (entry: readonly [unknown, unknown]) => R,
  ) {
    const start = table.get(index, nsId, keyId) as UserMap | undefined;
    this.ids = start === undefined ? null : start.keys();
  }

  next(): Promise<IteratorResult<R>> {
    try {
      return Promise.resolve(this.step());
    } catch (err) {
      return Promise.reject(err);
    }
  }

  private step(): IteratorResult<R> {
    if (this.ids === null) return DONE;
    for (;;) {
      const n = this.ids.next();
      if (n.done === true) return DONE;
      // A closed backend never hands out data, not even to an iteration that started before.
      if (this.ctx.closed) noCurrentKey(this.ctx);
      const e = (this.table.get(this.index, this.nsId, this.keyId) as UserMap | undefined)?.get(n.value);
      if (e !== undefined) return { value: this.project(e), done: false };
    }
  }

  return(): Promise<IteratorResult<R>> {
    return Promise.resolve(DONE);
  }
}
