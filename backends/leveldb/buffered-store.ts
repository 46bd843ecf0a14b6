import type { ChainedBatch, ClassicLevel, Snapshot } from 'classic-level';
import { backendClosedError } from '../../src/backend/keyed-rules.js';
import { StorageError, StreamStateError } from '../../src/errors.js';
import { applyDelta, CountDelta, decodeCountRow, encodeCountRow, type MapCount } from './map-counts.js';
import { RowTable } from './row-table.js';

/**
 * LevelDB behind an in-memory write buffer, so that point reads and writes are synchronous.
 *
 * Writes land in the active layer: a table keyed by row-key bytes (row-table.ts; null = deleted)
 * plus range deletions (MapState.clear has no synchronous way to enumerate its rows) and map
 * count deltas (map-counts.ts). When the layer holds `limitBytes` it is sealed and written to
 * LevelDB (its range deletions with db.clear, then its rows and count rows in one batch); sealed
 * layers are written one after another, in order, and stay readable until LevelDB has them. Reads
 * look at the layers newest first, then call db.getSync. Per-layer tables keep each write to one
 * insert into a table of bounded size. Iteration merges the layers with a LevelDB iterator in
 * byte order.
 *
 * While a layer has no range deletion and few overwrites, each write also goes straight into the
 * layer's LevelDB batch (LevelDB copies the bytes), so that sealing hands a ready batch to
 * LevelDB's thread: no second pass over the rows, no key buffer per row. A range deletion or
 * many overwrites of the same rows (hot keys, where the table's deduplication saves LevelDB
 * work) drop that batch, and the layer is written from its table instead.
 */

export type LevelDb = ClassicLevel<Buffer, Buffer>;
type Batch = ChainedBatch<LevelDb, Buffer, Buffer>;

/** [gte, lt) as latin1 strings; lt null = unbounded. */
type StringRange = readonly [gte: string, lt: string | null];

/** A range deletion: [gte, lt) as bytes, and as latin1 strings for merging with iteration. */
interface Cleared {
  readonly gte: Buffer;
  readonly lt: Buffer | null;
  readonly strings: StringRange;
}

class Layer {
  readonly rows = new RowTable();
  readonly cleared: Cleared[] = [];
  /** Map entry counts changed in this layer, by count row key. */
  readonly counts = new Map<string, CountDelta>();
  bytes = 0;
  /** The layer's rows in write order, as a LevelDB batch, while `direct`; null until the first write. */
  batch: Batch | null = null;
  direct = true;
  /** Writes that replaced a row already in the layer (each is a redundant row in `batch`). */
  overwrites = 0;
  /** Count every blind put before this layer is written (a snapshot point: LevelDB's count rows must be exact). */
  settle = false;

  covers(key: Buffer): boolean {
    for (const { gte, lt } of this.cleared)
      if (key.compare(gte) >= 0 && (lt === null || key.compare(lt) < 0)) return true;
    return false;
  }
}

/** An idle LevelDB gets a layer once it holds this fraction of the limit: small batches keep LevelDB busy alongside the caller. */
const EAGER_FRACTION = 16;

/** Lookups of a sealed layer (blind map puts, count rows) are split over the libuv thread pool. */
const PARALLEL_LOOKUPS = 4;
const MIN_SLICE = 512;

/** What the retained row keys and pending blind puts may take, as a multiple of the write buffer's limit, before they are counted. */
const RETAIN_FACTOR = 8;
/** Value of a retained row that LevelDB holds (the bytes are not kept). */
const PRESENT = Buffer.alloc(0);

function inRange(key: string, gte: string, lt: string | null): boolean {
  return key >= gte && (lt === null || key < lt);
}

