/**
 * Reads LevelDB's MANIFEST (a log of VersionEdits) to learn exactly which table files the current
 * version uses and their sizes. A native checkpoint links exactly these files: a table a
 * background compaction is still writing is not in the MANIFEST yet and must never be uploaded
 * (a half-written file under a name that later holds the full table would poison the chain).
 *
 * LevelDB appends an edit per flush and compaction and rewrites the MANIFEST only when it opens
 * the database, so in a long-running job it grows without bound (megabytes per hour under heavy
 * compaction). A checkpoint therefore does not copy it: it writes the current version as one
 * edit (`encodeManifest`, what LevelDB itself writes when it opens), and the reader is
 * incremental, so each checkpoint parses only what was appended since the last.
 *
 * Log format (leveldb/doc/log_format.md): 32 KiB blocks of records [crc32c u32 LE][length u16 LE][type u8][data];
 * types FULL=1 FIRST=2 MIDDLE=3 LAST=4; a block tail shorter than a header is zero padding.
 * VersionEdit tags: 1 comparator, 2 log number, 3 next file number, 4 last sequence, 5 compact
 * pointer, 6 deleted file, 7 new file, 9 previous log number. The crc32c is not checked when
 * reading (a torn record fails to parse; the caller then retries, and LevelDB checks crcs on open);
 * it is written (masked crc32c of type + data), since LevelDB checks it when it opens a checkpoint.
 */

const BLOCK_SIZE = 32768;
const HEADER_SIZE = 7;
const FULL = 1;
const FIRST = 2;
const MIDDLE = 3;
const LAST = 4;

export class ManifestParseError extends Error {}

export interface LiveTableFile {
  readonly number: number;
  readonly size: number;
}

/** A table file of the version: what a "new file" edit says of it. */
interface TableFileMeta {
  readonly level: number;
  readonly number: number;
  readonly size: number;
  /** Internal keys (user key + 8-byte sequence and type). */
  readonly smallest: Buffer;
  readonly largest: Buffer;
}

/** Complete log records of buf, which starts at byte `base` of the file (blocks are aligned to the file start), with the file offset where each ends. */
function* logRecords(buf: Buffer, base: number): Generator<{ data: Buffer; end: number }> {
  let pos = 0;
  let pending: Buffer[] | null = null;
  while (pos < buf.length) {
    const leftInBlock = BLOCK_SIZE - ((base + pos) % BLOCK_SIZE);
    if (leftInBlock < HEADER_SIZE) {
      pos += leftInBlock;
      continue;
    }
    if (pos + HEADER_SIZE > buf.length) throw new ManifestParseError('torn record header at the end of the MANIFEST');
    const length = buf.readUInt16LE(pos + 4);
    const type = buf[pos + 6];
    const start = pos + HEADER_SIZE;
    if (start + length > buf.length) throw new ManifestParseError('torn record at the end of the MANIFEST');
    const data = buf.subarray(start, start + length);
    pos = start + length;
    switch (type) {
      case 0: // zero-length padding record (preallocated space)
        if (length === 0) continue;
        throw new ManifestParseError(`bad record type 0 of length ${length}`);
      case FULL:
        if (pending !== null) throw new ManifestParseError('FULL record inside a fragmented record');
        yield { data, end: base + pos };
        break;
      case FIRST:
        pending = [data];
        break;
      case MIDDLE:
        if (pending === null) throw new ManifestParseError('MIDDLE record without FIRST');
        pending.push(data);
        break;
      case LAST:
        if (pending === null) throw new ManifestParseError('LAST record without FIRST');
        pending.push(data);
        yield { data: Buffer.concat(pending), end: base + pos };
        pending = null;
        break;
      default:
        throw new ManifestParseError(`unknown record type ${type}`);
    }
  }
  if (pending !== null) throw new ManifestParseError('fragmented record cut off at the end of the MANIFEST');
}

class EditReader {
  pos = 0;
  constructor(private readonly buf: Buffer) {}
  get done(): boolean {
    return this.pos >= this.buf.length;
  }
  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new ManifestParseError('VersionEdit ends inside a varint');
      const b = this.buf[this.pos++];
      result += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return result;
      mul *= 0x80;
    }
    throw new ManifestParseError('malformed varint in a VersionEdit');
  }
  slice(): Buffer {
    const n = this.varint();
    if (this.pos + n > this.buf.length) throw new ManifestParseError('VersionEdit ends inside a key');
    const out = Buffer.from(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return out;
  }
}

/**
 * The version a MANIFEST describes, built edit by edit. `feed` takes the bytes appended since the
 * last call (a MANIFEST only grows while LevelDB has the database open).
 */
export class ManifestState {
  comparator: Buffer | null = null;
  /** Write-ahead logs numbered >= this one (and prevLogNumber, when not 0) hold data not in tables yet. */
  logNumber = 0;
  prevLogNumber = 0;
  nextFileNumber = 0;
  lastSequence = 0;
  private readonly compactPointers = new Map<number, Buffer>();
  private readonly files = new Map<number, TableFileMeta>();
  /** Bytes of the MANIFEST applied so far (a record boundary). */
  consumed = 0;

  /** The table files of the current version, by number. */
  get tables(): LiveTableFile[] {
    return [...this.files.values()]
      .map((f) => ({ number: f.number, size: f.size }))
      .sort((a, b) => a.number - b.number);
  }

