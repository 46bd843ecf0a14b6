import { StateAccessError } from '../../src/errors.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import type { AggregateFunction } from '../../src/state/descriptors.js';
import type { AggregatingState, ListState, MapState, ReducingState, ValueState } from '../../src/state/types.js';
import type { KeyContext } from './key-context.js';
import { countRowStateId, lengthPrefixed, prefixUpperBound, RowKeyBuilder } from './row-keys.js';
import { type CountDelta, decodeCountRow } from './map-counts.js';
import { ValueCodec } from './value-codec.js';

/**
 * State handles over LevelDB rows. Every point operation builds the row key of (current key group,
 * state id, current key, current namespace[, user key]) in the shared builder and goes to the
 * buffered store synchronously. Values: value/reducing/aggregating one row; a list a base row
 * of length-prefixed elements plus one chunk row per append (LevelListState); a map one row per entry.
 */

function nullNotAllowed(what: string): StateAccessError {
  return new StateAccessError(
    'NULL_NOT_ALLOWED',
    `${what}: null/undefined is not allowed here. Use clear() to remove state.`,
  );
}

export abstract class LevelState<N> {
  /** Called on every access of a TTL state (drives the background TTL sweep, ttl-sweep.ts). */
  onAccess: (() => void) | null = null;
  private namespace: N;
  private nsPart: Buffer | null = null;
  /** This handle's row key (its own buffer, so it survives other handles' accesses). */
  protected readonly rows = new RowKeyBuilder();
  /** The key epoch the prefix in `rows` was built for; -1 = rebuild (namespace changed). */
  private builtFor = -1;

  constructor(
    protected readonly ctx: KeyContext<unknown>,
    protected readonly stateId: number,
    protected readonly namespaceSerializer: Serializer<N>,
  ) {
    this.namespace = '' as N;
  }

  setCurrentNamespace(namespace: N): void {
    this.ctx.store.checkOpen();
    if (namespace === null || namespace === undefined) throw nullNotAllowed('setCurrentNamespace');
    // Object.is: 0 and -0 are two namespaces when their bytes differ (float64).
    if (Object.is(namespace, this.namespace) && typeof namespace !== 'object') return;
    this.namespace = namespace;
    this.nsPart = null;
    this.builtFor = -1;
  }

  getCurrentNamespace(): N {
    return this.namespace;
  }

  protected namespacePart(): Buffer {
    return (this.nsPart ??= lengthPrefixed(this.namespaceSerializer.serialize(this.namespace)));
  }

  /** Builds the row key of the current key and namespace (plus user key) in `rows`. */
  protected row(userKey?: Uint8Array): void {
    const ctx = this.ctx;
    ctx.checkKey();
    if (this.onAccess !== null) this.onAccess();
    if (this.builtFor !== ctx.epoch) {
      this.rows.prefix(ctx.keyGroup, this.stateId, ctx.keyPart, this.namespacePart(), ctx.keyLength);
      this.builtFor = ctx.epoch;
    }
    if (userKey !== undefined) this.rows.withUserKey(userKey);
    else this.rows.prefixOnly();
  }

  /** Builds the row key of the current key and namespace under another state id in `into` (map count rows). */
  protected rowOf(stateId: number, into: RowKeyBuilder): void {
    this.ctx.checkKey();
    into.prefix(this.ctx.keyGroup, stateId, this.ctx.keyPart, this.namespacePart(), this.ctx.keyLength);
  }

  protected readRow(): Buffer | undefined {
    const store = this.ctx.store;
    // Nothing buffered (a read-mostly phase): straight to LevelDB.
    return store.bufferEmpty ? store.db.getSync(this.rows.view()) : store.get(this.rows.view());
  }

  protected writeRow(value: Buffer): void {
    this.ctx.store.put(this.rows.view(), value);
  }

  protected deleteRow(): void {
    this.ctx.store.delete(this.rows.view());
  }

  clear(): void {
    this.row();
    this.deleteRow();
  }

