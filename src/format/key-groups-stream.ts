import { crc32 } from 'node:zlib';
import type { StateFileReader, StateOutputStream } from '../backend/contract.js';
import type {
  FileStreamHandle,
  KeyedStateMetaInfo,
  KeyGroupBlock,
  KeyGroupRangeJson,
  KeyGroupsStateHandle,
  StreamHandle,
} from '../backend/handles.js';
import { FormatError, SnapshotError, StreamStateError } from '../errors.js';
import type { SerializerSnapshot } from '../serializers/serializer.js';
import { ByteReader, ByteWriter } from './bytes.js';

/**
 * The key-groups stream (docs/FORMAT.md, "Key-groups stream"): a full snapshot of keyed state,
 * written key group by key group so a restore reads only the blocks of its own key groups.
 *
 *   Stream  := Header Block* Footer
 *   Header  := "SSKG" | u16 version | u16 flags | u32 headerLen | JSON header
 *   Block   := u32 keyGroup | Section* | u16 0xFFFF
 *   Section := u16 stateId | varint entryCount | Entry*
 *   Footer  := varint count (u32 kg, u64 offset, u32 length, u32 crc32)* | u32 footerLen | "SSKE"
 *
 * Everything inside a section is length-prefixed, so sections parse without serializers (a
 * restored state that is never registered again is carried over as raw bytes).
 */
export const KEY_GROUPS_MAGIC = Buffer.from('SSKG', 'latin1');
export const KEY_GROUPS_END_MAGIC = Buffer.from('SSKE', 'latin1');
export const KEY_GROUPS_FORMAT_VERSION = 1;
/** Header flag bit 0: entries are sorted (canonical layout). */
export const FLAG_CANONICAL = 1;
const END_OF_KEY_GROUP = 0xffff;
const FIXED_HEADER_BYTES = 12;
/** State ids are u16 and 0xFFFF marks the end of a key group. */
export const MAX_STATE_ID = 0xfffe;
const DEFAULT_FLUSH_BYTES = 1024 * 1024;
/** A block is checksummed and handed to the stream in pieces of at most this size (see WritePacer). */
const PIECE_BYTES = 1024 * 1024;
/** Adjacent blocks are fetched with one ranged read up to this size (readKeyGroups' default). */
const MAX_COALESCED_READ = 8 * 1024 * 1024;

/**
 * The largest block (one key group) a stream holds: a block is written, checksummed and read in
 * one piece, and 2 GiB - 1 is the largest single file-system write or read. A key group that
 * would grow past it is refused at snapshot time (SNAPSHOT_TOO_LARGE), naming the key group.
 * @internal Mutable so tests can check the refusal without allocating 2 GiB.
 */
export const keyGroupBlockLimit = { maxBytes: 2 ** 31 - 1 };

export const HEAP_LAYOUT = 'heap-v1';
export const CANONICAL_LAYOUT = 'canonical-v1';

export interface KeyGroupsStreamHeader {
  readonly layout: string;
  readonly keySerializer: SerializerSnapshot;
  readonly maxParallelism: number;
  readonly keyGroupRange: KeyGroupRangeJson;
  readonly states: readonly KeyedStateMetaInfo[];
}

// ------------------------------------------------------------------------------------ writing

/**
 * Collects the entries of one section (one state within one key group). Reusable: the stream
 * writer resets it after copying. Entry encodings:
 *   value:  bytes(key) bytes(ns) bytes(value)
 *   list:   bytes(key) bytes(ns) varint n bytes(element)*n
 *   map:    bytes(key) bytes(ns) varint n (bytes(userKey) u8 isNull [bytes(value)])*n
 *   timers: f64 timestamp bytes(key) bytes(ns)
 */
export class SectionWriter {
  count = 0;
  readonly out = new ByteWriter(16 * 1024);

  valueEntry(key: Uint8Array, namespace: Uint8Array, value: Uint8Array): void {
    this.count++;
    this.out.bytes(key).bytes(namespace).bytes(value);
  }

  /** Follow with exactly `n` listElement calls. */
  listEntry(key: Uint8Array, namespace: Uint8Array, n: number): void {
    this.count++;
    this.out.bytes(key).bytes(namespace).varint(n);
  }

  listElement(element: Uint8Array): void {
    this.out.bytes(element);
  }