export class BufferedStore {
  private active = new Layer();
  /** Sealed layers not yet in LevelDB, oldest first. */
  private readonly sealed: Layer[] = [];
  /** Bumped whenever a new active layer starts (handles cache their count delta per layer). */
  generation = 0;
  private writing: Promise<void> = Promise.resolve();
  /** Layers sealed and not yet written (or failed). */
  private writesQueued = 0;
  private failure: unknown = null;
  /** Set by the backend's close(): every access throws BACKEND_CLOSED from then on (never a classic-level error). */
  private closedAs: string | null = null;
  /**
   * Deferred counting (map-counts.ts): `base` is a LevelDB snapshot from before the first layer
   * written with uncounted blind puts; `recent` holds the row keys LevelDB received since (PRESENT
   * or null = deleted); `pending` the blind puts of written layers not yet counted, by count key
   * (their CountDelta's delta: the new entries among the resolved ones). All three are null/empty
   * while nothing is deferred.
   */
  private base: Snapshot | null = null;
  private recent: RowTable | null = null;
  private readonly pending = new Map<string, CountDelta>();
  /** Approximate bytes of `recent` and `pending`. */
  private retainedBytes = 0;

  constructor(
    readonly db: LevelDb,
    private readonly limitBytes: number,
    private readonly describe: string,
  ) {
    this.sealAt = Math.max(1, Math.floor(limitBytes / EAGER_FRACTION));
  }

  /** Layers seal at this size when LevelDB is idle; while a write is in flight they grow up to limitBytes. */
  private readonly sealAt: number;

  /**
   * Seals a layer that reached `sealAt` if LevelDB is idle (its write then overlaps with what the
   * caller does next), or once it holds limitBytes. While a write is in flight, a sealed layer
   * could only queue (and a synchronous caller would not let the write's completion through
   * anyway): growing the active layer instead keeps the layers few and their batches large.
   */
  private sealIfDue(layer: Layer): void {
    if (this.writesQueued === 0 || layer.bytes >= this.limitBytes) this.seal();
  }

  /**
   * What the buffer knows of a row without asking LevelDB: its value, null (deleted or in a
   * cleared range) or undefined (only LevelDB knows). `key` is the row key.
   */
  peek(key: Buffer): Buffer | null | undefined {
    const active = this.active;
    const v = active.rows.get(key);
    if (v !== undefined) return v;
    if (active.cleared.length > 0 && active.covers(key)) return null;
    for (let i = this.sealed.length - 1; i >= 0; i--) {
      const layer = this.sealed[i];
      const w = layer.rows.get(key);
      if (w !== undefined) return w;
      if (layer.cleared.length > 0 && layer.covers(key)) return null;
    }
    return undefined;
  }

  /** The stored bytes of the row `key`, or undefined. */
  get(key: Buffer): Buffer | undefined {
    const v = this.peek(key);
    if (v !== undefined) return v ?? undefined;
    return this.db.getSync(key);
  }

  /**
   * Whether the map entry row `key` exists, as far as known without a read: peek(), then the rows
   * LevelDB received since `base`. undefined means LevelDB holds what it held at `base` (or now,
   * when nothing is deferred) for this row: a put of it is blind.
   */
  peekForCount(key: Buffer): Buffer | null | undefined {
    const v = this.peek(key);
    if (v !== undefined || this.recent === null) return v;
    return this.recent.get(key);
  }

  /** LevelDB's count rows are exact: nothing is buffered and no blind put awaits counting. */
  get countsInDb(): boolean {
    return this.pending.size === 0 && this.bufferEmpty;
  }

  /** Nothing is buffered: callers may read LevelDB directly. */
  get bufferEmpty(): boolean {
    return (
      this.sealed.length === 0 &&
      this.active.rows.size === 0 &&
      this.active.cleared.length === 0 &&
      this.active.counts.size === 0
    );
  }

  /**
   * Buffers a write of the row `key` (its bytes are copied: the caller may reuse the buffer).
   * Reaching the size limit seals the layer and may start writing it before this returns.
   */
  put(key: Buffer, value: Buffer): void {
    const layer = this.active;
    const fresh = layer.rows.set(key, value);
    layer.bytes += key.length + value.length + 48;
    if (layer.direct) this.addToBatch(layer, !fresh, key, value);
    if (layer.bytes >= this.sealAt) this.sealIfDue(layer);
  }

  delete(key: Buffer): void {
    const layer = this.active;
    const fresh = layer.rows.set(key, null);
    layer.bytes += key.length + 48;
    if (layer.direct) this.addToBatch(layer, !fresh, key, null);
    if (layer.bytes >= this.sealAt) this.sealIfDue(layer);
  }

