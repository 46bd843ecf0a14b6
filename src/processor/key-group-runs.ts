import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { StorageError } from '../errors.js';
import { ByteReader, ByteWriter } from '../format/bytes.js';
import type { TemporaryPaths } from '../savepoint/convert.js';

/**
 * Bounded-memory grouping of records by key group, for inputs whose size is not known up front
 * (bootstrap's iterables): records are buffered up to `memoryBytes`; a full buffer is sorted by
 * key group (a stable counting sort) and written to a run file, with the offset of each key
 * group's records kept in memory. Reading back visits key groups in ascending order and yields
 * each one's records in the order they were added (earlier runs first), so "the last one wins"
 * rules of the caller keep working. Memory: the buffer, plus one key group's records of every run
 * while reading. When nothing ever spilled, no file is written at all.
 *
 *   record := varint keyGroup | varint tag | varint length | payload
 *   run file := records sorted by key group (stable)
 */

/** One record read back: `tag` and `payload` as added. */
export interface KeyGroupRecord {
  readonly tag: number;
  readonly payload: Buffer;
}

interface Run {
  readonly path: string;
  /** offsets[kg] .. offsets[kg + 1]: the key group's records in the run file. */
  readonly offsets: Float64Array;
}

export class KeyGroupRuns {
  private buffer = new ByteWriter(64 * 1024);
  private readonly runs: Run[] = [];
  private dirMade = false;
  /** The buffer sorted by key group, once reading has begun. */
  private memory: { sorted: Buffer; offsets: Float64Array } | undefined;

  /**
   * `dir` is created on the first spill (and only then told to `temporaryPaths`, so an
   * interrupted process removes it) and removed by `close`.
   */
  constructor(
    private readonly dir: string,
    readonly maxParallelism: number,
    private readonly memoryBytes: number,
    private readonly temporaryPaths?: TemporaryPaths,
  ) {}

  /** Run files written so far (0: everything is still in memory). */
  get spilledRuns(): number {
    return this.runs.length;
  }

  /** Adds a record (payload copied); spills a run once the buffer passes the memory budget. */
  async add(keyGroup: number, tag: number, payload: Uint8Array): Promise<void> {
    this.buffer.varint(keyGroup).varint(tag).bytes(payload);
    if (this.buffer.length >= this.memoryBytes) await this.spill();
  }

  /**
   * The records of every key group in [first, last] that has any, ascending, each in the order
   * added. Call after the last `add`; key groups may be visited in several calls, in order.
   */
  async *read(first: number, last: number): AsyncGenerator<{ keyGroup: number; records: KeyGroupRecord[] }> {
    this.memory ??= sortByKeyGroup(this.buffer.view(), this.maxParallelism, 'bootstrap buffer');
    const memory = this.memory;
    const handles: FileHandle[] = [];
    try {
      for (const run of this.runs) handles.push(await this.io(() => open(run.path, 'r'), `opening ${run.path}`));
      for (let kg = first; kg <= last; kg++) {
        const records: KeyGroupRecord[] = [];
        for (let r = 0; r < this.runs.length; r++) {
          const { offsets, path } = this.runs[r];
          const from = offsets[kg];
          const length = offsets[kg + 1] - from;
          if (length === 0) continue;
          const bytes = Buffer.allocUnsafe(length);
          await this.io(() => handles[r].read(bytes, 0, length, from), `reading ${path}`);
          parseRecords(bytes, path, records);
        }
        const m0 = memory.offsets[kg];
        const m1 = memory.offsets[kg + 1];
        if (m1 > m0) parseRecords(memory.sorted.subarray(m0, m1), 'bootstrap buffer', records);
        if (records.length > 0) yield { keyGroup: kg, records };
      }
    } finally {
      for (const h of handles) await h.close().catch(() => undefined);
    }
  }

  /** Removes the run files. Idempotent. */
  async close(): Promise<void> {
    this.buffer = new ByteWriter(16);
    this.memory = undefined;
    if (!this.dirMade) return;
    await rm(this.dir, { recursive: true, force: true }).then(
      () => this.temporaryPaths?.delete(this.dir),
      () => undefined,
    );
  }

  private async spill(): Promise<void> {
    const { sorted, offsets } = sortByKeyGroup(this.buffer.view(), this.maxParallelism, 'bootstrap buffer');
    if (!this.dirMade) {
      this.temporaryPaths?.add(this.dir);
      await this.io(() => mkdir(this.dir, { recursive: true }), `creating ${this.dir}`);
      this.dirMade = true;
    }
    const path = join(this.dir, `run-${this.runs.length}`);
    const file = await this.io(() => open(path, 'wx'), `creating ${path}`);
    try {
      await this.io(() => file.writeFile(sorted), `writing ${path}`);
    } finally {
      await file.close();
    }
    this.runs.push({ path, offsets });
    this.buffer.reset();
  }

  private async io<T>(fn: () => Promise<T>, what: string): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw new StorageError(
        'STORAGE_IO',
        `${what} (scratch space of bootstrap) failed: ${(err as Error).message}. Free disk space in the temporary directory and try again.`,
        { cause: err },
      );
    }
  }
}

/** Appends the records of `bytes` (a run of whole records) to `out`. */
function parseRecords(bytes: Buffer, what: string, out: KeyGroupRecord[]): void {
  const r = new ByteReader(bytes, what);
  while (!r.done) {
    r.varint();
    const tag = r.varint();
    out.push({ tag, payload: r.bytes() });
  }
}

/** `data`'s records in key-group order (stable), and where each key group's records start. */
function sortByKeyGroup(data: Buffer, maxParallelism: number, what: string): { sorted: Buffer; offsets: Float64Array } {
  const offsets = new Float64Array(maxParallelism + 1);
  const r = new ByteReader(data, what);
  while (!r.done) {
    const start = r.pos;
    const kg = r.varint();
    r.varint();
    r.skip(r.varint());
    offsets[kg + 1] += r.pos - start;
  }
  for (let k = 0; k < maxParallelism; k++) offsets[k + 1] += offsets[k];
  const next = offsets.slice();
  const sorted = Buffer.allocUnsafe(data.length);
  r.pos = 0;
  while (!r.done) {
    const start = r.pos;
    const kg = r.varint();
    r.varint();
    r.skip(r.varint());
    data.copy(sorted, next[kg], start, r.pos);
    next[kg] += r.pos - start;
  }
  return { sorted, offsets };
}
