import { FormatError } from '../errors.js';
import { ByteReader, type ByteWriter } from '../format/bytes.js';
import type { EntryKind } from '../format/key-groups-stream.js';
import { murmur3Range } from '../keygroups/murmur3.js';

/**
 * Calls `fn` for each entry of a section: the entry's byte range [start, end) and its key's
 * [keyStart, keyEnd) within `bytes` (encodings: docs/FORMAT.md, "Key-groups stream").
 */
export function forEachEntry(
  kind: EntryKind,
  bytes: Uint8Array,
  count: number,
  what: string,
  fn: (start: number, end: number, keyStart: number, keyEnd: number) => void,
): void {
  const r = new ByteReader(bytes, what);
  for (let i = 0; i < count; i++) {
    const start = r.pos;
    if (kind === 'timers') r.skip(8);
    const kl = r.varint();
    const keyStart = r.pos;
    r.skip(kl);
    const keyEnd = r.pos;
    r.skip(r.varint()); // namespace
    if (kind === 'value') r.skip(r.varint());
    else if (kind === 'list') {
      const n = r.count(1, 'list elements');
      for (let j = 0; j < n; j++) r.skip(r.varint());
    } else if (kind === 'map') {
      const n = r.count(2, 'map elements');
      for (let j = 0; j < n; j++) {
        r.skip(r.varint());
        if (r.u8() === 0) r.skip(r.varint());
      }
    }
    fn(start, r.pos, keyStart, keyEnd);
  }
  if (!r.done)
    throw new FormatError(
      'CORRUPT',
      `${what}: ${r.remaining} bytes after the section's last entry; the section is damaged.`,
    );
}

/**
 * One source section's entries grouped by the key group each key hashes to under the new max
 * parallelism, so that re-hashing moves runs (one per new key group the section feeds) instead
 * of single entries: what is kept, spilled, sorted and handed to the canonical writer is one run
 * per (section, new key group), and the entries are copied once, section-locally, into their run.
 * A group keeps its entries in source order (stable), so every new key group still receives its
 * entries in source order, as when they were moved one by one: same output bytes.
 * The scratch arrays are reused from section to section: nothing is allocated per entry.
 */
export class SectionSplit {
  /** Per entry of the last split section: its byte range [starts[i], ends[i]). */
  starts = new Int32Array(1024);
  ends = new Int32Array(1024);
  /** Entry indices grouped by new key group: group g is order[groupStarts[g], groupStarts[g + 1]). */
  order = new Int32Array(1024);
  /** Per group: its new key group (in order of first appearance in the section). */
  groupKeyGroups = new Int32Array(64);
  groupStarts = new Int32Array(65);
  /** Per group: bytes of its entries. */
  groupBytes = new Int32Array(64);
  groups = 0;
  private keyGroupOf = new Int32Array(1024);
  /** Per new key group: entries in the section (a write cursor while placing); all zero between splits. */
  private readonly counts: Int32Array;

  constructor(readonly maxParallelism: number) {
    this.counts = new Int32Array(maxParallelism);
  }

  /** Groups the `count` entries of `bytes` (one section of entry shape `kind`); `what` names it in errors. */
  split(kind: EntryKind, bytes: Uint8Array, count: number, what: string): void {
    this.reserveEntries(count);
    const { starts, ends, keyGroupOf, counts, maxParallelism } = this;
    let i = 0;
    let groups = 0;
    try {
      forEachEntry(kind, bytes, count, what, (start, end, keyStart, keyEnd) => {
        const kg = murmur3Range(bytes, keyStart, keyEnd) % maxParallelism;
        starts[i] = start;
        ends[i] = end;
        keyGroupOf[i++] = kg;
        if (counts[kg]++ === 0) {
          if (groups === this.groupKeyGroups.length) this.reserveGroups(groups * 2);
          this.groupKeyGroups[groups++] = kg;
        }
      });
    } catch (err) {
      // A damaged section: leave `counts` zero for whoever splits next.
      for (let g = 0; g < groups; g++) counts[this.groupKeyGroups[g]] = 0;
      this.groups = 0;
      throw err;
    }
    this.groups = groups;
    const { groupKeyGroups, groupStarts, groupBytes, order } = this;
    let at = 0;
    for (let g = 0; g < groups; g++) {
      const kg = groupKeyGroups[g];
      groupStarts[g] = at;
      at += counts[kg];
      counts[kg] = groupStarts[g]; // from here on: the group's next slot in `order`
    }
    groupStarts[groups] = at;
    for (let e = 0; e < count; e++) order[counts[keyGroupOf[e]]++] = e;
    for (let g = 0; g < groups; g++) {
      counts[groupKeyGroups[g]] = 0;
      let n = 0;
      for (let j = groupStarts[g]; j < groupStarts[g + 1]; j++) n += ends[order[j]] - starts[order[j]];
      groupBytes[g] = n;
    }
  }

  /** Entries in group `g`. */
  entriesOf(g: number): number {
    return this.groupStarts[g + 1] - this.groupStarts[g];
  }

  /**
   * Copies group `g`'s entries of `bytes` (the section last split) to `out` at `pos`, adjacent
   * entries in one piece; returns the position after them.
   */
  copyGroup(bytes: Uint8Array, g: number, out: Uint8Array, pos: number): number {
    this.forEachPiece(g, (s, e) => {
      pos = copyRange(bytes, s, e, out, pos);
    });
    return pos;
  }

  /** As copyGroup, appending to a ByteWriter. */
  writeGroup(bytes: Uint8Array, g: number, out: ByteWriter): void {
    this.forEachPiece(g, (s, e) => out.rawRange(bytes, s, e));
  }

  /** Calls `take(start, end)` per piece of group `g`'s entries that lie adjacent in the section. */
  private forEachPiece(g: number, take: (start: number, end: number) => void): void {
    const { order, starts, ends } = this;
    const to = this.groupStarts[g + 1];
    let j = this.groupStarts[g];
    while (j < to) {
      const s = starts[order[j]];
      let e = ends[order[j++]];
      while (j < to && starts[order[j]] === e) e = ends[order[j++]];
      take(s, e);
    }
  }

  private reserveEntries(count: number): void {
    if (count <= this.starts.length) return;
    let size = this.starts.length;
    while (size < count) size *= 2;
    this.starts = new Int32Array(size);
    this.ends = new Int32Array(size);
    this.order = new Int32Array(size);
    this.keyGroupOf = new Int32Array(size);
  }

  private reserveGroups(size: number): void {
    const grow = (a: Int32Array, n: number): Int32Array<ArrayBuffer> => {
      const next = new Int32Array(n);
      next.set(a);
      return next;
    };
    this.groupKeyGroups = grow(this.groupKeyGroups, size);
    this.groupStarts = grow(this.groupStarts, size + 1);
    this.groupBytes = grow(this.groupBytes, size);
  }
}

/** `src[start, end)` to `out` at `pos`; returns the position after it. */
function copyRange(src: Uint8Array, start: number, end: number, out: Uint8Array, pos: number): number {
  const n = end - start;
  // Short ranges copy faster in JS than through a native call (as ByteWriter.rawRange).
  if (n <= 32) for (let i = start; i < end; i++) out[pos++] = src[i];
  else {
    out.set(new Uint8Array(src.buffer, src.byteOffset + start, n), pos);
    pos += n;
  }
  return pos;
}