  /** Mirrors a row write into the layer's batch, or gives the batch up once overwrites make up a quarter of it. */
  private addToBatch(layer: Layer, overwrite: boolean, view: Buffer, value: Buffer | null): void {
    if (overwrite && ++layer.overwrites > 256 && layer.overwrites * 4 > layer.rows.size) {
      this.dropBatch(layer);
      return;
    }
    const batch = (layer.batch ??= this.db.batch());
    if (value === null) batch.del(view);
    else batch.put(view, value);
  }

  /** From now on the layer is written from its table. */
  private dropBatch(layer: Layer): void {
    layer.direct = false;
    layer.batch?.clear();
  }

  /** Deletes every row in [gte, lt). */
  deleteRange(gte: Buffer, lt: Buffer | null): void {
    const layer = this.active;
    // LevelDB batches have no range deletion: the rows go to LevelDB after db.clear, from the table.
    if (layer.direct) this.dropBatch(layer);
    layer.rows.dropRange(gte, lt);
    layer.cleared.push({
      gte: Buffer.from(gte),
      lt: lt === null ? null : Buffer.from(lt),
      strings: [gte.toString('latin1'), lt === null ? null : lt.toString('latin1')],
    });
    layer.bytes += 2 * gte.length + 48;
    if (layer.bytes >= this.sealAt) this.sealIfDue(layer);
  }

  /** The count bookkeeping of one map (key, namespace) in the active layer. */
  countDelta(countKey: string, ttl: boolean): CountDelta {
    const counts = this.active.counts;
    let d = counts.get(countKey);
    if (d === undefined) {
      d = new CountDelta(ttl);
      counts.set(countKey, d);
    }
    return d;
  }

  /**
   * The exact entry count of one map: LevelDB's count row, plus the blind puts of written layers
   * that are new entries (looked up in `base`), plus the deltas of every unwritten layer.
   */
  mapCount(countKey: string, view: Buffer): MapCount {
    const layers = this.sealed.length === 0 ? [this.active] : [...this.sealed, this.active];
    // Start from the newest layer that knows its absolute count (LevelDB may already hold it).
    let from = 0;
    let count: MapCount | null = null;
    let afterClear = false;
    for (let i = layers.length - 1; i >= 0 && count === null; i--) {
      const d = layers[i].counts.get(countKey);
      if (d?.absolute) {
        count = d.absolute;
        from = i + 1;
        afterClear = d.reset;
      }
    }
    if (count === null) {
      let needsDb = true;
      for (const layer of layers) if (layer.counts.get(countKey)?.reset) needsDb = false;
      count = needsDb ? decodeCountRow(this.db.getSync(view)) : decodeCountRow(undefined);
    }
    // Pending blind puts precede every unwritten layer (a clear in one of them discards them below).
    const p = afterClear ? undefined : this.pending.get(countKey);
    if (p !== undefined) {
      const base = this.base as Snapshot;
      if (p.unresolved > 0)
        p.resolveWith((k) => this.db.getSync(Buffer.from(k, 'latin1'), { snapshot: base }) !== undefined);
      count = { count: count.count + p.delta, newestTs: count.newestTs };
    }
    for (let i = from; i < layers.length; i++) {
      const d = layers[i].counts.get(countKey);
      if (d === undefined) continue;
      // LevelDB has not changed under an unwritten layer, so getSync tells whether a blind entry existed before it.
      if (d.unresolved > 0) d.resolveWith((k) => this.db.getSync(Buffer.from(k, 'latin1')) !== undefined);
      count = applyDelta(count, d);
    }
    return count;
  }

  /** Marks the store closed (the backend's close()); `describe` names the backend in the errors. */
  markClosed(describe: string): void {
    this.closedAs = describe;
  }

  get closed(): boolean {
    return this.closedAs !== null;
  }

  /** Throws BACKEND_CLOSED once the backend is closed. */
  checkOpen(): void {
    if (this.closedAs !== null) throw backendClosed(this.closedAs);
  }