  /** Reads and deletes the row of each source namespace; the current namespace is restored afterwards. */
  protected takeNamespaces(sources: readonly N[]): Buffer[] {
    const saved = this.namespace;
    const savedPart = this.nsPart;
    this.builtFor = -1;
    const out: Buffer[] = [];
    try {
      for (const ns of sources) {
        this.setCurrentNamespace(ns);
        this.row();
        const v = this.readRow();
        if (v !== undefined) {
          out.push(v);
          this.deleteRow();
        }
      }
    } finally {
      this.namespace = saved;
      this.nsPart = savedPart;
      this.builtFor = -1;
    }
    return out;
  }

  /** Runs `fn` with `ns` as the current namespace. */
  protected withNamespace<R>(ns: N, fn: () => R): R {
    const saved = this.namespace;
    const savedPart = this.nsPart;
    this.builtFor = -1;
    try {
      this.setCurrentNamespace(ns);
      return fn();
    } finally {
      this.namespace = saved;
      this.nsPart = savedPart;
      this.builtFor = -1;
    }
  }
}

export class LevelValueState<T, N> extends LevelState<N> implements ValueState<T, N> {
  constructor(
    ctx: KeyContext<unknown>,
    stateId: number,
    namespaceSerializer: Serializer<N>,
    private readonly codec: ValueCodec<T>,
    private readonly defaultValue: T | undefined,
  ) {
    super(ctx, stateId, namespaceSerializer);
  }

  value(): T | null {
    this.row();
    const v = this.readRow();
    if (v !== undefined) return this.codec.decode(v);
    return this.defaultValue === undefined ? null : this.codec.serializer.copy(this.defaultValue);
  }

  update(value: T | null): void {
    this.row();
    if (value === null || value === undefined) this.deleteRow();
    else this.writeRow(this.codec.encode(value));
  }
}

function checkElements<T>(values: readonly T[] | null | undefined, what: string): void {
  if (values === null || values === undefined) throw nullNotAllowed(what);
  for (const v of values) if (v === null || v === undefined) throw nullNotAllowed(`${what} (an element)`);
}

/** Bytes of a list chunk's sequence number, the suffix of its row key. */
const CHUNK_SEQ_BYTES = 4;
const MAX_CHUNK_SEQ = 0xffff_ffff;
/** Lists with more chunks than this drop them with one range deletion instead of a deletion per chunk. */
const RANGE_DELETE_CHUNKS = 64;
/** get() folds the chunks into the base row once there are this many (reading them costs a point lookup each). */
export const COMPACT_ON_READ_CHUNKS = 4;

/**
 * List state (docs/FORMAT.md, "LevelDB row keys"): a base row under the list's row key P, plus one
 * chunk row per add/addAll under P + u32 BE sequence number (1, 2, ...), and a chunk counter (u32
 * BE last sequence number) under the companion state id, present exactly while chunks exist. An
 * append reads the small counter and writes one chunk and the counter: its cost does not depend
 * on the list's length (Flink's RocksDB list uses a merge operator for the same reason). get()
 * reads the base row and the chunks in sequence order and folds them into the base row once they
 * pile up; update() and clear() remove them. A missing chunk (removed by the TTL sweep) is skipped.
 */
export class LevelListState<T, N> extends LevelState<N> implements ListState<T, N> {
  private readonly counterRows = new RowKeyBuilder();
  private counterEpoch = -1;
  private counterNs: Buffer | null = null;
  private readonly seqBytes = Buffer.alloc(CHUNK_SEQ_BYTES);

  constructor(
    ctx: KeyContext<unknown>,
    stateId: number,
    namespaceSerializer: Serializer<N>,
    private readonly codec: ValueCodec<T>,
  ) {
    super(ctx, stateId, namespaceSerializer);
  }

  /** The chunk counter's row key of the current key and namespace. */
  private counterRow(): Buffer {
    const ns = this.namespacePart();
    if (this.counterEpoch !== this.ctx.epoch || this.counterNs !== ns) {
      this.rowOf(countRowStateId(this.stateId), this.counterRows);
      this.counterEpoch = this.ctx.epoch;
      this.counterNs = ns;
    }
    return this.counterRows.view();
  }

  /** How many chunks the current list has (its last sequence number). */
  private chunkCount(): number {
    const v = this.ctx.store.get(this.counterRow());
    return v === undefined ? 0 : v.readUInt32BE(0);
  }

