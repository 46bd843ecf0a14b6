import { StreamStateError } from '../errors.js';
import type { CanonicalKeyGroupsWriter } from '../format/canonical-layout.js';
import type { SectionSplit } from './rehash-split.js';
import { writeSpilledKeyGroups, type SpillBucket, type SpilledKeyGroup } from './rehash-spill.js';

/**
 * The in-memory counterpart of KeyGroupSpill (same calls), for state that fits the memory budget
 * of a max-parallelism change, so re-hashing costs no disk round trip. Each source section is
 * copied once, with its entries grouped by new key group (SectionSplit): a StateFileReader may
 * hand out a buffer it reuses for its next read, and the entries must outlive that. The copy
 * goes group by group within the section (section-local, no scattering over the whole state);
 * each group is remembered as a run (new key group, state, entries, byte range in the copy).
 * Reading back sorts the runs by key group once (a stable counting sort) and hands out each
 * bucket's key groups as slices: the writer then takes whole runs, not single entries.
 * Memory: the source sections, plus 24 bytes per run (one per section and new key group it feeds).
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
  /** Per section added: its entries, grouped by new key group. */
  private readonly sources: Uint8Array[] = [];
  private readonly keyGroups = new IntColumn();
  private readonly stateIds = new IntColumn();
  private readonly entryCounts = new IntColumn();
  private readonly sourceIds = new IntColumn();
  private readonly starts = new IntColumn();
  private readonly ends = new IntColumn();
  private entries = 0;
  /** After finishWriting: runs in key-group order, and where each key group's runs begin. */
  private sorted:
    | {
        offsets: Int32Array;
        stateIds: Int32Array;
        entryCounts: Int32Array;
        sourceIds: Int32Array;
        starts: Int32Array;
        ends: Int32Array;
      }
    | undefined;

  constructor(
    readonly maxParallelism: number,
    readonly buckets: readonly SpillBucket[],
  ) {}

  async open(): Promise<void> {}

  /** Entries added so far. */
  get size(): number {
    return this.entries;
  }

  /** Keeps the entries of `bytes`, the section `split` last split, as one run per new key group (copied). */
  addSplit(stateId: number, bytes: Uint8Array, split: SectionSplit): void {
    const copy = Buffer.allocUnsafe(bytes.length);
    const sourceId = this.sources.length;
    this.sources.push(copy);
    let pos = 0;
    for (let g = 0; g < split.groups; g++) {
      const start = pos;
      pos = split.copyGroup(bytes, g, copy, pos);
      this.keyGroups.push(split.groupKeyGroups[g]);
      this.stateIds.push(stateId);
      this.entryCounts.push(split.entriesOf(g));
      this.sourceIds.push(sourceId);
      this.starts.push(start);
      this.ends.push(pos);
      this.entries += split.entriesOf(g);
    }
  }

  async drain(): Promise<void> {}

  /** Sorts the runs by key group; call once after the last `addSplit`. */
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
      entryCounts: new Int32Array(n),
      sourceIds: new Int32Array(n),
      starts: new Int32Array(n),
      ends: new Int32Array(n),
    };
    for (let i = 0; i < n; i++) {
      const at = next[kgs[i]]++;
      sorted.stateIds[at] = this.stateIds.values[i];
      sorted.entryCounts[at] = this.entryCounts.values[i];
      sorted.sourceIds[at] = this.sourceIds.values[i];
      sorted.starts[at] = this.starts.values[i];
      sorted.ends[at] = this.ends.values[i];
    }
    this.sorted = sorted;
  }

  /** The key groups of bucket `index` with entries, ascending, each with its runs in the order added. */
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
        entryCounts: s.entryCounts.subarray(from, to),
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
    this.sorted = undefined;
  }
}
