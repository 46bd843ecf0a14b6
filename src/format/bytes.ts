import { constants } from 'node:buffer';
import { FormatError, SnapshotError } from '../errors.js';
import { bytesSerializer, float64Serializer, int32Serializer, stringSerializer } from '../serializers/builtins.js';
import type { Serializer } from '../serializers/serializer.js';

/**
 * Growable little helpers for our binary formats. Integers are big-endian (so encoded keys sort
 * like numbers); variable lengths use unsigned LEB128 varints.
 */
/** The largest Buffer this Node allocates. */
const MAX_WRITER_BYTES = constants.MAX_LENGTH;

export class ByteWriter {
  private buf: Buffer;
  private pos = 0;

  constructor(initialSize = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(initialSize);
  }

  get length(): number {
    return this.pos;
  }

  private ensure(extra: number): void {
    const need = this.pos + extra;
    if (need <= this.buf.length) return;
    if (need > MAX_WRITER_BYTES) {
      throw new SnapshotError(
        'SNAPSHOT_TOO_LARGE',
        `cannot serialize more than ${MAX_WRITER_BYTES} bytes into one buffer (asked for ${need}); a single key group or state value is too large. Raise maxParallelism or keep less state per key.`,
      );
    }
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    size = Math.min(size, MAX_WRITER_BYTES);
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  u8(v: number): this {
    this.ensure(1);
    this.buf[this.pos++] = v;
    return this;
  }

  u16(v: number): this {
    this.ensure(2);
    this.buf.writeUInt16BE(v, this.pos);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    this.ensure(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }

  /** Unsigned 64-bit from a safe JS integer. */
  u64(v: number): this {
    this.ensure(8);
    this.buf.writeUInt32BE(Math.floor(v / 0x1_0000_0000), this.pos);
    this.buf.writeUInt32BE(v >>> 0, this.pos + 4);
    this.pos += 8;
    return this;
  }

  f64(v: number): this {
    this.ensure(8);
    this.buf.writeDoubleBE(v, this.pos);
    this.pos += 8;
    return this;
  }

  varint(v: number): this {
    this.ensure(10);
    const buf = this.buf;
    let pos = this.pos;
    // Lengths and counts are almost always below 2^31: shift instead of the float division below.
    if (v <= 0x7fff_ffff) {
      while (v >= 0x80) {
        buf[pos++] = (v & 0x7f) | 0x80;
        v >>>= 7;
      }
    } else {
      while (v >= 0x80) {
        buf[pos++] = (v % 0x80) | 0x80;
        v = Math.floor(v / 0x80);
      }
    }
    buf[pos++] = v;
    this.pos = pos;
    return this;
  }

  raw(bytes: Uint8Array): this {
    this.ensure(bytes.length);
    this.buf.set(bytes, this.pos);
    this.pos += bytes.length;
    return this;
  }

  /** `bytes[start, end)`, without creating a view first. */
  rawRange(bytes: Uint8Array, start: number, end: number): this {
    const n = end - start;
    this.ensure(n);
    const buf = this.buf;
    let pos = this.pos;
    // Short ranges (keys, small values) copy faster in JS than through a native call.
    if (n <= 32) for (let i = start; i < end; i++) buf[pos++] = bytes[i];
    else {
      // A plain Uint8Array view: a Buffer's subarray builds a FastBuffer, several times slower.
      buf.set(
        start === 0 && end === bytes.length ? bytes : new Uint8Array(bytes.buffer, bytes.byteOffset + start, n),
        pos,
      );
      pos += n;
    }
    this.pos = pos;
    return this;
  }

  /** varint length + bytes */
  bytes(bytes: Uint8Array): this {
    this.varint(bytes.length);
    return this.rawRange(bytes, 0, bytes.length);
  }

  /** varint length + UTF-8 of `s`: the bytes of `bytes(Buffer.from(s, 'utf8'))` without allocating them. */
  utf8Bytes(s: string): this {
    const n = s.length;
    if (n < 0x80) {
      this.ensure(n + 1);
      const buf = this.buf;
      const start = this.pos + 1;
      let pos = start;
      for (let i = 0; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) return this.utf8Slow(s);
        buf[pos++] = c;
      }
      buf[start - 1] = n; // ASCII: one byte per char, and n < 0x80 is a one-byte varint
      this.pos = pos;
      return this;
    }
    return this.utf8Slow(s);
  }

  private utf8Slow(s: string): this {
    // Buffer.write encodes exactly as Buffer.from(s, 'utf8') does (lone surrogates as U+FFFD).
    const n = Buffer.byteLength(s, 'utf8');
    this.varint(n);
    this.ensure(n);
    this.pos += this.buf.write(s, this.pos, n, 'utf8');
    return this;
  }

  /** varint length + the bytes of a latin1 string holding one byte per char (heap ids of `bytes` keys). */
  latin1Bytes(s: string): this {
    const n = s.length;
    this.varint(n);
    this.ensure(n);
    if (n <= 32) {
      const buf = this.buf;
      let pos = this.pos;
      for (let i = 0; i < n; i++) buf[pos++] = s.charCodeAt(i);
      this.pos = pos;
    } else this.pos += this.buf.write(s, this.pos, n, 'latin1');
    return this;
  }

  string(s: string): this {
    return this.bytes(Buffer.from(s, 'utf8'));
  }

  /** A copy of what was written so far. */
  toBuffer(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos));
  }

  /**
   * What was written so far, without copying: the writer moves to a fresh buffer of the same
   * capacity and is empty afterwards, so the returned bytes stay valid.
   */
  take(): Buffer {
    const out = this.buf.subarray(0, this.pos);
    this.buf = Buffer.allocUnsafe(this.buf.length);
    this.pos = 0;
    return out;
  }

  /** Drops everything after the first `length` bytes. */
  truncate(length: number): void {
    if (length < 0 || length > this.pos) throw new RangeError(`cannot truncate ${this.pos} bytes to ${length}`);
    this.pos = length;
  }

  /** A view of what was written so far; valid until the next write or reset. */
  view(): Buffer {
    return this.buf.subarray(0, this.pos);
  }

  reset(): void {
    this.pos = 0;
  }
}