  private chunkRow(seq: number): void {
    this.seqBytes.writeUInt32BE(seq, 0);
    this.row(this.seqBytes);
  }

  /** Every stored row of the current list in order (base first): the bytes, or null when it is absent. */
  private readAll(): { base: Buffer | undefined; chunks: (Buffer | undefined)[] } {
    this.row();
    const base = this.readRow();
    const n = this.chunkCount();
    const chunks: (Buffer | undefined)[] = new Array<Buffer | undefined>(n);
    for (let seq = 1; seq <= n; seq++) {
      this.chunkRow(seq);
      chunks[seq - 1] = this.readRow();
    }
    this.row();
    return { base, chunks };
  }

  /** Deletes the chunk rows and the counter of the current list (leaves the base row). */
  private dropChunks(n: number): void {
    if (n > RANGE_DELETE_CHUNKS) {
      // Every chunk row extends the list's row key (and nothing else does: row keys are prefix-free).
      this.row();
      const base = Buffer.from(this.rows.view());
      this.ctx.store.deleteRange(Buffer.concat([base, Buffer.alloc(CHUNK_SEQ_BYTES)]), prefixUpperBound(base));
    } else {
      for (let seq = 1; seq <= n; seq++) {
        this.chunkRow(seq);
        this.deleteRow();
      }
    }
    if (n > 0) this.ctx.store.delete(this.counterRow());
    this.row();
  }

  /** The elements of the current list, or null when it has none. Folds many chunks into the base row. */
  private readList(): T[] | null {
    const { base, chunks } = this.readAll();
    if (base === undefined && chunks.length === 0) return null;
    const out: T[] = base === undefined ? [] : this.codec.decodeList(base);
    for (const c of chunks) if (c !== undefined) for (const v of this.codec.decodeList(c)) out.push(v);
    if (chunks.length >= COMPACT_ON_READ_CHUNKS || (chunks.length > 0 && out.length === 0)) {
      this.dropChunks(chunks.length);
      if (out.length === 0) this.deleteRow();
      else this.writeRow(this.codec.encodeList(out));
    }
    return out.length === 0 ? null : out;
  }

  get(): readonly T[] | null {
    return this.readList();
  }

  /** Appends `values` (non-empty) as one chunk row. */
  private append(values: readonly T[]): void {
    this.row();
    let n = this.chunkCount();
    if (n === MAX_CHUNK_SEQ) {
      this.readList(); // folds every chunk into the base row; numbering starts again
      n = 0;
    }
    this.chunkRow(n + 1);
    this.writeRow(this.codec.encodeList(values));
    const counter = Buffer.allocUnsafe(CHUNK_SEQ_BYTES);
    counter.writeUInt32BE(n + 1, 0);
    this.ctx.store.put(this.counterRow(), counter);
    this.row();
  }

  add(value: T): void {
    if (value === null || value === undefined) throw nullNotAllowed('ListState.add');
    this.append([value]);
  }

  addAll(values: readonly T[]): void {
    checkElements(values, 'ListState.addAll');
    if (values.length === 0) return;
    this.append(values);
  }

  update(values: readonly T[]): void {
    checkElements(values, 'ListState.update');
    this.row();
    this.dropChunks(this.chunkCount());
    if (values.length === 0) this.deleteRow();
    else this.writeRow(this.codec.encodeList(values));
  }

  override clear(): void {
    this.row();
    this.dropChunks(this.chunkCount());
    this.deleteRow();
  }

  mergeNamespaces(target: N, sources: readonly N[]): void {
    const merged: T[] = [];
    for (const ns of sources) {
      if (ns === target) continue;
      this.withNamespace(ns, () => {
        const list = this.readList();
        if (list === null) return;
        for (const v of list) merged.push(v);
        this.clear();
      });
    }
    if (merged.length === 0) return;
    this.withNamespace(target, () => this.append(merged));
  }
}

export class LevelReducingState<T, N> extends LevelState<N> implements ReducingState<T, N> {
  constructor(
    ctx: KeyContext<unknown>,
    stateId: number,
    namespaceSerializer: Serializer<N>,
    private readonly codec: ValueCodec<T>,
    private readonly reduce: (accumulated: T, value: T) => T,
  ) {
    super(ctx, stateId, namespaceSerializer);
  }