  /** Throws the error of a failed background write (once a write was lost, nothing may continue). */
  checkHealthy(): void {
    this.checkOpen();
    if (this.failure !== null) {
      throw new StorageError(
        'STORAGE_IO',
        `a background LevelDB write in ${this.describe} failed: ${(this.failure as Error).message ?? String(this.failure)}. ` +
          'State may be incomplete: fail the task and restore from the last checkpoint.',
        { cause: this.failure },
      );
    }
  }

  /** Seals the active layer; `settle`: also when it is empty but blind puts await counting, and count them all before it is written. */
  private seal(settle = false): void {
    const layer = this.active;
    const empty = layer.rows.size === 0 && layer.cleared.length === 0 && layer.counts.size === 0;
    // An empty layer still counts what written (or sealed) layers left uncounted.
    if (empty && !(settle && (this.base !== null || this.sealed.length > 0))) return;
    layer.settle ||= settle;
    this.active = new Layer();
    this.generation++;
    this.sealed.push(layer);
    const write = async (): Promise<void> => {
      try {
        if (this.failure === null) await this.writeLayer(layer);
      } catch (err) {
        // The layer stays readable; the failure surfaces on the next access, flush or snapshot.
        this.failure = err;
      } finally {
        this.writeDone();
      }
    };
    // When nothing is being written, start at once: the batch is handed to LevelDB's thread now,
    // so the write overlaps with the synchronous state accesses that follow (a .then would wait
    // for the caller to yield).
    this.writing = this.writesQueued++ === 0 ? write() : this.writing.then(write);
  }

  /**
   * A queued write (or a snapshot's hold) ended. If LevelDB is idle now and the active layer grew
   * past `sealAt` meanwhile, it goes to LevelDB at once rather than at the next write (which may
   * not come soon: a read-only phase would keep scanning a large active layer).
   */
  private writeDone(): void {
    this.writesQueued--;
    if (this.writesQueued === 0 && this.failure === null && this.active.bytes >= this.sealAt) this.seal();
  }

  private async writeLayer(layer: Layer): Promise<void> {
    // Deferred counting relies on `recent` knowing every row written since `base`; a range
    // deletion cannot be recorded there cheaply, so a layer with one counts everything first.
    if (this.base !== null) {
      if (layer.settle || layer.cleared.length > 0 || this.retainedBytes > RETAIN_FACTOR * this.limitBytes)
        await this.countPending(layer);
    } else if (!layer.settle && layer.cleared.length === 0 && hasDeferrableBlindPuts(layer)) {
      // Before anything of this layer reaches LevelDB: its blind puts are looked up here later.
      this.base = this.db.snapshot();
      this.recent = new RowTable();
    }
    if (this.base !== null) this.deferBlindPuts(layer);
    for (const { gte, lt } of layer.cleared) await (lt === null ? this.db.clear({ gte }) : this.db.clear({ gte, lt }));
    const countRows = await this.resolveCounts(layer);
    if (layer.rows.size > 0 || countRows.length > 0) {
      const batch = (layer.batch ??= this.db.batch());
      if (!layer.direct) {
        layer.rows.forEach((key, v) => {
          if (v === null) batch.del(key);
          else batch.put(key, v);
        });
      }
      for (const [key, row] of countRows) {
        if (row === null) batch.del(key);
        else batch.put(key, row);
      }
      await batch.write();
    }
    if (this.recent !== null) this.retainRows(layer);
    this.sealed.splice(this.sealed.indexOf(layer), 1);
  }

  /**
   * The layer's uncounted blind puts join `pending` before it is written (from then on they are
   * looked up in `base`: LevelDB may hold the layer's own rows at any moment). TTL maps count
   * theirs with the layer: their count row also keeps the newest timestamp, which a count row
   * deleted at zero would lose.
   */
  private deferBlindPuts(layer: Layer): void {
    for (const [countKey, d] of layer.counts) {
      if (d.unresolved === 0 || d.ttl) continue;
      let p = this.pending.get(countKey);
      if (p === undefined) this.pending.set(countKey, (p = new CountDelta(false)));
      for (let i = d.resolved; i < d.blind.length; i++) {
        p.blind.push(d.blind[i]);
        this.retainedBytes += d.blind[i].length + 48;
      }
      d.resolved = d.blind.length;
    }
  }