/** Writes `bytes(serializer.serialize(value))` into a ByteWriter. */
export type FieldWriter<T> = (out: ByteWriter, value: T) => void;

/**
 * A FieldWriter for `serializer` that writes the serialized bytes straight into the output,
 * without the per-value Buffer the serializer would allocate, for the built-in serializers whose
 * encoding is known (the bytes are the same). Other serializers go through serialize().
 */
export function fieldWriter<T>(serializer: Serializer<T>): FieldWriter<T> {
  const s = serializer as Serializer<unknown>;
  if (s === stringSerializer) {
    return ((out: ByteWriter, v: unknown) =>
      typeof v === 'string' ? out.utf8Bytes(v) : out.bytes(s.serialize(v))) as FieldWriter<T>;
  }
  if (s === float64Serializer) {
    return ((out: ByteWriter, v: unknown) =>
      typeof v === 'number' ? out.u8(8).f64(v) : out.bytes(s.serialize(v))) as FieldWriter<T>;
  }
  if (s === int32Serializer) {
    return ((out: ByteWriter, v: unknown) =>
      typeof v === 'number' && (v | 0) === v ? out.u8(4).u32(v) : out.bytes(s.serialize(v))) as FieldWriter<T>;
  }
  if (s === bytesSerializer) {
    return ((out: ByteWriter, v: unknown) => out.bytes(v instanceof Uint8Array ? v : s.serialize(v))) as FieldWriter<T>;
  }
  return (out, v) => {
    out.bytes(serializer.serialize(v));
  };
}

export class ByteReader {
  pos: number;
  private readonly buf: Buffer;

  constructor(
    bytes: Uint8Array,
    private readonly what = 'data',
    start = 0,
  ) {
    this.buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = start;
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  private need(n: number): void {
    if (this.pos + n > this.buf.length) {
      throw new FormatError(
        'TRUNCATED',
        `${this.what} ends early: needed ${n} more bytes at offset ${this.pos} of ${this.buf.length}. ` +
          'The file was cut short; restore from an older checkpoint or re-take the snapshot.',
      );
    }
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++];
  }

  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(): number {
    this.need(8);
    const hi = this.buf.readUInt32BE(this.pos);
    const lo = this.buf.readUInt32BE(this.pos + 4);
    this.pos += 8;
    return hi * 0x1_0000_0000 + lo;
  }

  f64(): number {
    this.need(8);
    const v = this.buf.readDoubleBE(this.pos);
    this.pos += 8;
    return v;
  }

  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      const b = this.u8();
      result += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) {
        if (!Number.isSafeInteger(result)) break;
        return result;
      }
      mul *= 0x80;
    }
    throw new FormatError('CORRUPT', `${this.what}: malformed length at offset ${this.pos}.`);
  }

  /**
   * A count of items that follow, each at least `minBytesEach` bytes long: checked against the
   * bytes that remain before anyone allocates for it, so a crafted count (2^33 timers) is a
   * typed error, not a RangeError or a huge array.
   */
  count(minBytesEach: number, of = 'items'): number {
    const at = this.pos;
    const n = this.varint();
    if (n * minBytesEach > this.remaining) {
      throw new FormatError(
        'CORRUPT',
        `${this.what}: ${n} ${of} at offset ${at} cannot fit in the ${this.remaining} bytes that follow; the count is damaged. Restore from another checkpoint.`,
      );
    }
    return n;
  }

  raw(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  bytes(): Buffer {
    return this.raw(this.varint());
  }

  /** Skips `n` bytes (checked like raw, without creating a view). */
  skip(n: number): void {
    this.need(n);
    this.pos += n;
  }

  string(): string {
    return this.bytes().toString('utf8');
  }
}
