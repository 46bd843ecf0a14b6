/**
 * Reads LevelDB's MANIFEST (a log of VersionEdits) to learn exactly which table files the current
 * version uses and their sizes. A native checkpoint links exactly these files: a table a
 * background compaction is still writing is not in the MANIFEST yet and must never be uploaded
 * (a half-written file under a name that later holds the full table would poison the chain).
 *
 * Log format (leveldb/doc/log_format.md): 32 KiB blocks of records [crc32c u32 LE][length u16 LE][type u8][data];
 * types FULL=1 FIRST=2 MIDDLE=3 LAST=4; a block tail shorter than a header is zero padding.
 * VersionEdit tags: 1 comparator, 2 log number, 3 next file number, 4 last sequence, 5 compact
 * pointer, 6 deleted file, 7 new file, 9 previous log number. The crc32c is not checked here (a
 * torn record fails to parse; the caller then retries, and LevelDB checks crcs on open).
 */

const BLOCK_SIZE = 32768;
const HEADER_SIZE = 7;

export class ManifestParseError extends Error {}

export interface LiveTableFile {
  readonly number: number;
  readonly size: number;
}

function* logRecords(buf: Buffer): Generator<Buffer> {
  let pos = 0;
  let pending: Buffer[] | null = null;
  while (pos < buf.length) {
    const leftInBlock = BLOCK_SIZE - (pos % BLOCK_SIZE);
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
      case 1:
        if (pending !== null) throw new ManifestParseError('FULL record inside a fragmented record');
        yield data;
        break;
      case 2:
        pending = [data];
        break;
      case 3:
        if (pending === null) throw new ManifestParseError('MIDDLE record without FIRST');
        pending.push(data);
        break;
      case 4:
        if (pending === null) throw new ManifestParseError('LAST record without FIRST');
        pending.push(data);
        yield Buffer.concat(pending);
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
  skipSlice(): void {
    const n = this.varint();
    if (this.pos + n > this.buf.length) throw new ManifestParseError('VersionEdit ends inside a key');
    this.pos += n;
  }
}

/** The table files of the version the MANIFEST ends with. */
export function liveTableFiles(manifest: Buffer): LiveTableFile[] {
  return readManifest(manifest).tables;
}

export interface ManifestState {
  readonly tables: LiveTableFile[];
  /** Write-ahead logs numbered >= this one (and prevLogNumber, when not 0) hold data not in tables yet. */
  readonly logNumber: number;
  readonly prevLogNumber: number;
}

export function readManifest(manifest: Buffer): ManifestState {
  const live = new Map<number, number>();
  let logNumber = 0;
  let prevLogNumber = 0;
  for (const record of logRecords(manifest)) {
    const r = new EditReader(record);
    while (!r.done) {
      const tag = r.varint();
      switch (tag) {
        case 1:
          r.skipSlice();
          break;
        case 2:
          logNumber = r.varint();
          break;
        case 9:
          prevLogNumber = r.varint();
          break;
        case 3:
        case 4:
          r.varint();
          break;
        case 5:
          r.varint();
          r.skipSlice();
          break;
        case 6: {
          r.varint();
          live.delete(r.varint());
          break;
        }
        case 7: {
          r.varint();
          const number = r.varint();
          const size = r.varint();
          r.skipSlice();
          r.skipSlice();
          live.set(number, size);
          break;
        }
        default:
          throw new ManifestParseError(`unknown VersionEdit tag ${tag}`);
      }
    }
  }
  const tables = [...live].map(([number, size]) => ({ number, size })).sort((a, b) => a.number - b.number);
  return { tables, logNumber, prevLogNumber };
}

/** LevelDB's name of table file `number` (`%06llu.ldb`; `.sst` is the legacy suffix). */
export function tableFileName(number: number, suffix: 'ldb' | 'sst' = 'ldb'): string {
  return `${String(number).padStart(6, '0')}.${suffix}`;
}
