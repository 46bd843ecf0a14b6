import type { KeyedStateMetaInfo } from '../backend/handles.js';
import { FormatError } from '../errors.js';
import { ByteReader, ByteWriter } from '../format/bytes.js';

/**
 * State-change records (docs/FORMAT.md, "Changelog segments"). One record per logical write:
 *
 *   Record   := varint bodyLength | Body
 *   Body     := u8 op | varint stateId | Scope? | payload
 *   Scope    := u16 keyGroup | [f64 time if op & TIMED] | bytes(key) | bytes(namespace)   (absent for METADATA)
 *
 * Records of TTL states carry the processing time of the write (TIMED flag) so replay reproduces
 * the stored timestamps exactly.
 */
export const ChangeOp = {
  CLEAR: 0,
  /** value/reducing: bytes(value); aggregating: bytes(accumulator); list: varint n, bytes(element)*n */
  SET: 1,
  /** list: bytes(element) */
  ADD_ELEMENT: 2,
  /** list: varint n, bytes(element)*n */
  ADD_ALL: 3,
  /** list/reducing/aggregating: bytes(target) varint n bytes(source)*n */
  MERGE_NS: 4,
  /** map: bytes(userKey) u8 isNull [bytes(value)] */
  PUT: 5,
  /** map: bytes(userKey) */
  REMOVE: 6,
  /** timers: f64 timestamp (scope = the timer's key and namespace) */
  TIMER_ADD: 7,
  TIMER_REMOVE: 8,
  /** A read of a TTL state whose reads have effects (refresh on read, expired cleanup); no payload. */
  READ: 9,
  /** map get/contains on such a TTL state: bytes(userKey) */
  READ_ENTRY: 10,
  /** JSON of StateMetaRecord; no scope. */
  METADATA: 11,
} as const;
export type ChangeOpCode = (typeof ChangeOp)[keyof typeof ChangeOp];

const MAX_OP = ChangeOp.METADATA;
/** Flag bit on the op byte: the scope carries a time. */
export const TIMED = 0x80;

/** What a METADATA record says about a state (serializers are the user-level ones, never TTL-wrapped). */
export type StateMetaRecord = Omit<KeyedStateMetaInfo, 'stateId'>;

/** A decoded record. Buffers are views into the segment's bytes. */
export interface ChangeRecord {
  readonly op: ChangeOpCode;
  readonly stateId: number;
  readonly keyGroup: number;
  /** NaN when the record carries no time. */
  readonly time: number;
  readonly key: Buffer;
  readonly namespace: Buffer;
  readonly payload: Buffer;
}

const EMPTY = Buffer.alloc(0);

/**
 * Builds one record body at a time in a reused scratch buffer (no allocation per record once
 * warmed up) and hands it to the log.
 */
export class RecordBuilder {
  readonly w = new ByteWriter(4096);

  /** Starts a data record; the caller appends the payload to `w`. */
  begin(
    op: ChangeOpCode,
    stateId: number,
    keyGroup: number,
    time: number,
    key: Uint8Array,
    namespace: Uint8Array,
  ): ByteWriter {
    const w = this.w;
    w.reset();
    const timed = !Number.isNaN(time);
    w.u8(timed ? op | TIMED : op);
    w.varint(stateId);
    w.u16(keyGroup);
    if (timed) w.f64(time);
    w.bytes(key);
    w.bytes(namespace);
    return w;
  }

  metadata(stateId: number, meta: StateMetaRecord): ByteWriter {
    const w = this.w;
    w.reset();
    w.u8(ChangeOp.METADATA);
    w.varint(stateId);
    w.string(JSON.stringify(meta));
    return w;
  }

  /** Re-encodes a decoded record under another state id (carrying restored records forward). */
  copy(r: ChangeRecord, stateId: number): ByteWriter {
    const w = this.begin(r.op, stateId, r.keyGroup, r.time, r.key, r.namespace);
    w.raw(r.payload);
    return w;
  }
}

/** Decodes one record body. `where` names the file for error messages. */
export function decodeRecord(
  body: Buffer,
  where: string,
): ChangeRecord | { readonly op: typeof ChangeOp.METADATA; readonly stateId: number; readonly meta: StateMetaRecord } {
  const r = new ByteReader(body, where);
  const opByte = r.u8();
  const op = (opByte & ~TIMED) as ChangeOpCode;
  if (op > MAX_OP)
    throw new FormatError(
      'CORRUPT',
      `${where}: unknown change op ${op}; the segment is corrupt or written by a newer streamstate.`,
    );
  const stateId = r.varint();
  if (op === ChangeOp.METADATA) {
    let meta: StateMetaRecord;
    try {
      meta = JSON.parse(r.string()) as StateMetaRecord;
    } catch (err) {
      throw new FormatError('CORRUPT', `${where}: a state metadata record is not valid JSON; the segment is corrupt.`, {
        cause: err,
      });
    }
    if (typeof meta !== 'object' || meta === null || typeof meta.name !== 'string' || typeof meta.kind !== 'string') {
      throw new FormatError('CORRUPT', `${where}: a state metadata record lacks name/kind; the segment is corrupt.`);
    }
    return { op, stateId, meta };
  }
  const keyGroup = r.u16();
  const time = opByte & TIMED ? r.f64() : Number.NaN;
  const key = r.bytes();
  const namespace = r.bytes();
  const payload = r.remaining > 0 ? r.raw(r.remaining) : EMPTY;
  return { op, stateId, keyGroup, time, key, namespace, payload };
}

/** Splits a segment body into record bodies (each a view). */
export function* splitRecords(body: Buffer, where: string): Generator<Buffer> {
  const r = new ByteReader(body, where);
  while (!r.done) yield r.bytes();
}

// ------------------------------------------------------------------ payload helpers

export function writeByteList(w: ByteWriter, items: readonly Uint8Array[]): void {
  w.varint(items.length);
  for (const it of items) w.bytes(it);
}

export function readByteList(r: ByteReader): Buffer[] {
  const n = r.count(1, 'items');
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) out.push(r.bytes());
  return out;
}