  /** Follow with exactly `n` mapElement calls. */
  mapEntry(key: Uint8Array, namespace: Uint8Array, n: number): void {
    this.count++;
    this.out.bytes(key).bytes(namespace).varint(n);
  }

  mapElement(userKey: Uint8Array, value: Uint8Array | null): void {
    this.out.bytes(userKey);
    if (value === null) this.out.u8(1);
    else this.out.u8(0).bytes(value);
  }

  timerEntry(timestamp: number, key: Uint8Array, namespace: Uint8Array): void {
    this.count++;
    this.out.f64(timestamp).bytes(key).bytes(namespace);
  }

  reset(): void {
    this.count = 0;
    this.out.reset();
  }
}

/**
 * Lets a long write share the thread (the heap snapshot's TimeSlicer): between pieces of a large
 * block the writer asks `due()` and awaits `yield()`; a stream write that may wait for the store
 * is bracketed by `suspend()` / `resume()` (that wait is not the writer's own work).
 */
export interface WritePacer {
  due(): boolean;
  yield(): Promise<void>;
  suspend(): void;
  resume(): void;
}

/**
 * Streams a key-groups stream to a StateOutputStream: blocks are built in memory one key group
 * at a time and flushed in ~1 MiB writes, so the whole snapshot never sits in memory.
 */
export class KeyGroupsStreamWriter {
  private readonly out = new ByteWriter(256 * 1024);
  private readonly blocks: KeyGroupBlock[] = [];
  /** Bytes already handed to the stream. */
  private flushed = 0;
  private blockStart = -1;
  private currentKeyGroup = -1;
  private sectionsInBlock = 0;
  /** Entries of the open block (recorded per block: key-group sizes, docs/FORMAT.md). */
  private entriesInBlock = 0;
  private readonly flushBytes: number;

  constructor(
    private readonly stream: StateOutputStream,
    private readonly header: KeyGroupsStreamHeader,
    opts: { canonical?: boolean; flushBytes?: number } = {},
  ) {
    this.flushBytes = opts.flushBytes ?? DEFAULT_FLUSH_BYTES;
    const json = Buffer.from(JSON.stringify(header), 'utf8');
    this.out
      .raw(KEY_GROUPS_MAGIC)
      .u16(KEY_GROUPS_FORMAT_VERSION)
      .u16(opts.canonical ? FLAG_CANONICAL : 0)
      .u32(json.length)
      .raw(json);
  }

