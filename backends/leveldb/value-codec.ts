import { FormatError } from '../../src/errors.js';
import { float64Serializer, int32Serializer } from '../../src/serializers/builtins.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import { varintLength, writeVarint } from './row-keys.js';

/**
 * Row values start with one header byte: bits 1..7 = serializer generation, bit 0 = "null map
 * value". The generation makes serializer migration lazy: after a restore with a serializer that
 * can migrate, rows written under an older generation are read with that generation's reader and
 * rewritten in the current one when next written (LevelDB point operations are synchronous, so an
 * eager rewrite at registration time is impossible).
 */
export const MAX_GENERATION = 127;
const NULL_FLAG = 1;

/**
 * Built-in fixed-width serializers, read and written in place: the generic path allocates the
 * serialized bytes, then the row, then (reading) a view per value. Same bytes as serialize();
 * values the serializer would reject take the generic path and fail there.
 */
interface FixedWidth<T> {
  readonly size: number;
  accepts(value: T): boolean;
  write(buf: Buffer, at: number, value: T): void;
  read(buf: Buffer, at: number): T;
}

const float64: FixedWidth<number> = {
  size: 8,
  accepts: (v) => typeof v === 'number',
  write: (buf, at, v) => buf.writeDoubleBE(v, at),
  read: (buf, at) => buf.readDoubleBE(at),
};

const int32: FixedWidth<number> = {
  size: 4,
  accepts: (v) => Number.isInteger(v) && v >= -0x8000_0000 && v <= 0x7fff_ffff,
  write: (buf, at, v) => buf.writeInt32BE(v, at),
  read: (buf, at) => buf.readInt32BE(at),
};

const FIXED_WIDTH = new Map<unknown, FixedWidth<number>>([
  [float64Serializer, float64],
  [int32Serializer, int32],
]);

export class ValueCodec<T> {
  private readonly header: number;
  /** The in-place form of the current serializer, when it is a fixed-width built-in. */
  private readonly fixed: FixedWidth<T> | null;

  constructor(
    readonly serializer: Serializer<T>,
    readonly generation: number,
    /** Readers of older generations (index = generation). */
    private readonly readers: readonly (Serializer<T> | undefined)[],
    private readonly describe: string,
  ) {
    this.header = generation << 1;
    this.fixed = (FIXED_WIDTH.get(serializer) as FixedWidth<unknown> as FixedWidth<T> | undefined) ?? null;
  }

  isCurrent(row: Uint8Array): boolean {
    return row[0] >>> 1 === this.generation;
  }

  static isNull(row: Uint8Array): boolean {
    return (row[0] & NULL_FLAG) !== 0;
  }

  serializerFor(row: Uint8Array): Serializer<T> {
    const gen = row[0] >>> 1;
    if (gen === this.generation) return this.serializer;
    const reader = this.readers[gen];
    if (reader === undefined) {
      throw new FormatError(
        'CORRUPT',
        `${this.describe}: a row was written under serializer generation ${gen}, which the state's meta info does not list. ` +
          'The working directory or checkpoint is damaged; restore from another checkpoint.',
      );
    }
    return reader;
  }

  /** One value: header + serialized bytes. */
  encode(value: T): Buffer {
    const f = this.fixed;
    if (f !== null && f.accepts(value)) {
      const row = Buffer.allocUnsafe(1 + f.size);
      row[0] = this.header;
      f.write(row, 1, value);
      return row;
    }
    const bytes = this.serializer.serialize(value);
    const out = Buffer.allocUnsafe(1 + bytes.length);
    out[0] = this.header;
    out.set(bytes, 1);
    return out;
  }

  /** A null map value: the header alone. */
  encodeNull(): Buffer {
    const out = Buffer.allocUnsafe(1);
    out[0] = this.header | NULL_FLAG;
    return out;
  }

  decode(row: Buffer): T {
    const f = this.fixed;
    if (f !== null && row.length === 1 + f.size && row[0] === this.header) return f.read(row, 1);
    return this.serializerFor(row).deserialize(row.subarray(1));
  }