  get(): T | null {
    this.row();
    const v = this.readRow();
    return v === undefined ? null : this.codec.decode(v);
  }

  add(value: T): void {
    if (value === null || value === undefined) throw nullNotAllowed('ReducingState.add');
    this.row();
    const v = this.readRow();
    this.writeRow(this.codec.encode(v === undefined ? value : this.reduce(this.codec.decode(v), value)));
  }

  mergeNamespaces(target: N, sources: readonly N[]): void {
    const taken = this.takeNamespaces(sources.filter((s) => s !== target));
    if (taken.length === 0) return;
    let acc: T | undefined;
    for (const row of taken) {
      const v = this.codec.decode(row);
      acc = acc === undefined ? v : this.reduce(acc, v);
    }
    this.withNamespace(target, () => {
      this.row();
      const existing = this.readRow();
      const result = existing === undefined ? (acc as T) : this.reduce(this.codec.decode(existing), acc as T);
      this.writeRow(this.codec.encode(result));
    });
  }
}

export class LevelAggregatingState<IN, ACC, OUT, N> extends LevelState<N> implements AggregatingState<IN, OUT, N> {
  constructor(
    ctx: KeyContext<unknown>,
    stateId: number,
    namespaceSerializer: Serializer<N>,
    private readonly codec: ValueCodec<ACC>,
    private readonly fn: AggregateFunction<IN, ACC, OUT>,
  ) {
    super(ctx, stateId, namespaceSerializer);
  }

  get(): OUT | null {
    this.row();
    const v = this.readRow();
    return v === undefined ? null : this.fn.getResult(this.codec.decode(v));
  }

  add(value: IN): void {
    if (value === null || value === undefined) throw nullNotAllowed('AggregatingState.add');
    this.row();
    const v = this.readRow();
    const acc = v === undefined ? this.fn.createAccumulator() : this.codec.decode(v);
    this.writeRow(this.codec.encode(this.fn.add(value, acc)));
  }

  mergeNamespaces(target: N, sources: readonly N[]): void {
    const taken = this.takeNamespaces(sources.filter((s) => s !== target));
    if (taken.length === 0) return;
    let acc: ACC | undefined;
    for (const row of taken) {
      const v = this.codec.decode(row);
      acc = acc === undefined ? v : this.fn.merge(acc, v);
    }
    this.withNamespace(target, () => {
      this.row();
      const existing = this.readRow();
      const result = existing === undefined ? (acc as ACC) : this.fn.merge(this.codec.decode(existing), acc as ACC);
      this.writeRow(this.codec.encode(result));
    });
  }
}

export interface MapTtl {
  readonly ttlMs: number;
  readonly clock: () => number;
}

/**
 * Map state: one row per entry, plus a count row per (key, namespace) under the companion state id
 * (stateId | 0x8000, see row-keys.ts). LevelDB cannot be scanned synchronously, so the count is
 * what lets isEmpty() answer synchronously. Counts change as deltas in the write buffer
 * (map-counts.ts): put() never reads LevelDB; a put the buffer cannot classify as new or
 * overwriting is counted later, in a batch, when a count is needed.
 */
export class LevelMapState<UK, UV, N> extends LevelState<N> implements MapState<UK, UV, N> {
  private readonly countStateId: number;
  private readonly countRows = new RowKeyBuilder();
  /** What `countRows` was built for: key epoch and namespace part (its identity changes with the namespace). */
  private countEpoch = -1;
  private countNs: Buffer | null = null;
  /** The count delta of the current (key, namespace) in the store's active layer, and that layer's generation. */
  private delta: CountDelta | null = null;
  private deltaGeneration = -1;

  constructor(
    ctx: KeyContext<unknown>,
    stateId: number,
    namespaceSerializer: Serializer<N>,
    private readonly userKeySerializer: Serializer<UK>,
    private readonly codec: ValueCodec<UV>,
    /** TTL maps (values start with their f64 timestamp): the count row also keeps the newest timestamp, so isEmpty() can tell "all expired". */
    private readonly ttl: MapTtl | null = null,
  ) {
    super(ctx, stateId, namespaceSerializer);
    this.countStateId = countRowStateId(stateId);
  }