  /** Key groups must be written in ascending order, each at most once. */
  beginKeyGroup(keyGroup: number): void {
    if (this.blockStart >= 0)
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `key group ${this.currentKeyGroup} is still open; call endKeyGroup first`,
      );
    const last = this.blocks.length === 0 ? -1 : this.blocks[this.blocks.length - 1].keyGroup;
    if (keyGroup <= last || keyGroup <= this.currentKeyGroup) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `key groups must be written in ascending order: ${keyGroup} after ${Math.max(last, this.currentKeyGroup)}`,
      );
    }
    this.currentKeyGroup = keyGroup;
    this.blockStart = this.out.length;
    this.sectionsInBlock = 0;
    this.entriesInBlock = 0;
    this.out.u32(keyGroup);
  }

  /** Appends the section's entries (if any) and resets the section writer. */
  addSection(stateId: number, section: SectionWriter): void {
    if (section.count > 0) this.addRawSection(stateId, section.count, section.out.view());
    section.reset();
  }

  /** Appends an already encoded section (entries bytes as read by the reader). */
  addRawSection(stateId: number, entryCount: number, entries: Uint8Array): void {
    if (this.blockStart < 0)
      throw new StreamStateError('INVALID_ARGUMENT', 'addSection outside a key group; call beginKeyGroup first');
    if (!Number.isInteger(stateId) || stateId < 0 || stateId > MAX_STATE_ID) {
      throw new StreamStateError('INVALID_ARGUMENT', `state id ${stateId} is outside [0, ${MAX_STATE_ID}]`);
    }
    if (entryCount === 0) return;
    // id + count (at most 10 bytes) + entries + the end mark that closes the block
    const blockBytes = this.out.length - this.blockStart + 2 + 10 + entries.byteLength + 2;
    if (blockBytes > keyGroupBlockLimit.maxBytes) {
      throw new SnapshotError(
        'SNAPSHOT_TOO_LARGE',
        `key group ${this.currentKeyGroup} serializes to more than ${keyGroupBlockLimit.maxBytes} bytes (state id ${stateId} adds ${entries.byteLength}); ` +
          'a key group is written as one block and cannot exceed the largest single write. Raise maxParallelism so its keys spread over more key groups ' +
          '(takes effect from a savepoint restored with the new value), or keep less state per key.',
      );
    }
    this.out.u16(stateId).varint(entryCount).raw(entries);
    this.sectionsInBlock++;
    this.entriesInBlock += entryCount;
  }

  /**
   * Closes the key group; a key group without sections leaves no block. May flush to the stream.
   * With a `pacer`, the checksum and the flush go in pieces of at most 1 MiB with yields between.
   */
  async endKeyGroup(pacer?: WritePacer): Promise<void> {
    if (this.blockStart < 0) throw new StreamStateError('INVALID_ARGUMENT', 'endKeyGroup without beginKeyGroup');
    const start = this.blockStart;
    this.blockStart = -1;
    if (this.sectionsInBlock === 0) {
      // Roll back the key-group id: empty key groups have no block.
      this.out.truncate(start);
    } else {
      this.out.u16(END_OF_KEY_GROUP);
      const bytes = this.out.view().subarray(start);
      let crc = 0;
      for (let at = 0; at < bytes.length; at += PIECE_BYTES) {
        // Nothing writes to `out` while this waits: the snapshot is inside endKeyGroup.
        if (at > 0 && pacer?.due()) await pacer.yield();
        crc = crc32(bytes.subarray(at, at + PIECE_BYTES), crc);
      }
      this.blocks.push({
        keyGroup: this.currentKeyGroup,
        offset: this.flushed + start,
        length: bytes.length,
        crc32: crc,
        entries: this.entriesInBlock,
      });
    }
    if (this.out.length >= this.flushBytes) await this.flush(pacer);
  }

  get blockCount(): number {
    return this.blocks.length;
  }

  /**
   * Writes the footer and closes the stream. No blocks → the stream is discarded and the result
   * is null (an empty snapshot).
   */
  async finish(): Promise<KeyGroupsStateHandle | null> {
    if (this.blockStart >= 0)
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `key group ${this.currentKeyGroup} is still open; call endKeyGroup first`,
      );
    if (this.blocks.length === 0) {
      await this.stream.discard();
      return null;
    }
    const footerStart = this.out.length;
    this.out.varint(this.blocks.length);
    for (const b of this.blocks) this.out.u32(b.keyGroup).u64(b.offset).u32(b.length).u32(b.crc32);
    this.out.u32(this.out.length - footerStart).raw(KEY_GROUPS_END_MAGIC);
    await this.flush();
    const stream = await this.stream.closeAndGetHandle();
    if (stream === null)
      throw new SnapshotError('SNAPSHOT_FAILED', 'the checkpoint stream returned no handle although data was written');
    const h = this.header;
    return {
      type: 'key-groups',
      layout: h.layout,
      keyGroupRange: { start: h.keyGroupRange.start, end: h.keyGroupRange.end },
      maxParallelism: h.maxParallelism,
      keySerializer: h.keySerializer,
      states: h.states,
      blocks: this.blocks,
      stream,
    };
  }

  private async flush(pacer?: WritePacer): Promise<void> {
    if (this.out.length === 0) return;
    // The stream copies what it keeps (StateOutputStream.write), so the buffer is reused once
    // the write resolved: no fresh buffer per flush (external memory that drives full GCs).
    const chunk = this.out.view();
    this.flushed += chunk.length;
    if (pacer === undefined) await this.stream.write(chunk);
    else {
      for (let at = 0; at < chunk.length; at += PIECE_BYTES) {
        if (at > 0 && pacer.due()) await pacer.yield();
        // The write's synchronous part (checksum, copy) is own work; its wait for the store is not.
        const written = this.stream.write(chunk.subarray(at, at + PIECE_BYTES));
        pacer.suspend();
        try {
          await written;
        } finally {
          pacer.resume();
        }
      }
    }
    this.out.reset();
  }
}

// ------------------------------------------------------------------------------------ reading

export interface RawSection {
  readonly stateId: number;
  readonly entryCount: number;
  /** The encoded entries (without the section's id and count). */
  readonly bytes: Buffer;
}

export interface RawKeyGroup {
  readonly keyGroup: number;
  readonly sections: readonly RawSection[];
}

function describeStream(stream: StreamHandle, files: StateFileReader | undefined): string {
  if (stream.type === 'inline') return `inline key-groups stream (${stream.size} bytes)`;
  return files ? files.describe(stream) : stream.path;
}