  /** A map value (null when the null flag is set). */
  decodeNullable(row: Buffer): T | null {
    return (row[0] & NULL_FLAG) !== 0 ? null : this.decode(row);
  }

  // -------------------------------------------------------------- lists: header + (varint length + bytes)*

  /** Serialized elements, each with its varint length, without header. */
  encodeElements(values: readonly T[]): Buffer {
    const fixed = this.fixedElements(values);
    if (fixed !== null) {
      const out = Buffer.allocUnsafe(values.length * (1 + fixed.size));
      this.writeFixed(out, 0, fixed, values);
      return out;
    }
    const parts: Uint8Array[] = new Array<Uint8Array>(values.length);
    let total = 0;
    for (let i = 0; i < values.length; i++) {
      const b = this.serializer.serialize(values[i]);
      parts[i] = b;
      total += varintLength(b.length) + b.length;
    }
    const out = Buffer.allocUnsafe(total);
    let pos = 0;
    for (const b of parts) {
      pos = writeVarint(out, pos, b.length);
      out.set(b, pos);
      pos += b.length;
    }
    return out;
  }

  encodeList(values: readonly T[]): Buffer {
    const body = this.encodeElements(values);
    const out = Buffer.allocUnsafe(1 + body.length);
    out[0] = this.header;
    body.copy(out, 1);
    return out;
  }

  /** `existing` (a stored list, maybe of an older generation) with `values` appended. */
  appendToList(existing: Buffer | undefined, values: readonly T[]): Buffer {
    if (existing === undefined) return this.encodeList(values);
    if (!this.isCurrent(existing)) return this.encodeList([...this.decodeList(existing), ...values]);
    const fixed = this.fixedElements(values);
    if (fixed !== null) {
      // One allocation: the stored list and the new elements written behind it.
      const out = Buffer.allocUnsafe(existing.length + values.length * (1 + fixed.size));
      existing.copy(out, 0);
      this.writeFixed(out, existing.length, fixed, values);
      return out;
    }
    const body = this.encodeElements(values);
    return Buffer.concat([existing, body], existing.length + body.length);
  }

  /** The fixed-width form when every value can be written in place, else null. */
  private fixedElements(values: readonly T[]): FixedWidth<T> | null {
    const f = this.fixed;
    if (f === null) return null;
    for (let i = 0; i < values.length; i++) if (!f.accepts(values[i])) return null;
    return f;
  }

  /** Writes (varint length + bytes) per value at `at`; the length (4 or 8) is a one-byte varint. */
  private writeFixed(out: Buffer, at: number, f: FixedWidth<T>, values: readonly T[]): void {
    let pos = at;
    for (let i = 0; i < values.length; i++) {
      out[pos] = f.size;
      f.write(out, pos + 1, values[i]);
      pos += 1 + f.size;
    }
  }

  decodeList(row: Buffer): T[] {
    const s = this.serializerFor(row);
    const f = s === this.serializer ? this.fixed : null;
    const out: T[] = [];
    let pos = 1;
    while (pos < row.length) {
      let len = 0;
      let mul = 1;
      for (;;) {
        const b = row[pos++];
        len += (b & 0x7f) * mul;
        if ((b & 0x80) === 0) break;
        mul *= 0x80;
      }
      if (pos + len > row.length) {
        throw new FormatError(
          'CORRUPT',
          `${this.describe}: a list element runs past the end of its row; the state data is damaged.`,
        );
      }
      out.push(f !== null && len === f.size ? f.read(row, pos) : s.deserialize(row.subarray(pos, pos + len)));
      pos += len;
    }
    return out;
  }

  /** The raw serialized elements of a stored list (for snapshots that copy bytes). */
  static listElementBytes(row: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let pos = 1;
    while (pos < row.length) {
      let len = 0;
      let mul = 1;
      for (;;) {
        const b = row[pos++];
        len += (b & 0x7f) * mul;
        if ((b & 0x80) === 0) break;
        mul *= 0x80;
      }
      out.push(row.subarray(pos, pos + len));
      pos += len;
    }
    return out;
  }
}