  /** A written layer's row keys join `recent`: later puts of them are not blind. */
  private retainRows(layer: Layer): void {
    const recent = this.recent as RowTable;
    layer.rows.forEach((key, v) => {
      recent.set(key, v === null ? null : PRESENT);
      this.retainedBytes += key.length + 32;
    });
  }

  /**
   * Counts every pending blind put (looked up in `base`, in key order) into `layer`, which is
   * written next, and ends deferred counting: LevelDB's count rows are exact once it is written.
   */
  private async countPending(layer: Layer): Promise<void> {
    const base = this.base as Snapshot;
    await this.resolvePending([...this.pending.values()], base);
    for (const [countKey, p] of this.pending) {
      if (p.delta === 0) continue;
      let d = layer.counts.get(countKey);
      if (d === undefined) layer.counts.set(countKey, (d = new CountDelta(p.ttl)));
      if (!d.reset) d.delta += p.delta; // a clear in this layer discards them
    }
    this.pending.clear();
    this.recent = null;
    this.retainedBytes = 0;
    this.base = null;
    await base.close();
  }

  /** Resolves the unresolved blind puts of `deltas` against `snapshot` with batched lookups in key order. */
  private async resolvePending(deltas: CountDelta[], snapshot: Snapshot | null): Promise<void> {
    const probes: CountDelta[] = [];
    const starts: number[] = [];
    const probeKeys: string[] = [];
    const probeOf: number[] = [];
    for (const d of deltas) {
      if (d.unresolved === 0) continue;
      const p = probes.push(d) - 1;
      starts.push(d.resolved);
      for (let i = d.resolved; i < d.blind.length; i++) {
        probeKeys.push(d.blind[i]);
        probeOf.push(p);
      }
    }
    if (probeKeys.length === 0) return;
    // Looked up in key order: neighbouring probes then share LevelDB blocks (one block read and
    // decompressed for several), where put order scatters them over the whole database.
    const order = probeKeys
      .map((_, i) => i)
      .sort((a, b) => (probeKeys[a] < probeKeys[b] ? -1 : probeKeys[a] > probeKeys[b] ? 1 : 0));
    // getMany, not hasMany: classic-level answers hasMany with an iterator seek per key (every
    // level of the tree), getMany with point lookups that stop at the newest version.
    const found = await this.inParallel(
      order.map((i) => Buffer.from(probeKeys[i], 'latin1')),
      (keys) => (snapshot === null ? this.db.getMany(keys) : this.db.getMany(keys, { snapshot })),
    );
    const fresh = new Array<number>(probes.length).fill(0);
    for (let j = 0; j < order.length; j++) if (found[j] === undefined) fresh[probeOf[order[j]]]++;
    for (let p = 0; p < probes.length; p++) {
      const d = probes[p];
      // isEmpty() may have resolved them with getSync meanwhile (same answers): count them once.
      if (d.resolved === starts[p]) d.resolveCounted(fresh[p]);
    }
  }

