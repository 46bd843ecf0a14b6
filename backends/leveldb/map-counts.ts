/**
 * Entry counts of map states (the count rows of row-keys.ts: u32 BE count, plus the newest f64
 * BE timestamp for TTL maps) kept as deltas in the write buffer.
 *
 * MapState.put must not read LevelDB synchronously to learn whether its entry is new, so a put
 * whose entry the write buffer knows nothing about is recorded as "blind": it adds 1 to the count
 * if the entry was not in LevelDB. Looking that up costs a random LevelDB read per put, about
 * seven times a batched write, so it is deferred until a count is needed (buffered-store.ts):
 * a written layer's blind puts stay uncounted ("pending") and are looked up in a LevelDB snapshot
 * taken before the first such layer was written, while the row keys written since are kept so
 * that later puts of them are not blind. They are counted for isEmpty() of their map (getSync),
 * before a layer lowers their map's count, and all at once, sorted in key order (neighbouring
 * lookups share LevelDB blocks), at every snapshot point, before a range deletion reaches
 * LevelDB, and when what is kept outgrows a multiple of the write buffer. LevelDB's count rows
 * are exact at every snapshot point; in between a count row plus its map's pending new entries
 * is the count. TTL maps count their blind puts when their layer is written (a count row deleted
 * at zero would lose the newest timestamp).
 */
export class CountDelta {
  /** clear() ran in this layer: the count restarts from zero (earlier entries are gone). */
  reset = false;
  /** Known change of the count in this layer. */
  delta = 0;
  /** Newest entry timestamp written in this layer (TTL maps), -Infinity when none. */
  newestTs = -Infinity;
  /** Entry row keys (latin1) put without knowing whether LevelDB held them (pending: as of the deferral's snapshot). */
  blind: string[] = [];
  /** blind[0, resolved) are already counted in `delta`. */
  resolved = 0;
  /** The count (and newest timestamp) after this layer, set before the layer is written. */
  absolute: { readonly count: number; readonly newestTs: number } | null = null;

  constructor(readonly ttl: boolean) {}

  /** Forgets everything before a clear(). */
  clear(): void {
    this.reset = true;
    this.delta = 0;
    this.newestTs = -Infinity;
    this.blind = [];
    this.resolved = 0;
  }

  noteTimestamp(row: Buffer): void {
    // TTL map values are the codec header followed by the f64 timestamp of the TTL wrapper.
    if (this.ttl && row.length >= 9) {
      const ts = row.readDoubleBE(1);
      if (ts > this.newestTs) this.newestTs = ts;
    }
  }

  /** Counts the unresolved blind puts; `existed(key)` says whether LevelDB holds the entry. */
  resolveWith(existed: (key: string) => boolean): void {
    for (let i = this.resolved; i < this.blind.length; i++) if (!existed(this.blind[i])) this.delta++;
    this.resolved = this.blind.length;
  }

  /** Resolves every unresolved blind put at once, `fresh` of them new entries. */
  resolveCounted(fresh: number): void {
    this.delta += fresh;
    this.resolved = this.blind.length;
  }

  get unresolved(): number {
    return this.blind.length - this.resolved;
  }
}

export interface MapCount {
  readonly count: number;
  readonly newestTs: number;
}

export const NO_ENTRIES: MapCount = { count: 0, newestTs: -Infinity };

export function decodeCountRow(row: Buffer | undefined): MapCount {
  if (row === undefined) return NO_ENTRIES;
  return { count: row.readUInt32BE(0), newestTs: row.length >= 12 ? row.readDoubleBE(4) : -Infinity };
}

/** The count row of `count` (null: delete the row, the map is empty). */
export function encodeCountRow(count: MapCount, ttl: boolean): Buffer | null {
  if (count.count <= 0) return null;
  const b = Buffer.allocUnsafe(ttl ? 12 : 4);
  b.writeUInt32BE(count.count, 0);
  if (ttl) b.writeDoubleBE(count.newestTs, 4);
  return b;
}

/** The count after a layer's delta, starting from `before`. */
export function applyDelta(before: MapCount, d: CountDelta): MapCount {
  const base = d.reset ? NO_ENTRIES : before;
  return { count: base.count + d.delta, newestTs: Math.max(base.newestTs, d.newestTs) };
}