/** Checks magic and version of the first 12 bytes. */
export function checkKeyGroupsHeader(
  fixed: Buffer,
  what: string,
): { version: number; flags: number; headerLength: number } {
  if (fixed.length < FIXED_HEADER_BYTES) {
    throw new FormatError(
      'TRUNCATED',
      `${what} is ${fixed.length} bytes long, too short for a key-groups stream. Restore from another checkpoint.`,
    );
  }
  if (!fixed.subarray(0, 4).equals(KEY_GROUPS_MAGIC)) {
    throw new FormatError(
      'BAD_MAGIC',
      `${what} is not a streamstate key-groups stream (magic ${fixed.subarray(0, 4).toString('hex')}). Check that the handle points at the right file.`,
    );
  }
  const version = fixed.readUInt16BE(4);
  if (version === 0) {
    throw new FormatError(
      'CORRUPT',
      `${what} has key-groups format version 0, which no streamstate writes: the file is damaged. Restore from another checkpoint.`,
    );
  }
  if (version > KEY_GROUPS_FORMAT_VERSION) {
    throw new FormatError(
      'UNSUPPORTED_VERSION',
      `${what} was written by a newer streamstate (key-groups format ${version}; this version reads up to ${KEY_GROUPS_FORMAT_VERSION}). Upgrade streamstate to restore it.`,
    );
  }
  const flags = fixed.readUInt16BE(6);
  // Unknown flag bits (e.g. a future compression flag) change how blocks must be read: refuse them.
  if ((flags & ~FLAG_CANONICAL) !== 0) {
    throw new FormatError(
      'UNSUPPORTED_VERSION',
      `${what} uses key-groups stream flags 0x${flags.toString(16)} this streamstate does not know. Upgrade streamstate to restore it.`,
    );
  }
  return { version, flags, headerLength: fixed.readUInt32BE(8) };
}

/**
 * checkKeyGroupsHeader for a stream read by range, whose whole-file crc32 is otherwise never
 * checked: when the header names a version or flags this streamstate does not know, the file's
 * checksum is verified first (in bounded chunks), so a damaged file is reported as
 * CHECKSUM_MISMATCH / TRUNCATED rather than "upgrade streamstate".
 */
export async function checkKeyGroupsHeaderOf(
  stream: StreamHandle,
  files: StateFileReader,
  fixed: Buffer,
  what: string,
): Promise<{ version: number; flags: number; headerLength: number }> {
  try {
    return checkKeyGroupsHeader(fixed, what);
  } catch (err) {
    if (stream.type === 'file' && err instanceof FormatError && err.code === 'UNSUPPORTED_VERSION')
      await verifyWholeFile(stream, files, what);
    throw err;
  }
}

async function verifyWholeFile(stream: FileStreamHandle, files: StateFileReader, what: string): Promise<void> {
  let crc = 0;
  for (let offset = 0; offset < stream.size; ) {
    const length = Math.min(MAX_COALESCED_READ, stream.size - offset);
    crc = crc32(await files.readRange(stream, offset, length), crc);
    offset += length;
  }
  if (crc !== stream.crc32 >>> 0) {
    throw new FormatError(
      'CHECKSUM_MISMATCH',
      `${what}: crc32 is ${crc.toString(16)}, expected ${(stream.crc32 >>> 0).toString(16)}; the file is corrupt (its version field too). Restore from another checkpoint.`,
    );
  }
}

export type EntryKind = 'value' | 'list' | 'map' | 'timers';

/** How entries of a state kind are shaped in a section. */
export function entryKindOf(kind: KeyedStateMetaInfo['kind']): EntryKind {
  return kind === 'list' ? 'list' : kind === 'map' ? 'map' : kind === 'timers' ? 'timers' : 'value';
}

/** State id → entry shape, from the states a handle (or header) lists. */
export function entryKindsOf(states: readonly KeyedStateMetaInfo[]): Map<number, EntryKind> {
  return new Map(states.map((s) => [s.stateId, entryKindOf(s.kind)]));
}

/**
 * Parses and verifies one block: length, crc32, key-group id, section framing, end mark.
 * `bytes` holds exactly the block; sections are views into it (no copy). Sections carry no
 * length, so the entry shape of each state id (`kinds`) is needed to find where one ends.
 */