  /**
   * Turns the layer's count deltas into absolute counts (LevelDB holds everything older than the
   * layer now) and reads the count rows they change with one getMany. Its blind puts are counted
   * here (one batched lookup) unless counting is deferred (`base`): then they stay uncounted and
   * join `pending` once the layer is written, except in maps whose count this layer lowers (a
   * partial count row must not go below zero), whose pending blind puts are counted now.
   */
  private async resolveCounts(layer: Layer): Promise<[Buffer, Buffer | null][]> {
    if (layer.counts.size === 0) return [];
    // Deferred or not, what is still unresolved here is looked up now (deferred: TTL maps only).
    await this.resolvePending([...layer.counts.values()], this.base);
    if (this.base !== null) {
      const lowered: [string, CountDelta][] = [];
      for (const [k, d] of layer.counts) {
        const p = this.pending.get(k);
        if (p !== undefined && !d.reset && d.delta < 0) lowered.push([k, p]);
      }
      if (lowered.length > 0) {
        await this.resolvePending(
          lowered.map(([, p]) => p),
          this.base,
        );
        for (const [k, p] of lowered) {
          if (this.pending.get(k) !== p) continue; // counted meanwhile
          (layer.counts.get(k) as CountDelta).delta += p.delta;
          this.pending.delete(k);
        }
      }
    }
    // Only counts that change are read and written: overwriting existing entries costs no count row I/O.
    const changed: [Buffer, CountDelta, string][] = [];
    for (const [k, d] of layer.counts)
      if (d.reset || d.delta !== 0 || d.newestTs !== -Infinity) changed.push([Buffer.from(k, 'latin1'), d, k]);
    const read = changed.filter(([, d]) => !d.reset).map(([k]) => k);
    const stored = read.length > 0 ? await this.inParallel(read, (keys) => this.db.getMany(keys)) : [];
    const out: [Buffer, Buffer | null][] = [];
    let si = 0;
    for (const [key, d, k] of changed) {
      const before = d.reset ? decodeCountRow(undefined) : decodeCountRow(stored[si++]);
      d.absolute = applyDelta(before, d);
      // Blind puts of written layers precede this clear: they no longer count. (Not dropped at
      // clear() itself: a layer before the clear, perhaps a snapshot point, may still count them.)
      if (d.reset) this.pending.delete(k);
      out.push([key, encodeCountRow(d.absolute, d.ttl)]);
    }
    return out;
  }

  /** Runs a many-keys LevelDB call in up to PARALLEL_LOOKUPS slices at once (each slice is one thread-pool task). */
  private async inParallel<T>(keys: Buffer[], call: (keys: Buffer[]) => Promise<T[]>): Promise<T[]> {
    if (keys.length < 2 * MIN_SLICE) return call(keys);
    const size = Math.max(MIN_SLICE, Math.ceil(keys.length / PARALLEL_LOOKUPS));
    const slices: Promise<T[]>[] = [];
    for (let i = 0; i < keys.length; i += size) slices.push(call(keys.slice(i, i + size)));
    return (await Promise.all(slices)).flat();
  }

