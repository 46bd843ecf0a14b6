import { appendFile, mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeyGroupRangeJson } from '../backend/handles.js';
import { StorageError, StreamStateError } from '../errors.js';
import { ByteReader, ByteWriter } from '../format/bytes.js';
import type { RawKeyGroup, RawSection } from '../format/key-groups-stream.js';

/**
 * External partitioning of encoded key-groups entries by their (new) key group: entries arrive in
 * any key-group order (a source key group scatters over many target key groups when the max
 * parallelism changes), are appended to one temporary file per bucket (a contiguous key-group
 * range), and are read back bucket by bucket, grouped into key groups in ascending order.
 * Memory: the write buffers (bounded by `bufferBytes` in total) while adding, one bucket (its file
 * and a sorted copy) while reading; so a bucket should be planned to hold about `bucketBytes`.
 *
 *   spill file := (varint keyGroup | varint stateId | varint length | entry bytes)*
 *
 * Entries are the self-delimiting encodings of docs/FORMAT.md ("Key-groups stream"), so a
 * bucket's key group reads back as sections that any key-groups writer accepts.
 */

export interface SpillBucket {
  /** Target subtask whose key-group range holds the bucket (buckets never span two subtasks). */
  readonly subtask: number;
  readonly range: KeyGroupRangeJson;
}

/** Default bytes of one bucket: what reading one back holds in memory (about twice this). */
export const DEFAULT_BUCKET_BYTES = 64 * 1024 * 1024;
/** Default total of the per-bucket write buffers. */
export const DEFAULT_SPILL_BUFFER_BYTES = 32 * 1024 * 1024;

/**
 * Buckets for `parallelism` subtasks over `maxParallelism` key groups: each subtask's range is
 * split into as many contiguous pieces as `estimatedBytes` (spread evenly over key groups, as
 * the hash spreads keys) needs to keep each near `bucketBytes`.
 */
export function planSpillBuckets(
  ranges: readonly KeyGroupRangeJson[],
  maxParallelism: number,
  estimatedBytes: number,
  bucketBytes = DEFAULT_BUCKET_BYTES,
): SpillBucket[] {
  const out: SpillBucket[] = [];
  ranges.forEach((range, subtask) => {
    const size = range.end - range.start + 1;
    if (size <= 0) return;
    const bytes = (estimatedBytes * size) / maxParallelism;
    const pieces = Math.max(1, Math.min(size, Math.ceil(bytes / Math.max(1, bucketBytes))));
    for (let p = 0; p < pieces; p++) {
      const start = range.start + Math.floor((p * size) / pieces);
      const end = range.start + Math.floor(((p + 1) * size) / pieces) - 1;
      out.push({ subtask, range: { start, end } });
    }
  });
  return out;
}

export class KeyGroupSpill {
  private readonly bucketOf: Int32Array;
  private readonly buffers: (ByteWriter | undefined)[];
  private readonly full = new Set<number>();
  private readonly flushAt: number;
  private readonly written: boolean[];
  private entries = 0;

  /**
   * `dir` is created and owned by the spill (removed by `close`). Buckets must be disjoint and
   * cover every key group entries will be added for.
   */
  constructor(
    private readonly dir: string,
    readonly maxParallelism: number,
    readonly buckets: readonly SpillBucket[],
    opts: { bufferBytes?: number } = {},
  ) {
    this.bucketOf = new Int32Array(maxParallelism).fill(-1);
    buckets.forEach((b, i) => {
      for (let kg = b.range.start; kg <= b.range.end; kg++) this.bucketOf[kg] = i;
    });
    this.buffers = buckets.map(() => undefined);
    this.written = buckets.map(() => false);
    const total = opts.bufferBytes ?? DEFAULT_SPILL_BUFFER_BYTES;
    this.flushAt = Math.max(16 * 1024, Math.min(1024 * 1024, Math.floor(total / Math.max(1, buckets.length))));
  }

