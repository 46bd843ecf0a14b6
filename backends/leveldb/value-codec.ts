import { FormatError } from '../../src/errors.js';
import type { Serializer } from '../../src/serializers/serializer.js';

/**
 * Row values start with one header byte: bits 1..7 = serializer generation, bit 0 = "null map
 * value". The generation makes serializer migration lazy: after a restore with a serializer that
 * can migrate, rows written under an older generation are read with that generation's reader and
 * rewritten in the current one when next written (LevelDB point operations are synchronous, so an
 * eager rewrite at registration time is impossible).
 */
export const MAX_GENERATION = 127;
const NULL_FLAG = 1;

export class ValueCodec<T> {
  private readonly header: number;

  constructor(
    readonly serializer: Serializer<T>,
    readonly generation: number,
    /** Readers of older generations (index = generation). */
    private readonly readers: readonly (Serializer<T> | undefined)[],
    private readonly describe: string,
  ) {
    this.header = generation << 1;
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
    return this.serializerFor(row).deserialize(row.subarray(1));
  }

  /** A map value (null when the null flag is set). */
  decodeNullable(row: Buffer): T | null {
    return (row[0] & NULL_FLAG) !== 0 ? null : this.decode(row);
  }

  // -------------------------------------------------------------- lists: header + (varint length + bytes)*

  /** Serialized elements, each with its varint length, without header. */
  encodeElements(values: readonly T[]): Buffer {
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
    const body = this.encodeElements(values);
    return Buffer.concat([existing, body], existing.length + body.length);
  }

  decodeList(row: Buffer): T[] {
    const s = this.serializerFor(row);
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
        throw new FormatError('CORRUPT', `${this.describe}: a list element runs past the end of its row; the state data is damaged.`);
      }
      out.push(s.deserialize(row.subarray(pos, pos + len)));
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

function varintLength(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n;
}

function writeVarint(buf: Uint8Array, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[pos++] = v;
  return pos;
}
