import type { KeyGroupRange } from '../../src/keygroups/key-groups.js';
import type { BufferedStore } from './buffered-store.js';
import { countRowStateId, decodeRowKey, isCountRowStateId, keyGroupPrefix } from './row-keys.js';
import { ValueCodec } from './value-codec.js';

/**
 * TTL cleanup for LevelDB (docs/ARCHITECTURE.md, "TTL cleanup in LevelDB"): expired rows are
 * removed physically, so TTL state does not grow without bound when expired keys are never read
 * again. LevelDB has no compaction filter we can hook, so a sweep walks the backend's rows in key
 * order, a bounded number per step, and resumes where the last step stopped (wrapping around at
 * the end of the key-group range). Steps run in the background after every `everyAccesses`
 * accesses of TTL states, and on demand (sweepExpiredRows()).
 *
 * A step reads rows asynchronously, but the decision to delete is made synchronously against the
 * row's current bytes (store.get): state accesses are synchronous, so a row refreshed or rewritten
 * after the step read it is never deleted. Per kind:
 *  - value / reducing / aggregating rows: deleted when their timestamp has expired;
 *  - map entries: deleted when expired, with the map's entry count decremented (as remove() does);
 *  - list base and chunk rows: expired elements are dropped (the row is rewritten, or deleted when
 *    none is left); a chunk counter whose list has no rows left is deleted.
 */

export interface TtlCleanupOptions {
  /** Rows one background step reads at most (default 1000). */
  readonly rowsPerSweep?: number;
  /** A background step starts after this many accesses of TTL states (default 1000). */
  readonly everyAccesses?: number;
}

export const DEFAULT_SWEEP_ROWS = 1000;
export const DEFAULT_SWEEP_EVERY_ACCESSES = 1000;

/** A registered TTL state the sweep may clean. */
export interface SweepTarget {
  readonly kind: 'value' | 'list' | 'map' | 'reducing' | 'aggregating';
  readonly ttlMs: number;
  /** Map states whose count rows keep the newest timestamp (LevelMapState's `ttl`). */
  readonly countsTimestamps: boolean;
}

export interface SweepResult {
  /** Rows read (plus point lookups of chunk rows behind a counter). */
  readonly scanned: number;
  /** Rows deleted (entries, values, list rows, counters). */
  readonly removed: number;
  /** List rows rewritten without their expired elements. */
  readonly rewritten: number;
  /** The step reached the end of the key-group range (the next one starts from the beginning). */
  readonly wrapped: boolean;
}

/** The element bytes [start, end) of each element of a list row (header + (varint length + bytes)*). */
function listElements(row: Buffer): Array<[start: number, end: number, at: number]> {
  const out: Array<[number, number, number]> = [];
  let pos = 1;
  while (pos < row.length) {
    const at = pos;
    let len = 0;
    let mul = 1;
    for (;;) {
      const b = row[pos++];
      len += (b & 0x7f) * mul;
      if ((b & 0x80) === 0 || pos >= row.length) break;
      mul *= 0x80;
    }
    out.push([pos, Math.min(pos + len, row.length), at]);
    pos += len;
  }
  return out;
}

/** A row key with another state id (same key group, key and namespace). */
function withStateId(rowKey: Buffer, end: number, stateId: number): Buffer {
  const out = Buffer.from(rowKey.subarray(0, end));
  out.writeUInt16BE(stateId, 2);
  return out;
}

export class TtlSweeper {
  /** Where the next step starts (null: at the beginning of the range). */
  private cursor: Buffer | null = null;
  private running: Promise<SweepResult> | null = null;
  private accesses = 0;
  private readonly rowsPerSweep: number;
  private readonly everyAccesses: number;
  /** The last background step's failure (background steps never throw at the caller). */
  lastError: unknown = null;

  constructor(
    private readonly store: BufferedStore,
    private readonly range: KeyGroupRange,
    private readonly targets: ReadonlyMap<number, SweepTarget>,
    private readonly clock: () => number,
    opts: TtlCleanupOptions,
  ) {
    this.rowsPerSweep = Math.max(1, opts.rowsPerSweep ?? DEFAULT_SWEEP_ROWS);
    this.everyAccesses = Math.max(1, opts.everyAccesses ?? DEFAULT_SWEEP_EVERY_ACCESSES);
  }

  /** Counts an access of a TTL state; every `everyAccesses` starts a background step (unless one runs). */
  readonly accessed = (): void => {
    if (++this.accesses < this.everyAccesses) return;
    this.accesses = 0;
    if (this.running !== null || this.store.closed) return;
    this.sweep(this.rowsPerSweep).catch((err: unknown) => {
      this.lastError = err;
    });
  };