  /**
   * Fixes a snapshot point without waiting: seals the active layer and holds back every layer
   * sealed after it. `written` resolves once LevelDB holds everything up to the point (and
   * throws if a write failed); nothing later reaches LevelDB until `release()` (call it exactly
   * once, also on failure). Reads and writes go on meanwhile, against the buffer.
   */
  hold(): { written: Promise<void>; release: () => void } {
    this.seal(true);
    const upToPoint = this.writing;
    let open: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => {
      open = resolve;
    });
    this.writesQueued++;
    this.writing = upToPoint.then(() => gate).finally(() => this.writeDone());
    return { written: upToPoint.then(() => this.checkHealthy()), release: open };
  }

  /** Writes everything buffered to LevelDB and waits for it. */
  async flush(): Promise<void> {
    this.seal();
    await this.writing;
    this.checkHealthy();
  }

  /** Writes everything buffered to LevelDB, with every blind put counted (as a snapshot point does), and waits for it. */
  async settleCounts(): Promise<void> {
    this.seal(true);
    await this.writing;
    this.checkHealthy();
  }

  /** Waits for sealed layers without sealing the active one and without throwing, then lets go of `base` (close). */
  async settle(): Promise<void> {
    await this.writing;
    const base = this.base;
    this.base = null;
    this.recent = null;
    this.pending.clear();
    await base?.close().catch(() => undefined);
  }

  /** Live buffered rows in [gte, lt), sorted, and what the buffer hides of LevelDB there (deleted rows, cleared ranges). */
  private bufferedRange(
    gte: Buffer,
    lt: Buffer | null,
  ): { rows: [string, Buffer][]; hidden: StringRange[]; shadowed: Set<string> } {
    const g = gte.toString('latin1');
    const l = lt === null ? null : lt.toString('latin1');
    const merged = new Map<string, Buffer | null>();
    const hidden: StringRange[] = [];
    for (const layer of [...this.sealed, this.active]) {
      for (const { strings: r } of layer.cleared) {
        if ((r[1] === null || r[1] > g) && (l === null || r[0] < l)) {
          hidden.push(r);
          for (const k of merged.keys()) if (inRange(k, r[0], r[1])) merged.delete(k);
        }
      }
      layer.rows.rangeAsStrings(gte, lt, (k, v) => merged.set(k, v));
    }
    const rows: [string, Buffer][] = [];
    const shadowed = new Set<string>();
    for (const [k, v] of merged) {
      if (v === null) shadowed.add(k);
      else rows.push([k, v]);
    }
    rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return { rows, hidden, shadowed };
  }

  /**
   * Rows with key in [gte, lt) in byte order: the buffer merged with a LevelDB iterator (read in
   * nextv batches). Both are captured when iteration starts; later writes are not seen.
   */
  async *range(gte: Buffer, lt: Buffer | null, batchSize = 1000): AsyncGenerator<[Buffer, Buffer]> {
    this.checkHealthy();
    const { rows: buffered, hidden, shadowed } = this.bufferedRange(gte, lt);
    const isHidden = (k: string): boolean => {
      if (shadowed.has(k)) return true;
      for (const [a, b] of hidden) if (inRange(k, a, b)) return true;
      return false;
    };
    const mayHide = hidden.length > 0 || shadowed.size > 0;
    const it = lt === null ? this.db.iterator({ gte }) : this.db.iterator({ gte, lt });
    try {
      yield* this.merged(it, buffered, isHidden, mayHide, batchSize);
    } catch (err) {
      throw this.typed(err, 'reading a range of rows');
    } finally {
      await it.close().catch(() => undefined);
    }
  }

  /** A classic-level error as BACKEND_CLOSED (closed meanwhile) or STORAGE_IO; typed errors pass through. */
  typed(err: unknown, what: string): StreamStateError {
    if (err instanceof StreamStateError) return err;
    if (this.closedAs !== null) return backendClosed(this.closedAs);
    return new StorageError(
      'STORAGE_IO',
      `${what} in ${this.describe} failed: ${(err as Error)?.message ?? String(err)}. Fail the task and restore from the last checkpoint.`,
      {
        cause: err,
      },
    );
  }

  private async *merged(
    it: { nextv(n: number): Promise<[Buffer, Buffer][]> },
    buffered: [string, Buffer][],
    isHidden: (k: string) => boolean,
    mayHide: boolean,
    batchSize: number,
  ): AsyncGenerator<[Buffer, Buffer]> {
    {
      if (buffered.length === 0 && !mayHide) {
        // The buffer knows nothing of the range (the common case of a read): LevelDB's rows as they come.
        for (let page = await it.nextv(batchSize); page.length > 0; page = await it.nextv(batchSize)) {
          for (const row of page) {
            this.checkOpen(); // closed while iterating: no further row
            yield row;
          }
        }
        return;
      }
      let bi = 0;
      let page = await it.nextv(batchSize);
      let pi = 0;
      for (;;) {
        this.checkOpen(); // closed while iterating: no further row, also none from the buffer
        if (pi >= page.length && page.length > 0) {
          page = await it.nextv(batchSize);
          pi = 0;
        }
        const dbRow = pi < page.length ? page[pi] : undefined;
        const buf = bi < buffered.length ? buffered[bi] : undefined;
        if (dbRow === undefined && buf === undefined) return;
        const dbKey = dbRow === undefined ? null : dbRow[0].toString('latin1');
        if (buf !== undefined && (dbKey === null || buf[0] <= dbKey)) {
          bi++;
          if (dbKey === buf[0]) pi++; // the buffer shadows the stored row
          yield [Buffer.from(buf[0], 'latin1'), buf[1]];
          continue;
        }
        pi++;
        if (mayHide && isHidden(dbKey as string)) continue;
        yield dbRow as [Buffer, Buffer];
      }
    }
  }
}

/** The layer has blind puts into maps without TTL that nothing counted yet. */
function hasDeferrableBlindPuts(layer: Layer): boolean {
  for (const d of layer.counts.values()) if (d.unresolved > 0 && !d.ttl) return true;
  return false;
}

export function backendClosed(describe: string): StreamStateError {
  return backendClosedError(describe);
}
