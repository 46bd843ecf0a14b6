import { appendFile, mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeyGroupRangeJson } from '../backend/handles.js';
import { StorageError, StreamStateError } from '../errors.js';
import { ByteReader, ByteWriter } from '../format/bytes.js';
import type { CanonicalKeyGroupsWriter } from '../format/canonical-layout.js';
import type { SectionSplit } from './rehash-split.js';

/**
 * External partitioning of encoded key-groups entries by their (new) key group: entries arrive in
 * any key-group order (a source key group scatters over many target key groups when the max
 * parallelism changes), are appended to one temporary file per bucket (a contiguous key-group
 * range), and are read back bucket by bucket, grouped into key groups in ascending order.
 * Entries travel in runs: `addSplit` appends one run per (source section, new key group), `add`
 * a run of one entry; reading back sorts runs, not entries.
 * Memory: the write buffers (bounded by `bufferBytes` in total) while adding, one bucket's file
 * (in a buffer reused from bucket to bucket) while reading; so a bucket should be planned to hold
 * about `bucketBytes`.
 *
 *   spill file := (varint keyGroup | varint stateId | varint entries | varint length | entry bytes)*
 *
 * Entries are the self-delimiting encodings of docs/FORMAT.md ("Key-groups stream"), so a
 * bucket's key group reads back as sections that any key-groups writer accepts.
 */

/**
 * The entries of one key group read back from a spill, as `count` runs in the order they were
 * added: run j is `entryCounts[j]` whole entries of state `stateIds[j]` in
 * `data[starts[j], ends[j])`; when `sources` is set (KeyGroupIndex, which keeps section copies
 * instead of a file), run j lies in `sources[sourceIds[j]]` instead of `data`. The buffers are
 * valid until the next bucket is read.
 */
export interface SpilledKeyGroup {
  readonly keyGroup: number;
  readonly data: Buffer;
  readonly sources?: readonly Uint8Array[];
  readonly sourceIds?: Int32Array;
  readonly count: number;
  readonly stateIds: Int32Array;
  readonly entryCounts: Int32Array;
  readonly starts: Int32Array;
  readonly ends: Int32Array;
}

/** Writes spilled key groups, run by run, into a canonical writer; returns how many key groups. */
export async function writeSpilledKeyGroups(
  keyGroups: AsyncIterable<SpilledKeyGroup>,
  writer: CanonicalKeyGroupsWriter,
): Promise<number> {
  let written = 0;
  for await (const kg of keyGroups) {
    writer.beginKeyGroup(kg.keyGroup);
    const { sources, sourceIds } = kg;
    for (let j = 0; j < kg.count; j++) {
      const data = sources === undefined || sourceIds === undefined ? kg.data : sources[sourceIds[j]];
      writer.addRawRange(kg.stateIds[j], kg.entryCounts[j], data, kg.starts[j], kg.ends[j]);
    }
    await writer.endKeyGroup();
    written++;
  }
  return written;
}

export interface SpillBucket {
  /** Target subtask whose key-group range holds the bucket (buckets never span two subtasks). */
  readonly subtask: number;
  readonly range: KeyGroupRangeJson;
}