export function parseBlock(
  bytes: Buffer,
  block: KeyGroupBlock,
  kinds: ReadonlyMap<number, EntryKind>,
  what: string,
): RawKeyGroup {
  const where = `${what}, key group ${block.keyGroup}`;
  if (bytes.length !== block.length) {
    throw new FormatError(
      'TRUNCATED',
      `${where}: expected ${block.length} bytes but found ${bytes.length}. The file was cut short; restore from another checkpoint.`,
    );
  }
  if (crc32(bytes) !== block.crc32) {
    throw new FormatError(
      'CHECKSUM_MISMATCH',
      `${where}: checksum mismatch, the block is corrupt. Restore from another checkpoint.`,
    );
  }
  const r = new ByteReader(bytes, where);
  const kg = r.u32();
  if (kg !== block.keyGroup) {
    throw new FormatError(
      'CORRUPT',
      `${where}: the block holds key group ${kg}. The handle does not match the file; restore from another checkpoint.`,
    );
  }
  const sections: RawSection[] = [];
  for (;;) {
    const stateId = r.u16();
    if (stateId === END_OF_KEY_GROUP) break;
    const kind = kinds.get(stateId);
    if (kind === undefined)
      throw new FormatError(
        'CORRUPT',
        `${where}: section for unknown state id ${stateId}. The handle does not match the file.`,
      );
    const entryCount = r.varint();
    const start = r.pos;
    for (let i = 0; i < entryCount; i++) skipEntry(r, kind);
    sections.push({ stateId, entryCount, bytes: bytes.subarray(start, r.pos) });
  }
  if (!r.done)
    throw new FormatError('CORRUPT', `${where}: ${r.remaining} unexpected bytes after the end-of-key-group mark.`);
  return { keyGroup: kg, sections };
}

/** Checked like `r.raw`, without a view per field (parsing a block is part of every restore). */
function skipBytes(r: ByteReader): void {
  r.skip(r.varint());
}

function skipEntry(r: ByteReader, kind: EntryKind): void {
  if (kind === 'timers') r.raw(8);
  skipBytes(r);
  skipBytes(r);
  if (kind === 'value') skipBytes(r);
  else if (kind === 'list') {
    const n = r.varint();
    for (let i = 0; i < n; i++) skipBytes(r);
  } else if (kind === 'map') {
    const n = r.varint();
    for (let i = 0; i < n; i++) {
      skipBytes(r);
      if (r.u8() === 0) skipBytes(r);
    }
  }
}

// ------------------------------------------------------------------------------------ entries

export interface RawValueEntry {
  readonly key: Buffer;
  readonly namespace: Buffer;
  readonly value: Buffer;
}
export interface RawListEntry {
  readonly key: Buffer;
  readonly namespace: Buffer;
  readonly elements: Buffer[];
}
export interface RawMapEntry {
  readonly key: Buffer;
  readonly namespace: Buffer;
  /** [userKey, value or null] */
  readonly entries: Array<[Buffer, Buffer | null]>;
}
export interface RawTimerEntry {
  readonly timestamp: number;
  readonly key: Buffer;
  readonly namespace: Buffer;
}

/** Decoders for the entries of a section; the buffers are views into the section. */
export function* valueEntries(section: RawSection, what = 'key-groups section'): Generator<RawValueEntry> {
  const r = new ByteReader(section.bytes, what);
  for (let i = 0; i < section.entryCount; i++) yield { key: r.bytes(), namespace: r.bytes(), value: r.bytes() };
}

export function* listEntries(section: RawSection, what = 'key-groups section'): Generator<RawListEntry> {
  const r = new ByteReader(section.bytes, what);
  for (let i = 0; i < section.entryCount; i++) {
    const key = r.bytes();
    const namespace = r.bytes();
    const n = r.count(1, 'list elements');
    const elements: Buffer[] = new Array(n);
    for (let j = 0; j < n; j++) elements[j] = r.bytes();
    yield { key, namespace, elements };
  }
}

export function* mapEntries(section: RawSection, what = 'key-groups section'): Generator<RawMapEntry> {
  const r = new ByteReader(section.bytes, what);
  for (let i = 0; i < section.entryCount; i++) {
    const key = r.bytes();
    const namespace = r.bytes();
    const n = r.count(2, 'map elements');
    const entries: Array<[Buffer, Buffer | null]> = new Array(n);
    for (let j = 0; j < n; j++) {
      const userKey = r.bytes();
      entries[j] = [userKey, r.u8() === 0 ? r.bytes() : null];
    }
    yield { key, namespace, entries };
  }
}

