/**
 * LevelDB row keys (docs/FORMAT.md, "LevelDB row keys"):
 *
 *   [key group: u16 BE][state id: u16 BE][varint len][key bytes][varint len][namespace bytes][user key bytes (map only)]
 *
 * Key group first keeps the database key-group ordered, so a key-group range is one byte range
 * (rescaling clips with clear({gte, lt})). The varint length prefixes make (key, namespace) a
 * prefix-free pair: key "ab" + namespace "c" is 02 'a' 'b' 01 'c' and can never equal or extend
 * key "a" + namespace "bc" (01 'a' 02 'b' 'c'), so every (kg, state, key, namespace) prefix scan is exact.
 * The map user key is last and takes the rest of the row key, so it needs no length.
 *
 * State ids are below 0x8000. A map state's per-(key, namespace) entry count lives under the
 * companion id stateId | 0x8000 (LevelDB cannot be scanned synchronously; the count answers
 * isEmpty()). Count rows are bookkeeping: not entries, not part of full snapshots.
 */

export const MAX_STATE_ID = 0x7fff;
const COUNT_ROW_BIT = 0x8000;

export function countRowStateId(stateId: number): number {
  return stateId | COUNT_ROW_BIT;
}

export function isCountRowStateId(stateId: number): boolean {
  return (stateId & COUNT_ROW_BIT) !== 0;
}

/** Bytes of the header: key group + state id. */
export const ROW_HEADER_BYTES = 4;

/** Bytes of the unsigned LEB128 varint of v (row-key length prefixes, list element lengths). */
export function varintLength(v: number): number {
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 0x80);
    n++;
  }
  return n;
}

/** Writes the varint of v at pos; returns the position after it. */
export function writeVarint(buf: Uint8Array, pos: number, v: number): number {
  while (v >= 0x80) {
    buf[pos++] = (v % 0x80) | 0x80;
    v = Math.floor(v / 0x80);
  }
  buf[pos++] = v;
  return pos;
}

/** `varint(len) + bytes`: the self-delimiting form of a key or namespace inside a row key. */
export function lengthPrefixed(bytes: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(varintLength(bytes.length) + bytes.length);
  const pos = writeVarint(out, 0, bytes.length);
  out.set(bytes, pos);
  return out;
}

/** Bytes lengthPrefixedUtf8Into may need for `s`: UTF-8 takes at most 3 bytes per UTF-16 unit, a varint of a string length at most 5. */
export function lengthPrefixedUtf8Capacity(s: string): number {
  return 3 * s.length + 5;
}

/**
 * Writes lengthPrefixed(UTF-8 of `s`) at the start of `buf` (at least lengthPrefixedUtf8Capacity(s)
 * bytes) without allocating the UTF-8 bytes first, and returns its length. ASCII (the common case)
 * is copied char by char: for short keys a JS loop beats a call into Buffer.write.
 */
export function lengthPrefixedUtf8Into(buf: Buffer, s: string): number {
  const chars = s.length;
  const start = writeVarint(buf, 0, chars);
  for (let i = 0; i < chars; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) {
      // Not ASCII: the byte length differs from the char count, and so may the varint.
      const n = Buffer.byteLength(s, 'utf8');
      const pos = writeVarint(buf, 0, n);
      return pos + buf.write(s, pos, 'utf8');
    }
    buf[start + i] = c;
  }
  return start + chars;
}

/** The 2-byte big-endian prefix of a key group: rows of key groups [a, b] are [kgPrefix(a), kgPrefix(b + 1)). */
export function keyGroupPrefix(kg: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(kg, 0);
  return b;
}

/** [key group][state id]: every row of one state in one key group starts with it. */
export function stateInKeyGroupPrefix(kg: number, stateId: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt16BE(kg, 0);
  b.writeUInt16BE(stateId, 2);
  return b;
}

/** The smallest byte string greater than every string starting with `prefix` (null when there is none). */
export function prefixUpperBound(prefix: Uint8Array): Buffer | null {
  const out = Buffer.from(prefix);
  for (let i = out.length - 1; i >= 0; i--) {
    if (out[i] !== 0xff) {
      out[i]++;
      return out.subarray(0, i + 1);
    }
  }
  return null;
}

/** The parts of a decoded row key (views into the row key). */
export interface DecodedRowKey {
  readonly keyGroup: number;
  readonly stateId: number;
  readonly key: Buffer;
  readonly namespace: Buffer;
  /** Empty for anything but map entries. */
  readonly userKey: Buffer;
}

function readVarint(buf: Buffer, pos: number): [value: number, next: number] {
  let value = 0;
  let mul = 1;
  for (let i = 0; i < 8; i++) {
    if (pos >= buf.length) break;
    const b = buf[pos++];
    value += (b & 0x7f) * mul;
    if ((b & 0x80) === 0) return [value, pos];
    mul *= 0x80;
  }
  throw new RangeError('malformed varint in a LevelDB row key');
}