/** Default bytes of one bucket: what reading one back holds in memory (about twice this). */
export const DEFAULT_BUCKET_BYTES = 64 * 1024 * 1024;
/** Default total of the per-bucket write buffers. */
export const DEFAULT_SPILL_BUFFER_BYTES = 32 * 1024 * 1024;
/** Spill files are read back in pieces of at most this size (below the largest single read). */
const READ_CHUNK = 1024 * 1024 * 1024;

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
  /** Holds the bucket being read back; reused for the next one. */
  private readBuffer: Buffer = Buffer.alloc(0);

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
    // Up to 4 MiB per append: fewer, longer sequential writes.
    this.flushAt = Math.max(16 * 1024, Math.min(4 * 1024 * 1024, Math.floor(total / Math.max(1, buckets.length))));
  }

  async open(): Promise<void> {
    await this.io(() => mkdir(this.dir, { recursive: true }), `creating ${this.dir}`);
  }

  /** Entries added so far. */
  get size(): number {
    return this.entries;
  }

  /** Buffers one encoded entry, `bytes[start, end)` (copied); call `drain` now and then to bound memory. */
  add(keyGroup: number, stateId: number, bytes: Uint8Array, start: number, end: number): void {
    const w = this.bufferOf(keyGroup);
    w.varint(keyGroup)
      .varint(stateId)
      .varint(1)
      .varint(end - start)
      .rawRange(bytes, start, end);
    this.entries++;
    this.noteFull(keyGroup, w);
  }

  /**
   * Buffers the entries of `bytes`, the section `split` last split, one run per new key group
   * (copied); call `drain` now and then to bound memory.
   */
  addSplit(stateId: number, bytes: Uint8Array, split: SectionSplit): void {
    for (let g = 0; g < split.groups; g++) {
      const keyGroup = split.groupKeyGroups[g];
      const w = this.bufferOf(keyGroup);
      const n = split.entriesOf(g);
      w.varint(keyGroup).varint(stateId).varint(n).varint(split.groupBytes[g]);
      split.writeGroup(bytes, g, w);
      this.entries += n;
      this.noteFull(keyGroup, w);
    }
  }

  private bufferOf(keyGroup: number): ByteWriter {
    const bucket = keyGroup >= 0 && keyGroup < this.maxParallelism ? this.bucketOf[keyGroup] : -1;
    if (bucket < 0)
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `key group ${keyGroup} lies in no spill bucket (maxParallelism ${this.maxParallelism})`,
      );
    let w = this.buffers[bucket];
    if (w === undefined) {
      w = new ByteWriter(Math.min(this.flushAt, 64 * 1024));
      this.buffers[bucket] = w;
    }
    return w;
  }

  private noteFull(keyGroup: number, w: ByteWriter): void {
    if (w.length >= this.flushAt) this.full.add(this.bucketOf[keyGroup]);
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
   * The key groups of bucket `index` in ascending order, each with its runs in the order they
   * were added (a counting sort by key group: no comparisons). Holds the bucket's file in memory,
   * in a buffer the next readBucket reuses.
   */
  async *readBucket(index: number): AsyncGenerator<SpilledKeyGroup> {
    if (!this.written[index]) return;
    const { start: first, end: last } = this.buckets[index].range;
    const data = await this.io(() => this.readWhole(this.fileOf(index)), `reading ${this.fileOf(index)}`);
    const what = `spill file ${this.fileOf(index)}`;
    // Pass 1: runs per key group.
    const perKeyGroup = new Int32Array(last - first + 2);
    let n = 0;
    const r = new ByteReader(data, what);
    while (!r.done) {
      const kg = r.varint();
      if (kg < first || kg > last)
        throw new StreamStateError(
          'INVALID_ARGUMENT',
          `${what}: key group ${kg} outside its bucket [${first}, ${last}]`,
        );
      perKeyGroup[kg - first + 1]++;
      r.varint();
      r.varint();
      r.skip(r.varint());
      n++;
    }
    for (let k = 1; k < perKeyGroup.length; k++) perKeyGroup[k] += perKeyGroup[k - 1];
    // Pass 2: place each entry at its key group's next slot (stable).
    const next = perKeyGroup.slice();
    const stateIds = new Int32Array(n);
    const entryCounts = new Int32Array(n);
    const starts = new Int32Array(n);
    const ends = new Int32Array(n);
    r.pos = 0;
    while (!r.done) {
      const at = next[r.varint() - first]++;
      stateIds[at] = r.varint();
      entryCounts[at] = r.varint();
      const len = r.varint();
      starts[at] = r.pos;
      r.skip(len);
      ends[at] = r.pos;
    }
    for (let k = 0; k < perKeyGroup.length - 1; k++) {
      const from = perKeyGroup[k];
      const to = perKeyGroup[k + 1];
      if (to === from) continue;
      yield {
        keyGroup: first + k,
        data,
        count: to - from,
        stateIds: stateIds.subarray(from, to),
        entryCounts: entryCounts.subarray(from, to),
        starts: starts.subarray(from, to),
        ends: ends.subarray(from, to),
      };
    }
  }

  /**
   * Writes the key groups of bucket `index` into `writer` (canonical state ids), ascending.
   * Returns the number of key groups written.
   */
  async writeBucket(index: number, writer: CanonicalKeyGroupsWriter): Promise<number> {
    return writeSpilledKeyGroups(this.readBucket(index), writer);
  }

  /** Removes the spill files. Idempotent. */
  async close(): Promise<void> {
    this.readBuffer = Buffer.alloc(0);
    await rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }

  /**
   * The whole file, in `readBuffer` (grown when too small): buckets are read one after another,
   * so one buffer serves them all and reading back allocates no fresh memory per bucket.
   */
  private async readWhole(file: string): Promise<Buffer> {
    const fh = await open(file, 'r');
    try {
      const { size } = await fh.stat();
      if (this.readBuffer.length < size) {
        this.readBuffer = Buffer.alloc(0); // the old one can go before the new one is allocated
        this.readBuffer = Buffer.allocUnsafeSlow(size);
      }
      let filled = 0;
      while (filled < size) {
        const { bytesRead } = await fh.read(this.readBuffer, filled, Math.min(size - filled, READ_CHUNK), filled);
        if (bytesRead === 0) throw new Error(`${file} ended at ${filled} of ${size} bytes`);
        filled += bytesRead;
      }
      return this.readBuffer.subarray(0, size);
    } finally {
      await fh.close();
    }
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
      throw new StorageError(
        'STORAGE_IO',
        `${what} (scratch space of the max-parallelism change) failed: ${(err as Error).message}. Free disk space next to the destination and try again.`,
        { cause: err },
      );
    }
  }
}
