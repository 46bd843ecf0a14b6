import { StreamStateError } from '../errors.js';
import type { CanonicalKeyGroupsWriter } from '../format/canonical-layout.js';
import { writeSpilledKeyGroups, type SpillBucket, type SpilledKeyGroup } from './rehash-spill.js';

/**
 * The in-memory counterpart of KeyGroupSpill (same calls), for state that fits the memory budget
 * of a max-parallelism change: an entry is not copied but remembered as a reference into the
 * source section it was read from, with its new key group, so re-hashing costs no disk round
 * trip. Each source section is copied once, whole, when its first entry is added: a
 * StateFileReader may hand out a buffer it reuses for its next read, and the entries must outlive
 * that (one sequential copy, cheaper than copying entry by entry, measured: scattering entries
 * into per-key-group buffers was slower). Reading back sorts all entries by key group once (a
 * stable counting sort) and hands out each bucket's key groups as slices.
 * Memory: the source sections, plus 36 bytes per entry.
 */

/** A growable Int32Array. */
class IntColumn {
  values = new Int32Array(1024);
  length = 0;

  push(v: number): void {
    if (this.length === this.values.length) {
      const next = new Int32Array(this.values.length * 2);
      next.set(this.values);
      this.values = next;
    }
    this.values[this.length++] = v;
  }
}

export class KeyGroupIndex {
  private readonly sources: Uint8Array[] = [];
  /** The caller's buffer of the last section added (its copy is the last of `sources`). */
  private lastAdded: Uint8Array | undefined;
  private readonly keyGroups = new IntColumn();
  private readonly stateIds = new IntColumn();
  private readonly sourceIds = new IntColumn();
  private readonly starts = new IntColumn();
  private readonly ends = new IntColumn();
  /** After finishWriting: entries in key-group order, and where each key group's entries begin. */
  private sorted:
    | { offsets: Int32Array; stateIds: Int32Array; sourceIds: Int32Array; starts: Int32Array; ends: Int32Array }
    | undefined;

  constructor(
    readonly maxParallelism: number,
    readonly buckets: readonly SpillBucket[],
  ) {}

  async open(): Promise<void> {}

  /** Entries added so far. */
  get size(): number {
    return this.keyGroups.length;
  }

  /**
   * Remembers `bytes[start, end)`. Consecutive entries of one section pass the same `bytes`: it is
   * copied (whole) on its first entry, so the caller may reuse it afterwards.
   */
  add(keyGroup: number, stateId: number, bytes: Uint8Array, start: number, end: number): void {
    if (!(keyGroup >= 0 && keyGroup < this.maxParallelism))
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `key group ${keyGroup} is outside maxParallelism ${this.maxParallelism}`,
      );
    if (this.lastAdded !== bytes) {
      this.lastAdded = bytes;
      this.sources.push(Uint8Array.prototype.slice.call(bytes));
    }
    this.keyGroups.push(keyGroup);
    this.stateIds.push(stateId);
    this.sourceIds.push(this.sources.length - 1);
    this.starts.push(start);
    this.ends.push(end);
  }

  async drain(): Promise<void> {}

  /** Sorts the entries by key group; call once after the last `add`. */
  async finishWriting(): Promise<void> {
    const n = this.keyGroups.length;
    const kgs = this.keyGroups.values;
    const offsets = new Int32Array(this.maxParallelism + 1);
    for (let i = 0; i < n; i++) offsets[kgs[i] + 1]++;
    for (let k = 0; k < this.maxParallelism; k++) offsets[k + 1] += offsets[k];
    const next = offsets.slice();
    const sorted = {
      offsets,
      stateIds: new Int32Array(n),
      sourceIds: new Int32Array(n),
      starts: new Int32Array(n),
      ends: new Int32Array(n),
    };
    for (let i = 0; i < n; i++) {
      const at = next[kgs[i]]++;
      sorted.stateIds[at] = this.stateIds.values[i];
      sorted.sourceIds[at] = this.sourceIds.values[i];
      sorted.starts[at] = this.starts.values[i];
      sorted.ends[at] = this.ends.values[i];
    }
    this.sorted = sorted;
  }

  /** The key groups of bucket `index` with entries, ascending, each in the order added. */
  async *readBucket(index: number): AsyncGenerator<SpilledKeyGroup> {
    const s = this.sorted;
    if (s === undefined)
      throw new StreamStateError('INVALID_ARGUMENT', 'readBucket before finishWriting; finish adding first');
    const { start, end } = this.buckets[index].range;
    const empty = Buffer.alloc(0);
    for (let kg = start; kg <= end; kg++) {
      const from = s.offsets[kg];
      const to = s.offsets[kg + 1];
      if (to === from) continue;
      yield {
        keyGroup: kg,
        data: empty,
        count: to - from,
        stateIds: s.stateIds.subarray(from, to),
        starts: s.starts.subarray(from, to),
        ends: s.ends.subarray(from, to),
        sources: this.sources,
        sourceIds: s.sourceIds.subarray(from, to),
      };
    }
  }

  /** Writes the key groups of bucket `index` into `writer` (canonical state ids); returns how many. */
  async writeBucket(index: number, writer: CanonicalKeyGroupsWriter): Promise<number> {
    return writeSpilledKeyGroups(this.readBucket(index), writer);
  }

  /** Drops the references. Idempotent. */
  async close(): Promise<void> {
    this.sources.length = 0;
    this.lastAdded = undefined;
    this.sorted = undefined;
  }
}