  private entryRow(key: UK): void {
    if (key === null || key === undefined) throw nullNotAllowed('MapState user key');
    this.row(this.userKeySerializer.serialize(key));
  }

  /** The count row key of the current key and namespace. */
  private countRow(): RowKeyBuilder {
    const ns = this.namespacePart();
    if (this.countEpoch !== this.ctx.epoch || this.countNs !== ns) {
      this.rowOf(this.countStateId, this.countRows);
      this.countEpoch = this.ctx.epoch;
      this.countNs = ns;
      this.delta = null;
    }
    return this.countRows;
  }

  /** The count delta of the current key and namespace in the active layer (take it before writing the row). */
  private countDelta(): CountDelta {
    const rows = this.countRow();
    const store = this.ctx.store;
    if (this.delta === null || this.deltaGeneration !== store.generation) {
      this.delta = store.countDelta(rows.string(), this.ttl !== null);
      this.deltaGeneration = store.generation;
    }
    return this.delta;
  }

  get(key: UK): UV | null {
    this.entryRow(key);
    const v = this.readRow();
    return v === undefined ? null : this.codec.decodeNullable(v);
  }

  put(key: UK, value: UV): void {
    this.entryRow(key);
    const row = value === null || value === undefined ? this.codec.encodeNull() : this.codec.encode(value);
    const d = this.countDelta();
    const rowKey = this.rows.view();
    const store = this.ctx.store;
    // Count first: put() may seal the layer and start writing it at once.
    const before = store.peekForCount(rowKey);
    if (before === undefined) d.blind.push(this.rows.string());
    else if (before === null) d.delta++;
    if (d.ttl) d.noteTimestamp(row);
    store.put(rowKey, row);
  }

  putAll(entries: Iterable<readonly [UK, UV]> | ReadonlyMap<UK, UV>): void {
    if (entries === null || entries === undefined) throw nullNotAllowed('MapState.putAll');
    const list = [...(entries as Iterable<readonly [UK, UV]>)];
    for (const [k] of list) if (k === null || k === undefined) throw nullNotAllowed('MapState.putAll user key');
    for (const [k, v] of list) this.put(k, v);
  }

  contains(key: UK): boolean {
    this.entryRow(key);
    return this.readRow() !== undefined;
  }

  remove(key: UK): void {
    this.entryRow(key);
    if (this.readRow() === undefined) return;
    this.countDelta().delta--;
    this.deleteRow();
  }

  isEmpty(): boolean {
    this.ctx.checkKey();
    const rows = this.countRow();
    const store = this.ctx.store;
    const c = store.countsInDb
      ? decodeCountRow(store.db.getSync(rows.view()))
      : store.mapCount(rows.string(), rows.view());
    if (c.count <= 0) return true;
    // TTL maps: empty when even the newest entry has expired.
    return this.ttl !== null && c.newestTs !== -Infinity && c.newestTs + this.ttl.ttlMs <= this.ttl.clock();
  }

  /** The byte range of the current key and namespace's entries. */
  private entryRange(): { gte: Buffer; lt: Buffer | null } {
    this.row();
    const gte = Buffer.from(this.rows.view());
    return { gte, lt: prefixUpperBound(gte) };
  }

  override clear(): void {
    const { gte, lt } = this.entryRange();
    this.countDelta().clear();
    this.ctx.store.deleteRange(gte, lt);
  }

  async *entries(): AsyncGenerator<[UK, UV]> {
    const { gte, lt } = this.entryRange();
    for await (const [k, v] of this.ctx.store.range(gte, lt)) {
      yield [this.userKeySerializer.deserialize(k.subarray(gte.length)), this.codec.decodeNullable(v) as UV];
    }
  }

  // keys() and values() read the store directly: one async generator less per entry, and no decoding of the other half.
  async *keys(): AsyncGenerator<UK> {
    const { gte, lt } = this.entryRange();
    for await (const [k] of this.ctx.store.range(gte, lt))
      yield this.userKeySerializer.deserialize(k.subarray(gte.length));
  }

  async *values(): AsyncGenerator<UV> {
    const { gte, lt } = this.entryRange();
    for await (const [, v] of this.ctx.store.range(gte, lt)) yield this.codec.decodeNullable(v) as UV;
  }
}