  /**
   * Applies the records in `bytes`, the MANIFEST from offset `consumed` on. A torn record at the
   * end (LevelDB is appending) throws ManifestParseError after everything before it was applied;
   * feed the rest again later. Any other error leaves the state unusable: start a new one.
   */
  feed(bytes: Buffer): void {
    for (const { data, end } of logRecords(bytes, this.consumed)) {
      this.apply(data);
      // logRecords reads ahead of what it yields: advance only past applied records.
      this.consumed = end;
    }
  }

  private apply(edit: Buffer): void {
    const r = new EditReader(edit);
    while (!r.done) {
      const tag = r.varint();
      switch (tag) {
        case 1:
          this.comparator = r.slice();
          break;
        case 2:
          this.logNumber = r.varint();
          break;
        case 9:
          this.prevLogNumber = r.varint();
          break;
        case 3:
          this.nextFileNumber = r.varint();
          break;
        case 4:
          this.lastSequence = r.varint();
          break;
        case 5: {
          const level = r.varint();
          this.compactPointers.set(level, r.slice());
          break;
        }
        case 6: {
          r.varint(); // level
          this.files.delete(r.varint());
          break;
        }
        case 7: {
          const level = r.varint();
          const number = r.varint();
          const size = r.varint();
          const smallest = r.slice();
          const largest = r.slice();
          this.files.set(number, { level, number, size, smallest, largest });
          break;
        }
        default:
          throw new ManifestParseError(`unknown VersionEdit tag ${tag}`);
      }
    }
  }

  /**
   * A MANIFEST of exactly this version: one edit with the comparator, log and file numbers, last
   * sequence, compact pointers and every live table file (as LevelDB's VersionSet::WriteSnapshot).
   */
  encode(): Buffer {
    const w = new EditWriter();
    if (this.comparator !== null) w.varint(1).slice(this.comparator);
    w.varint(2).varint(this.logNumber);
    if (this.prevLogNumber !== 0) w.varint(9).varint(this.prevLogNumber);
    w.varint(3).varint(this.nextFileNumber);
    w.varint(4).varint(this.lastSequence);
    for (const [level, key] of [...this.compactPointers].sort((a, b) => a[0] - b[0]))
      w.varint(5).varint(level).slice(key);
    for (const f of [...this.files.values()].sort((a, b) => a.level - b.level || a.number - b.number)) {
      w.varint(7).varint(f.level).varint(f.number).varint(f.size).slice(f.smallest).slice(f.largest);
    }
    return frameLogRecord(w.bytes());
  }
}

class EditWriter {
  private readonly out: number[] = [];
  varint(v: number): this {
    while (v >= 0x80) {
      this.out.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.out.push(v);
    return this;
  }
  /** Length-prefixed bytes (keys are tens of bytes, and a version has few files). */
  slice(b: Buffer): this {
    this.varint(b.length);
    for (const x of b) this.out.push(x);
    return this;
  }
  bytes(): Buffer {
    return Buffer.from(this.out);
  }
}

/** One log record (leveldb/doc/log_format.md): fragments in 32 KiB blocks, each [masked crc32c][length][type][data]. */
function frameLogRecord(data: Buffer): Buffer {
  const out: Buffer[] = [];
  let blockOffset = 0;
  let pos = 0;
  let first = true;
  do {
    const leftInBlock = BLOCK_SIZE - blockOffset;
    if (leftInBlock < HEADER_SIZE) {
      out.push(Buffer.alloc(leftInBlock));
      blockOffset = 0;
    }
    const n = Math.min(data.length - pos, BLOCK_SIZE - blockOffset - HEADER_SIZE);
    const last = pos + n === data.length;
    const type = first && last ? FULL : first ? FIRST : last ? LAST : MIDDLE;
    const fragment = data.subarray(pos, pos + n);
    const header = Buffer.allocUnsafe(HEADER_SIZE);
    header.writeUInt32LE(maskCrc(crc32c(fragment, crc32c(Buffer.from([type])))), 0);
    header.writeUInt16LE(n, 4);
    header[6] = type;
    out.push(header, fragment);
    blockOffset += HEADER_SIZE + n;
    pos += n;
    first = false;
  } while (pos < data.length);
  return Buffer.concat(out);
}

const CRC32C_TABLE = (() => {
  const t = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c;
  }
  return t;
})();

/** CRC-32C (Castagnoli), continuing from `crc` (a previous result). */
export function crc32c(bytes: Uint8Array, crc = 0): number {
  let c = ~crc;
  for (let i = 0; i < bytes.length; i++) c = CRC32C_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** LevelDB stores crcs masked (a crc of data that holds crcs is otherwise weak). */
function maskCrc(crc: number): number {
  return (((crc >>> 15) | (crc << 17)) + 0xa282ead8) >>> 0;
}

/** The version of a whole MANIFEST. */
export function readManifest(manifest: Buffer): ManifestState {
  const state = new ManifestState();
  state.feed(manifest);
  return state;
}

/** The table files of the version the MANIFEST ends with. */
export function liveTableFiles(manifest: Buffer): LiveTableFile[] {
  return readManifest(manifest).tables;
}

/** LevelDB's name of table file `number` (`%06llu.ldb`; `.sst` is the legacy suffix). */
export function tableFileName(number: number, suffix: 'ldb' | 'sst' = 'ldb'): string {
  return `${String(number).padStart(6, '0')}.${suffix}`;
}
