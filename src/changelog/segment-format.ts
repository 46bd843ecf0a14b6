import { crc32 } from 'node:zlib';
import type { KeyGroupRangeJson } from '../backend/handles.js';
import { FormatError } from '../errors.js';
import { ByteReader, ByteWriter } from '../format/bytes.js';
import type { ChangelogLogIdentity } from './handle.js';

/**
 * A changelog segment file (docs/FORMAT.md, "Changelog segments"):
 *
 *   Segment := "SSCL" | u16 version=1 | u16 flags=0 | u32 headerLen | header (UTF-8 JSON)
 *              | u32 bodyLen | body (Record*) | u32 crc32(everything before it) | "SSCE"
 *   header  := {logId, jobId, operatorId, subtaskIndex, backend, maxParallelism, keyGroupRange, fromSeq, toSeq, records}
 *
 * Records are numbered fromSeq..toSeq in order (records = toSeq - fromSeq + 1).
 */
export const SEGMENT_MAGIC = 'SSCL';
export const SEGMENT_END = 'SSCE';
export const SEGMENT_VERSION = 1;

export interface SegmentHeader extends ChangelogLogIdentity {
  readonly maxParallelism: number;
  readonly keyGroupRange: KeyGroupRangeJson;
  readonly fromSeq: number;
  readonly toSeq: number;
  readonly records: number;
}

export function encodeSegment(header: SegmentHeader, body: Uint8Array): Buffer {
  return Buffer.concat(encodeSegmentParts(header, body));
}

/**
 * The segment's bytes as [frame before the body, the body itself, trailer]: the same bytes as
 * encodeSegment without copying the body (a log chunk is megabytes; each copy is another
 * off-heap allocation, and their churn is what triggers full garbage collections).
 */
export function encodeSegmentParts(header: SegmentHeader, body: Uint8Array): [Buffer, Uint8Array, Buffer] {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const w = new ByteWriter(json.length + 32);
  w.raw(Buffer.from(SEGMENT_MAGIC, 'latin1')).u16(SEGMENT_VERSION).u16(0).u32(json.length).raw(json).u32(body.length);
  const head = w.toBuffer();
  const crc = crc32(body, crc32(head));
  const tail = new ByteWriter(8).u32(crc).raw(Buffer.from(SEGMENT_END, 'latin1')).toBuffer();
  return [head, body, tail];
}

/** What the handle says the segment is; the file must agree. */
export interface ExpectedSegment extends ChangelogLogIdentity {
  readonly fromSeq: number;
  readonly toSeq: number;
}

/**
 * Decodes and verifies a segment: magic, version, checksum, identity (job, operator, subtask,
 * log, backend) and sequence range against what the handle expects. Returns the record bodies.
 * Every failure is a FormatError naming `where`.
 */
export function decodeSegment(
  bytes: Buffer,
  expected: ExpectedSegment,
  where: string,
): { header: SegmentHeader; body: Buffer } {
  const r = new ByteReader(bytes, `changelog segment ${where}`);
  if (bytes.length < 4 || bytes.subarray(0, 4).toString('latin1') !== SEGMENT_MAGIC) {
    throw new FormatError(
      'BAD_MAGIC',
      `${where} is not a streamstate changelog segment (bad magic). The handle points at the wrong file; restore from another checkpoint.`,
    );
  }
  r.raw(4);
  const version = r.u16();
  // Framing and checksum first, the version after: a damaged version field in a damaged segment is
  // corruption, not "upgrade". Only a frame that does not parse leaves the version as the reason.
  let json: Buffer;
  let body: Buffer;
  let crcAt: number;
  let stored: number;
  try {
    r.u16(); // flags
    json = r.raw(r.u32());
    body = r.raw(r.u32());
    crcAt = r.pos;
    stored = r.u32();
    const end = r.raw(4).toString('latin1');
    if (end !== SEGMENT_END || !r.done) {
      throw new FormatError(
        'CORRUPT',
        `${where}: changelog segment has a damaged trailer; the file is corrupt. Restore from another checkpoint.`,
      );
    }
  } catch (err) {
    checkSegmentVersion(version, where);
    throw err;
  }
  const actual = crc32(bytes.subarray(0, crcAt));
  if (actual !== stored) {
    throw new FormatError(
      'CHECKSUM_MISMATCH',
      `${where}: changelog segment crc32 is ${actual.toString(16)}, expected ${stored.toString(16)}; the file is corrupt. Restore from another checkpoint.`,
    );
  }
  checkSegmentVersion(version, where);
  let header: SegmentHeader;
  try {
    header = JSON.parse(json.toString('utf8')) as SegmentHeader;
  } catch (err) {
    throw new FormatError('CORRUPT', `${where}: changelog segment header is not valid JSON.`, { cause: err });
  }
  const identity: (keyof ExpectedSegment)[] = ['jobId', 'operatorId', 'subtaskIndex', 'logId', 'backend'];
  for (const field of identity) {
    if (header[field] !== expected[field]) {
      throw new FormatError(
        'CORRUPT',
        `${where} belongs to ${describeIdentity(header)} but the checkpoint expects ${describeIdentity(expected)} ` +
          `(${field} differs): a segment of another job or backend was put in its place. Restore from another checkpoint.`,
      );
    }
  }
  if (header.fromSeq !== expected.fromSeq || header.toSeq !== expected.toSeq) {
    throw new FormatError(
      'CORRUPT',
      `${where} holds changes ${header.fromSeq}..${header.toSeq} of log ${header.logId} but the checkpoint expects ${expected.fromSeq}..${expected.toSeq} ` +
        '(out-of-order or replaced segment). Refusing a partial replay; restore from another checkpoint.',
    );
  }
  if (header.records !== header.toSeq - header.fromSeq + 1) {
    throw new FormatError(
      'CORRUPT',
      `${where}: header counts ${header.records} records for sequences ${header.fromSeq}..${header.toSeq}.`,
    );
  }
  return { header, body };
}

function checkSegmentVersion(version: number, where: string): void {
  if (version > SEGMENT_VERSION) {
    throw new FormatError(
      'UNSUPPORTED_VERSION',
      `${where}: changelog segment format ${version} was written by a newer streamstate (this one reads ${SEGMENT_VERSION}); upgrade.`,
    );
  }
  if (version !== SEGMENT_VERSION)
    throw new FormatError('CORRUPT', `${where}: unknown changelog segment version ${version}.`);
}

function describeIdentity(i: ChangelogLogIdentity): string {
  return `job ${i.jobId} operator ${i.operatorId} subtask ${i.subtaskIndex} log ${i.logId} (backend ${i.backend})`;
}
