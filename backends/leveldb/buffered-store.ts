import type { ClassicLevel } from 'classic-level';
import { StorageError } from '../../src/errors.js';

/**
 * LevelDB behind an in-memory write buffer, so that point reads and writes are synchronous.
 *
 * Writes land in the active layer: a Map keyed by the row key's latin1 string (null = deleted)
 * plus range deletions (MapState.clear has no synchronous way to enumerate its rows). When the
 * layer holds `limitBytes` it is sealed and written to LevelDB (its range deletions with
 * db.clear, then its rows in one batch); sealed layers are written one after another, in order,
 * and stay readable until LevelDB has them. Reads look at the layers newest first, then call
 * db.getSync. Iteration merges the layers with a LevelDB iterator in byte order.
 */

export type LevelDb = ClassicLevel<Buffer, Buffer>;

/** [gte, lt) as latin1 strings; lt null = unbounded. */
type StringRange = readonly [gte: string, lt: string | null];

class Layer {
  readonly rows = new Map<string, Buffer | null>();
  readonly cleared: StringRange[] = [];
  bytes = 0;

  covers(key: string): boolean {
    for (const [gte, lt] of this.cleared) if (key >= gte && (lt === null || key < lt)) return true;
    return false;
  }
}

function inRange(key: string, gte: string, lt: string | null): boolean {
  return key >= gte && (lt === null || key < lt);
}

export class BufferedStore {
  private active = new Layer();
  /** Sealed layers not yet in LevelDB, oldest first. */
  private readonly sealed: Layer[] = [];
  private writing: Promise<void> = Promise.resolve();
  private failure: unknown = null;

  constructor(
    readonly db: LevelDb,
    private readonly limitBytes: number,
    private readonly describe: string,
  ) {}

  /** The stored bytes, or undefined. `view` is the row key as bytes (used only on a buffer miss). */
  get(key: string, view: Buffer): Buffer | undefined {
    let v = this.active.rows.get(key);
    if (v !== undefined) return v === null ? undefined : v;
    if (this.active.cleared.length > 0 && this.active.covers(key)) return undefined;
    for (let i = this.sealed.length - 1; i >= 0; i--) {
      const layer = this.sealed[i];
      v = layer.rows.get(key);
      if (v !== undefined) return v === null ? undefined : v;
      if (layer.cleared.length > 0 && layer.covers(key)) return undefined;
    }
    return this.db.getSync(view);
  }

  put(key: string, value: Buffer): void {
    this.active.rows.set(key, value);
    this.active.bytes += key.length + value.length + 48;
    if (this.active.bytes >= this.limitBytes) this.seal();
  }

  delete(key: string): void {
    this.active.rows.set(key, null);
    this.active.bytes += key.length + 48;
    if (this.active.bytes >= this.limitBytes) this.seal();
  }

  /** Deletes every row in [gte, lt). */
  deleteRange(gte: Buffer, lt: Buffer | null): void {
    const g = gte.toString('latin1');
    const l = lt === null ? null : lt.toString('latin1');
    for (const k of this.active.rows.keys()) if (inRange(k, g, l)) this.active.rows.delete(k);
    this.active.cleared.push([g, l]);
    this.active.bytes += 2 * gte.length + 48;
    if (this.active.bytes >= this.limitBytes) this.seal();
  }

  /** Throws the error of a failed background write (once a write was lost, nothing may continue). */
  checkHealthy(): void {
    if (this.failure !== null) {
      throw new StorageError(
        'STORAGE_IO',
        `a background LevelDB write in ${this.describe} failed: ${(this.failure as Error).message ?? String(this.failure)}. ` +
          'State may be incomplete: fail the task and restore from the last checkpoint.',
        { cause: this.failure },
      );
    }
  }

  private seal(): void {
    const layer = this.active;
    if (layer.rows.size === 0 && layer.cleared.length === 0) return;
    this.active = new Layer();
    this.sealed.push(layer);
    this.writing = this.writing.then(async () => {
      if (this.failure !== null) return;
      try {
        for (const [gte, lt] of layer.cleared) {
          const g = Buffer.from(gte, 'latin1');
          await (lt === null ? this.db.clear({ gte: g }) : this.db.clear({ gte: g, lt: Buffer.from(lt, 'latin1') }));
        }
        if (layer.rows.size > 0) {
          const batch = this.db.batch();
          for (const [k, v] of layer.rows) {
            const key = Buffer.from(k, 'latin1');
            if (v === null) batch.del(key);
            else batch.put(key, v);
          }
          await batch.write();
        }
        this.sealed.splice(this.sealed.indexOf(layer), 1);
      } catch (err) {
        // The layer stays readable; the failure surfaces on the next access, flush or snapshot.
        this.failure = err;
      }
    });
  }

  /** Writes everything buffered to LevelDB and waits for it. */
  async flush(): Promise<void> {
    this.seal();
    await this.writing;
    this.checkHealthy();
  }

  /** Waits for sealed layers without sealing the active one and without throwing (close). */
  async settle(): Promise<void> {
    await this.writing;
  }

  /** Live buffered rows in [gte, lt), sorted, and what the buffer hides of LevelDB there (deleted rows, cleared ranges). */
  private bufferedRange(gte: Buffer, lt: Buffer | null): { rows: [string, Buffer][]; hidden: StringRange[]; deleted: Set<string> } {
    const g = gte.toString('latin1');
    const l = lt === null ? null : lt.toString('latin1');
    const merged = new Map<string, Buffer | null>();
    const hidden: StringRange[] = [];
    for (const layer of [...this.sealed, this.active]) {
      for (const r of layer.cleared) {
        if ((r[1] === null || r[1] > g) && (l === null || r[0] < l)) {
          hidden.push(r);
          for (const k of merged.keys()) if (inRange(k, r[0], r[1])) merged.delete(k);
        }
      }
      for (const [k, v] of layer.rows) if (inRange(k, g, l)) merged.set(k, v);
    }
    const rows: [string, Buffer][] = [];
    for (const [k, v] of merged) if (v !== null) rows.push([k, v]);
    rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const deleted = new Set<string>();
    for (const [k, v] of merged) if (v === null) deleted.add(k);
    return { rows, hidden, deleted };
  }

  /**
   * Rows with key in [gte, lt) in byte order: the buffer merged with a LevelDB iterator (read in
   * nextv batches). Both are captured when iteration starts; later writes are not seen.
   */
  async *range(gte: Buffer, lt: Buffer | null, batchSize = 1000): AsyncGenerator<[Buffer, Buffer]> {
    this.checkHealthy();
    const { rows: buffered, hidden, deleted } = this.bufferedRange(gte, lt);
    const isHidden = (k: string): boolean => {
      if (deleted.has(k)) return true;
      for (const [a, b] of hidden) if (inRange(k, a, b)) return true;
      return false;
    };
    const mayHide = hidden.length > 0 || deleted.size > 0;
    const it = lt === null ? this.db.iterator({ gte }) : this.db.iterator({ gte, lt });
    try {
      let bi = 0;
      let page = await it.nextv(batchSize);
      let pi = 0;
      for (;;) {
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
    } finally {
      await it.close();
    }
  }
}