  async open(): Promise<void> {
    await this.io(() => mkdir(this.dir, { recursive: true }), `creating ${this.dir}`);
  }

  /** Entries added so far. */
  get size(): number {
    return this.entries;
  }

  /** Buffers one encoded entry (copied); call `drain` now and then to bound memory. */
  add(keyGroup: number, stateId: number, entry: Uint8Array): void {
    const bucket = keyGroup < this.maxParallelism ? this.bucketOf[keyGroup] : -1;
    if (bucket < 0) throw new StreamStateError('INVALID_ARGUMENT', `key group ${keyGroup} lies in no spill bucket (maxParallelism ${this.maxParallelism})`);
    let w = this.buffers[bucket];
    if (w === undefined) {
      w = new ByteWriter(Math.min(this.flushAt, 64 * 1024));
      this.buffers[bucket] = w;
    }
    w.varint(keyGroup).varint(stateId).bytes(entry);
    this.entries++;
    if (w.length >= this.flushAt) this.full.add(bucket);
  }

  /** Writes out the buffers that reached their share of the memory budget. */
  async drain(): Promise<void> {
    if (this.full.size === 0) return;
    const full = [...this.full];
    this.full.clear();
    for (const b of full) await this.flushBucket(b);
  }

  /** Writes out every buffer; call once after the last `add`, before reading. */
  async finishWriting(): Promise<void> {
    this.full.clear();
    for (let b = 0; b < this.buckets.length; b++) await this.flushBucket(b);
    this.buffers.fill(undefined);
  }

  /**
   * The key groups of bucket `index` in ascending order, each with one section per state id
   * (ascending), entries in the order they were added. Holds the bucket in memory.
   */
  async *readBucket(index: number): AsyncGenerator<RawKeyGroup> {
    if (!this.written[index]) return;
    const data = await this.io(() => readFile(this.fileOf(index)), `reading ${this.fileOf(index)}`);
    const r = new ByteReader(data, `spill file ${this.fileOf(index)}`);
    const kgs: number[] = [];
    const ids: number[] = [];
    const starts: number[] = [];
    const ends: number[] = [];
    while (!r.done) {
      kgs.push(r.varint());
      ids.push(r.varint());
      const len = r.varint();
      starts.push(r.pos);
      r.skip(len);
      ends.push(r.pos);
    }
    const order = Array.from({ length: kgs.length }, (_, i) => i);
    // Stable: entries of one key group and state keep the order they were added in.
    order.sort((a, b) => kgs[a] - kgs[b] || ids[a] - ids[b] || a - b);
    const sorted = Buffer.allocUnsafe(data.length);
    let at = 0;
    let i = 0;
    while (i < order.length) {
      const kg = kgs[order[i]];
      const sections: RawSection[] = [];
      while (i < order.length && kgs[order[i]] === kg) {
        const id = ids[order[i]];
        const start = at;
        let count = 0;
        while (i < order.length && kgs[order[i]] === kg && ids[order[i]] === id) {
          const e = order[i];
          at += data.copy(sorted, at, starts[e], ends[e]);
          count++;
          i++;
        }
        sections.push({ stateId: id, entryCount: count, bytes: sorted.subarray(start, at) });
      }
      yield { keyGroup: kg, sections };
    }
  }

  /** Removes the spill files. Idempotent. */
  async close(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }

  private fileOf(bucket: number): string {
    return join(this.dir, `bucket-${bucket}`);
  }

  private async flushBucket(bucket: number): Promise<void> {
    const w = this.buffers[bucket];
    if (w === undefined || w.length === 0) return;
    await this.io(() => appendFile(this.fileOf(bucket), w.view()), `writing ${this.fileOf(bucket)}`);
    this.written[bucket] = true;
    w.reset();
  }

  private async io<T>(fn: () => Promise<T>, what: string): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new StorageError('STORAGE_IO', `${what} (scratch space of the max-parallelism change) failed: ${(err as Error).message}. Free disk space next to the destination and try again.`, { cause: err });
    }
  }
}