export function decodeRowKey(row: Buffer): DecodedRowKey {
  if (row.length < ROW_HEADER_BYTES + 2) throw new RangeError(`row key of ${row.length} bytes is too short`);
  const keyGroup = row.readUInt16BE(0);
  const stateId = row.readUInt16BE(2);
  const [keyLen, keyStart] = readVarint(row, ROW_HEADER_BYTES);
  const keyEnd = keyStart + keyLen;
  const [nsLen, nsStart] = readVarint(row, keyEnd);
  const nsEnd = nsStart + nsLen;
  if (nsEnd > row.length) throw new RangeError('row key is shorter than its length prefixes say');
  return {
    keyGroup,
    stateId,
    key: row.subarray(keyStart, keyEnd),
    namespace: row.subarray(nsStart, nsEnd),
    userKey: row.subarray(nsEnd),
  };
}

/** Builds a whole row key in one go (restore, tests, the full-snapshot reader). */
export function encodeRowKey(
  keyGroup: number,
  stateId: number,
  key: Uint8Array,
  namespace: Uint8Array,
  userKey?: Uint8Array,
): Buffer {
  const k = lengthPrefixed(key);
  const n = lengthPrefixed(namespace);
  const out = Buffer.allocUnsafe(ROW_HEADER_BYTES + k.length + n.length + (userKey?.length ?? 0));
  out.writeUInt16BE(keyGroup, 0);
  out.writeUInt16BE(stateId, 2);
  out.set(k, 4);
  out.set(n, 4 + k.length);
  if (userKey) out.set(userKey, 4 + k.length + n.length);
  return out;
}

/** Row keys up to this length get a reused exact-length buffer for view(); longer ones a fresh view. */
const MAX_POOLED_VIEW = 128;

/**
 * Assembles row keys in one reused buffer. Each state handle owns one, so the prefix
 * (key group, state id, key, namespace) is rebuilt only when the current key or namespace
 * changes, and the latin1 string and exact-length view are made at most once per row key.
 * `view()` is valid until the next build: it is a reused buffer per length, because LevelDB
 * takes keys as exact-length buffers and a fresh view per key change is an allocation on the
 * per-record path.
 */
export class RowKeyBuilder {
  private buf = Buffer.allocUnsafe(256);
  private prefixLen = 0;
  private len = 0;
  private str: string | null = null;
  private viewBuf: Buffer | null = null;
  private readonly views: (Buffer | undefined)[] = [];

  private ensure(n: number): void {
    if (n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  /** `keyPart` and `nsPart` are lengthPrefixed() forms. */
  build(keyGroup: number, stateId: number, keyPart: Uint8Array, nsPart: Uint8Array, userKey?: Uint8Array): this {
    this.prefix(keyGroup, stateId, keyPart, nsPart);
    if (userKey !== undefined) this.withUserKey(userKey);
    return this;
  }

  /**
   * Sets the row key to (key group, state id, key, namespace): the whole key of non-map rows, the
   * prefix of map entries. The key part is keyPart[0, keyLength) (a reused buffer may be longer).
   */
  prefix(keyGroup: number, stateId: number, keyPart: Uint8Array, nsPart: Uint8Array, keyLength = keyPart.length): this {
    const nsLen = nsPart.length;
    const total = ROW_HEADER_BYTES + keyLength + nsLen;
    this.ensure(total);
    const b = this.buf;
    b[0] = keyGroup >>> 8;
    b[1] = keyGroup & 0xff;
    b[2] = stateId >>> 8;
    b[3] = stateId & 0xff;
    // Loops, not set(): row-key parts are a few bytes, where TypedArray.set's call costs more than the copy.
    for (let i = 0; i < keyLength; i++) b[4 + i] = keyPart[i];
    const ns = 4 + keyLength;
    for (let i = 0; i < nsLen; i++) b[ns + i] = nsPart[i];
    this.prefixLen = total;
    this.len = total;
    this.str = null;
    this.viewBuf = null;
    return this;
  }

  /** The prefix followed by a map user key. */
  withUserKey(userKey: Uint8Array): this {
    const n = userKey.length;
    const total = this.prefixLen + n;
    this.ensure(total);
    const b = this.buf;
    const at = this.prefixLen;
    for (let i = 0; i < n; i++) b[at + i] = userKey[i];
    this.len = total;
    this.str = null;
    this.viewBuf = null;
    return this;
  }

  /** Drops the user key: the row key is the prefix again. */
  prefixOnly(): this {
    if (this.len !== this.prefixLen) {
      this.len = this.prefixLen;
      this.str = null;
      this.viewBuf = null;
    }
    return this;
  }

  /** The row key as a latin1 string: one char per byte, so string order is byte order. */
  string(): string {
    // latin1Slice is what toString('latin1', start, end) ends in, minus its argument handling.
    return (this.str ??= (this.buf as unknown as Latin1Slice).latin1Slice(0, this.len));
  }

  view(): Buffer {
    if (this.viewBuf !== null) return this.viewBuf;
    const n = this.len;
    if (n > MAX_POOLED_VIEW) return (this.viewBuf = this.buf.subarray(0, n));
    let v = this.views[n];
    if (v === undefined) this.views[n] = v = Buffer.allocUnsafeSlow(n);
    const b = this.buf;
    for (let i = 0; i < n; i++) v[i] = b[i];
    return (this.viewBuf = v);
  }
}

/** Node's Buffer method behind toString('latin1'), not in @types/node. */
interface Latin1Slice {
  latin1Slice(start: number, end: number): string;
}