export function* timerEntries(section: RawSection, what = 'key-groups section'): Generator<RawTimerEntry> {
  const r = new ByteReader(section.bytes, what);
  for (let i = 0; i < section.entryCount; i++) yield { timestamp: r.f64(), key: r.bytes(), namespace: r.bytes() };
}

/** Number of stored entries a section represents (map: one per user key; others: one per entry). */
export function countSectionEntries(section: RawSection, kind: EntryKind): number {
  if (kind !== 'map') return section.entryCount;
  let n = 0;
  for (const e of mapEntries(section)) n += e.entries.length;
  return n;
}

// ------------------------------------------------------------------------------------ canonical order

/** Unsigned lexicographic order of `b[aS, aE)` and `b[bS, bE)`, a prefix first (as Buffer.compare). */
function compareRanges(b: Buffer, aS: number, aE: number, bS: number, bE: number): number {
  const la = aE - aS;
  const lb = bE - bS;
  const n = la < lb ? la : lb;
  // Keys mostly differ within a few bytes: a JS loop beats a native call there.
  const quick = n < 16 ? n : 16;
  for (let i = 0; i < quick; i++) {
    const d = b[aS + i] - b[bS + i];
    if (d !== 0) return d;
  }
  if (n > quick) {
    const c = b.compare(b, bS + quick, bS + n, aS + quick, aS + n);
    if (c !== 0) return c;
  }
  return la - lb;
}

/**
 * Writes the `entryCount` entries of `bytes` (one section's encoding) to `out` in canonical order
 * (layout canonical-v1): sorted by key bytes, then namespace bytes (timers: then timestamp); map
 * elements by user-key bytes; list elements keep their order. Equal entries keep their input
 * order. The entries are indexed by offset and copied field by field (lengths re-encoded as
 * minimal varints), so no per-entry objects or views are made. `dropEmpty` leaves out lists
 * and maps without elements. Returns the number of entries written.
 */
export function writeCanonicalEntries(
  kind: EntryKind,
  bytes: Uint8Array,
  entryCount: number,
  out: ByteWriter,
  dropEmpty: boolean,
  what = 'key-groups section',
): number {
  if (entryCount === 0) return 0;
  const b = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const r = new ByteReader(b, what);
  // Per entry: key start/end, namespace start/end, body start (value length / element count), entry end.
  const at = new Int32Array(entryCount * 6);
  const stamps = kind === 'timers' ? new Float64Array(entryCount) : undefined;
  const order: number[] = [];
  for (let i = 0; i < entryCount; i++) {
    if (stamps !== undefined) stamps[i] = r.f64();
    const o = i * 6;
    const kl = r.varint();
    at[o] = r.pos;
    r.skip(kl);
    at[o + 1] = r.pos;
    const nl = r.varint();
    at[o + 2] = r.pos;
    r.skip(nl);
    at[o + 3] = r.pos;
    at[o + 4] = r.pos;
    let keep = true;
    if (kind === 'value') r.skip(r.varint());
    else if (kind === 'list') {
      const n = r.varint();
      keep = n > 0 || !dropEmpty;
      for (let j = 0; j < n; j++) r.skip(r.varint());
    } else if (kind === 'map') {
      const n = r.varint();
      keep = n > 0 || !dropEmpty;
      for (let j = 0; j < n; j++) {
        r.skip(r.varint());
        if (r.u8() === 0) r.skip(r.varint());
      }
    }
    at[o + 5] = r.pos;
    if (keep) order.push(i);
  }
  const byKeyNs = (x: number, y: number): number => {
    const ox = x * 6;
    const oy = y * 6;
    return (
      compareRanges(b, at[ox], at[ox + 1], at[oy], at[oy + 1]) ||
      compareRanges(b, at[ox + 2], at[ox + 3], at[oy + 2], at[oy + 3])
    );
  };
  if (stamps !== undefined) {
    order.sort((x, y) => {
      const c = byKeyNs(x, y);
      if (c !== 0) return c;
      const d = stamps[x] - stamps[y];
      return d < 0 ? -1 : d > 0 ? 1 : 0;
    });
  } else order.sort(byKeyNs);
  for (const i of order) {
    const o = i * 6;
    if (stamps !== undefined) out.f64(stamps[i]);
    out.varint(at[o + 1] - at[o]).rawRange(b, at[o], at[o + 1]);
    out.varint(at[o + 3] - at[o + 2]).rawRange(b, at[o + 2], at[o + 3]);
    if (kind === 'timers') continue;
    r.pos = at[o + 4];
    if (kind === 'value') {
      const vl = r.varint();
      out.varint(vl).rawRange(b, r.pos, r.pos + vl);
    } else if (kind === 'list') {
      const n = r.varint();
      out.varint(n);
      for (let j = 0; j < n; j++) {
        const el = r.varint();
        out.varint(el).rawRange(b, r.pos, r.pos + el);
        r.pos += el;
      }
    } else writeSortedMapElements(b, r, out);
  }
  return order.length;
}