  /** Waits for a running step (close()). */
  async idle(): Promise<void> {
    await this.running?.catch(() => undefined);
  }

  /** One step over at most `maxRows` rows, after the running one (if any). */
  async sweep(maxRows = this.rowsPerSweep): Promise<SweepResult> {
    while (this.running !== null) await this.running.catch(() => undefined);
    const step = this.step(maxRows);
    this.running = step;
    try {
      return await step;
    } finally {
      this.running = null;
    }
  }

  private async step(maxRows: number): Promise<SweepResult> {
    const gte = this.cursor ?? keyGroupPrefix(this.range.start);
    const lt = keyGroupPrefix(this.range.end + 1);
    let scanned = 0;
    let removed = 0;
    let rewritten = 0;
    let wrapped = true;
    if (this.targets.size === 0) return { scanned, removed, rewritten, wrapped };
    for await (const [k, v] of this.store.range(gte, lt)) {
      if (scanned >= maxRows) {
        this.cursor = Buffer.from(k);
        wrapped = false;
        break;
      }
      scanned++;
      if (this.store.closed) return { scanned, removed, rewritten, wrapped: false };
      const r = this.visit(k, v, this.clock());
      scanned += r.lookups;
      removed += r.removed;
      rewritten += r.rewritten;
    }
    if (wrapped) this.cursor = null;
    return { scanned, removed, rewritten, wrapped };
  }

  /** Cleans one row; synchronous, so the row cannot change between the check and the write. */
  private visit(k: Buffer, v: Buffer, now: number): { removed: number; rewritten: number; lookups: number } {
    const none = { removed: 0, rewritten: 0, lookups: 0 };
    if (k.length < 6) return none;
    const sid = k.readUInt16BE(2);
    const store = this.store;
    const current = (): boolean => store.get(k)?.equals(v) === true;
    if (isCountRowStateId(sid)) {
      const target = this.targets.get(sid & 0x7fff);
      return target?.kind === 'list' ? this.visitCounter(k, v, sid & 0x7fff) : none;
    }
    const target = this.targets.get(sid);
    if (target === undefined) return none;
    const expired = (bytes: Buffer, at: number): boolean =>
      bytes.length >= at + 8 && bytes.readDoubleBE(at) + target.ttlMs <= now;
    if (target.kind === 'list') {
      const elements = listElements(v);
      const kept = elements.filter(([start]) => !expired(v, start));
      if (kept.length === elements.length || !current()) return none;
      if (kept.length === 0) {
        store.delete(k);
        return { removed: 1, rewritten: 0, lookups: 0 };
      }
      const parts = [v.subarray(0, 1), ...kept.map(([, end, at]) => v.subarray(at, end))];
      store.put(k, Buffer.concat(parts));
      return { removed: 0, rewritten: 1, lookups: 0 };
    }
    if (target.kind === 'map') {
      if (ValueCodec.isNull(v) || !expired(v, 1) || !current()) return none;
      const row = decodeRowKey(k);
      const counter = withStateId(k, k.length - row.userKey.length, countRowStateId(sid));
      store.countDelta(counter.toString('latin1'), target.countsTimestamps).delta--;
      store.delete(k);
      return { removed: 1, rewritten: 0, lookups: 0 };
    }
    if (!expired(v, 1) || !current()) return none;
    store.delete(k);
    return { removed: 1, rewritten: 0, lookups: 0 };
  }

  /** A list's chunk counter (states.ts) whose base row and chunk rows are all gone is deleted. */
  private visitCounter(k: Buffer, v: Buffer, stateId: number): { removed: number; rewritten: number; lookups: number } {
    const store = this.store;
    if (v.length < 4 || store.get(k)?.equals(v) !== true) return { removed: 0, rewritten: 0, lookups: 1 };
    const base = withStateId(k, k.length, stateId);
    const n = v.readUInt32BE(0);
    let lookups = 1;
    if (store.get(base) !== undefined) return { removed: 0, rewritten: 0, lookups };
    const chunk = Buffer.alloc(base.length + 4);
    base.copy(chunk, 0);
    for (let seq = 1; seq <= n; seq++) {
      chunk.writeUInt32BE(seq, base.length);
      lookups++;
      if (store.get(chunk) !== undefined) return { removed: 0, rewritten: 0, lookups };
    }
    store.delete(k);
    return { removed: 1, rewritten: 0, lookups };
  }
}
