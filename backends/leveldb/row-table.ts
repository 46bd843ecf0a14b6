/**
 * The rows of one write-buffer layer, keyed by row-key bytes.
 *
 * A V8 Map needs a string per row key: an allocation, and a hash over a fresh string, on every
 * write. This table hashes the bytes where the row-key builder left them and copies them into one
 * arena, so a write allocates nothing (amortized). Open addressing with linear probing over
 * typed arrays; entries stay in insertion order, which is the order their writes happened.
 */

/** Value of an entry: the row bytes, null (deleted in this layer) or undefined (dropped by a range deletion: the layer no longer holds it). */
export type RowValue = Buffer | null | undefined;

const INITIAL_ENTRIES = 256;
const INITIAL_ARENA = 16 * 1024;

/** FNV-1a over key[0, len), finished with murmur3's mix so that the low bits (the slot) depend on every byte. */
function hashBytes(key: Uint8Array, len: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < len; i++) h = Math.imul(h ^ key[i], 0x01000193);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

export class RowTable {
  /** Entry index + 1 per slot; 0 = empty. At most half full. */
  private slots = new Int32Array(2 * INITIAL_ENTRIES);
  private arena = Buffer.allocUnsafe(INITIAL_ARENA);
  private arenaUsed = 0;
  private offsets = new Int32Array(INITIAL_ENTRIES);
  private lengths = new Int32Array(INITIAL_ENTRIES);
  private hashes = new Int32Array(INITIAL_ENTRIES);
  private readonly values: RowValue[] = [];
  private entries = 0;
  private droppedEntries = 0;

  /** Rows the layer holds (deleted rows included, rows dropped by a range deletion not). */
  get size(): number {
    return this.entries - this.droppedEntries;
  }

  /** The entry of key[0, len), or -1. */
  private find(key: Uint8Array, len: number, h: number): number {
    const slots = this.slots;
    const mask = slots.length - 1;
    const arena = this.arena;
    for (let s = h & mask; ; s = (s + 1) & mask) {
      const e = slots[s] - 1;
      if (e < 0) return -1;
      if (this.hashes[e] !== h || this.lengths[e] !== len) continue;
      const off = this.offsets[e];
      let i = 0;
      while (i < len && arena[off + i] === key[i]) i++;
      if (i === len) return e;
    }
  }

  get(key: Uint8Array, len = key.length): RowValue {
    const e = this.find(key, len, hashBytes(key, len));
    return e < 0 ? undefined : this.values[e];
  }

  /** Sets the row of key[0, len) (the bytes are copied). Returns true when the layer did not hold the row before. */
  set(key: Uint8Array, value: Buffer | null, len = key.length): boolean {
    const h = hashBytes(key, len);
    const found = this.find(key, len, h);
    if (found >= 0) {
      const wasDropped = this.values[found] === undefined;
      if (wasDropped) this.droppedEntries--;
      this.values[found] = value;
      return wasDropped;
    }
    const e = this.entries++;
    if (e === this.offsets.length) this.growEntries();
    if (this.arenaUsed + len > this.arena.length) this.growArena(len);
    const arena = this.arena;
    const off = this.arenaUsed;
    for (let i = 0; i < len; i++) arena[off + i] = key[i];
    this.arenaUsed += len;
    this.offsets[e] = off;
    this.lengths[e] = len;
    this.hashes[e] = h;
    this.values.push(value);
    if (2 * this.entries > this.slots.length) this.rehash(2 * this.slots.length);
    else this.place(e, h);
    return true;
  }

  /** Drops every row with key in [gte, lt) (lt null = unbounded) from the layer. */
  dropRange(gte: Uint8Array, lt: Uint8Array | null): void {
    for (let e = 0; e < this.entries; e++) {
      if (this.values[e] !== undefined && this.inRange(e, gte, lt)) {
        this.values[e] = undefined;
        this.droppedEntries++;
      }
    }
  }

  /** Whether entry e's key is in [gte, lt). */
  private inRange(e: number, gte: Uint8Array, lt: Uint8Array | null): boolean {
    const off = this.offsets[e];
    const len = this.lengths[e];
    return this.compareTo(off, len, gte) >= 0 && (lt === null || this.compareTo(off, len, lt) < 0);
  }

  /**
   * Byte order of the key at arena[off, off + len) against `other`. A JS loop, not Buffer.compare:
   * a range scan visits every entry of the layer, and most differ from the bound in the first
   * bytes (key group, state id), where a native call would cost more than the comparison.
   */
  private compareTo(off: number, len: number, other: Uint8Array): number {
    const arena = this.arena;
    const n = Math.min(len, other.length);
    for (let i = 0; i < n; i++) {
      const d = arena[off + i] - other[i];
      if (d !== 0) return d;
    }
    return len - other.length;
  }

  /** Calls fn for every row the layer holds, in the order the rows were first written. `key` is a view of the arena: valid while the table is not written to. */
  forEach(fn: (key: Buffer, value: Buffer | null) => void): void {
    for (let e = 0; e < this.entries; e++) {
      const v = this.values[e];
      if (v === undefined) continue;
      const off = this.offsets[e];
      fn(this.arena.subarray(off, off + this.lengths[e]), v);
    }
  }

  /** The rows with key in [gte, lt), keys as latin1 strings (one char per byte: string order is byte order). */
  rangeAsStrings(gte: Uint8Array, lt: Uint8Array | null, fn: (key: string, value: Buffer | null) => void): void {
    for (let e = 0; e < this.entries; e++) {
      const v = this.values[e];
      if (v === undefined || !this.inRange(e, gte, lt)) continue;
      const off = this.offsets[e];
      fn(this.arena.toString('latin1', off, off + this.lengths[e]), v);
    }
  }

  private place(e: number, h: number): void {
    const slots = this.slots;
    const mask = slots.length - 1;
    let s = h & mask;
    while (slots[s] !== 0) s = (s + 1) & mask;
    slots[s] = e + 1;
  }

  private rehash(slotCount: number): void {
    this.slots = new Int32Array(slotCount);
    for (let e = 0; e < this.entries; e++) this.place(e, this.hashes[e]);
  }

  private growEntries(): void {
    const n = 2 * this.offsets.length;
    const grow = (a: Int32Array<ArrayBuffer>): Int32Array<ArrayBuffer> => {
      const b = new Int32Array(n);
      b.set(a);
      return b;
    };
    this.offsets = grow(this.offsets);
    this.lengths = grow(this.lengths);
    this.hashes = grow(this.hashes);
  }

  private growArena(need: number): void {
    let size = 2 * this.arena.length;
    while (size < this.arenaUsed + need) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.arena.copy(next, 0, 0, this.arenaUsed);
    this.arena = next;
  }
}