/** The elements of one map entry (reader at its count), sorted by user-key bytes; any non-zero isNull byte reads as null. */
function writeSortedMapElements(b: Buffer, r: ByteReader, out: ByteWriter): void {
  const n = r.count(2, 'map elements');
  out.varint(n);
  // Per element: user key start/end, value start/end (-1 = null).
  const el = new Int32Array(n * 4);
  for (let j = 0; j < n; j++) {
    const ukl = r.varint();
    el[j * 4] = r.pos;
    r.pos += ukl;
    el[j * 4 + 1] = r.pos;
    if (r.u8() === 0) {
      const vl = r.varint();
      el[j * 4 + 2] = r.pos;
      r.pos += vl;
      el[j * 4 + 3] = r.pos;
    } else el[j * 4 + 2] = -1;
  }
  const order = Array.from({ length: n }, (_, j) => j);
  if (n > 1) order.sort((x, y) => compareRanges(b, el[x * 4], el[x * 4 + 1], el[y * 4], el[y * 4 + 1]));
  for (const j of order) {
    const o = j * 4;
    out.varint(el[o + 1] - el[o]).rawRange(b, el[o], el[o + 1]);
    if (el[o + 2] < 0) out.u8(1);
    else
      out
        .u8(0)
        .varint(el[o + 3] - el[o + 2])
        .rawRange(b, el[o + 2], el[o + 3]);
  }
}

/**
 * Re-encodes a section in canonical order (layout canonical-v1); see writeCanonicalEntries.
 * Serializer-independent, so any writer (or a raw restored section) can use it.
 */
export function canonicalizeSection(kind: EntryKind, section: RawSection, out: SectionWriter): void {
  out.count += writeCanonicalEntries(kind, section.bytes, section.entryCount, out.out, false);
}

// ------------------------------------------------------------------------------------ reading a handle

async function readStreamBytes(stream: StreamHandle, what: string): Promise<Buffer> {
  // Only inline streams are decoded whole; files are read by range.
  if (stream.type !== 'inline') throw new StreamStateError('INVALID_ARGUMENT', `${what} is not inline`);
  const bytes = Buffer.from(stream.data, 'base64');
  if (bytes.length !== stream.size) {
    throw new FormatError(
      'TRUNCATED',
      `${what}: expected ${stream.size} bytes but the inline data holds ${bytes.length}. The _metadata is damaged; restore from another checkpoint.`,
    );
  }
  if (crc32(bytes) !== stream.crc32) {
    throw new FormatError(
      'CHECKSUM_MISMATCH',
      `${what}: checksum mismatch of the inline data. The _metadata is damaged; restore from another checkpoint.`,
    );
  }
  return bytes;
}

/**
 * Reads the key groups of `handle` that lie in `range`, in ascending order: ranged reads of only
 * the intersecting blocks (adjacent blocks are fetched together), each verified by crc32.
 * Magic and version are checked from the first 12 bytes; the footer is never read.
 * `maxRead` bounds a coalesced read (a single larger block is still read whole): readers that
 * drop each block after use keep the default; one that keeps every block can ask for fewer,
 * larger reads.
 */
export async function* readKeyGroups(
  handle: KeyGroupsStateHandle,
  files: StateFileReader,
  range: KeyGroupRangeJson,
  maxRead = MAX_COALESCED_READ,
): AsyncGenerator<RawKeyGroup> {
  const what = describeStream(handle.stream, files);
  const wanted = handle.blocks.filter((b) => b.keyGroup >= range.start && b.keyGroup <= range.end);
  if (wanted.length === 0) return;
  const kinds = entryKindsOf(handle.states);
  const stream = handle.stream;
  if (stream.type === 'inline') {
    const all = await readStreamBytes(stream, what);
    checkKeyGroupsHeader(all.subarray(0, FIXED_HEADER_BYTES), what);
    for (const b of wanted) yield parseBlock(all.subarray(b.offset, b.offset + b.length), b, kinds, what);
    return;
  }
  await checkKeyGroupsHeaderOf(stream, files, await files.readRange(stream, 0, FIXED_HEADER_BYTES), what);
  let i = 0;
  while (i < wanted.length) {
    // Coalesce a run of adjacent blocks into one ranged read.
    let j = i + 1;
    let end = wanted[i].offset + wanted[i].length;
    while (j < wanted.length && wanted[j].offset === end && end + wanted[j].length - wanted[i].offset <= maxRead) {
      end += wanted[j].length;
      j++;
    }
    const start = wanted[i].offset;
    if (end > stream.size) {
      throw new FormatError(
        'TRUNCATED',
        `${what}: key group ${wanted[j - 1].keyGroup} lies beyond the end of the ${stream.size}-byte file. Restore from another checkpoint.`,
      );
    }
    const bytes = await files.readRange(stream, start, end - start);
    for (let k = i; k < j; k++) {
      const b = wanted[k];
      yield parseBlock(bytes.subarray(b.offset - start, b.offset - start + b.length), b, kinds, what);
    }
    i = j;
  }
}

export interface ParsedKeyGroupsStream {
  readonly header: KeyGroupsStreamHeader;
  readonly canonical: boolean;
  readonly blocks: readonly KeyGroupBlock[];
}

/**
 * Parses a whole key-groups stream held in memory (tools, tests, verification): header and
 * footer, checking magic, version, end magic and that the footer's blocks lie inside the data.
 */
export function parseKeyGroupsStream(bytes: Buffer, what = 'key-groups stream'): ParsedKeyGroupsStream {
  const { flags, headerLength } = checkKeyGroupsHeader(bytes.subarray(0, FIXED_HEADER_BYTES), what);
  if (bytes.length < FIXED_HEADER_BYTES + headerLength + 8) {
    throw new FormatError(
      'TRUNCATED',
      `${what} ends before its footer (${bytes.length} bytes). The file was cut short; restore from another checkpoint.`,
    );
  }
  let header: KeyGroupsStreamHeader;
  try {
    header = JSON.parse(
      bytes.subarray(FIXED_HEADER_BYTES, FIXED_HEADER_BYTES + headerLength).toString('utf8'),
    ) as KeyGroupsStreamHeader;
  } catch (err) {
    throw new FormatError('CORRUPT', `${what}: the header is not valid JSON. Restore from another checkpoint.`, {
      cause: err,
    });
  }
  if (!bytes.subarray(bytes.length - 4).equals(KEY_GROUPS_END_MAGIC)) {
    throw new FormatError(
      'TRUNCATED',
      `${what} has no end marker: the file was cut short or is not complete. Restore from another checkpoint.`,
    );
  }
  const footerLength = bytes.readUInt32BE(bytes.length - 8);
  const footerStart = bytes.length - 8 - footerLength;
  if (footerStart < FIXED_HEADER_BYTES + headerLength)
    throw new FormatError('CORRUPT', `${what}: footer length ${footerLength} is out of bounds.`);
  const r = new ByteReader(bytes.subarray(footerStart, bytes.length - 8), `${what} footer`);
  const count = r.count(20, 'blocks');
  const blocks: KeyGroupBlock[] = [];
  for (let i = 0; i < count; i++) {
    const b = { keyGroup: r.u32(), offset: r.u64(), length: r.u32(), crc32: r.u32() };
    if (b.offset < FIXED_HEADER_BYTES + headerLength || b.offset + b.length > footerStart) {
      throw new FormatError('CORRUPT', `${what}: block of key group ${b.keyGroup} lies outside the data section.`);
    }
    blocks.push(b);
  }
  return { header, canonical: (flags & FLAG_CANONICAL) !== 0, blocks };
}

/** Parses every block of an in-memory stream (verifying checksums). */
export function* readAllKeyGroups(bytes: Buffer, what = 'key-groups stream'): Generator<RawKeyGroup> {
  const parsed = parseKeyGroupsStream(bytes, what);
  const kinds = entryKindsOf(parsed.header.states);
  for (const b of parsed.blocks) yield parseBlock(bytes.subarray(b.offset, b.offset + b.length), b, kinds, what);
}
