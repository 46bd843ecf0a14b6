import { crc32 } from 'node:zlib';
import { FormatError, StreamStateError, type ErrorCode } from '../errors.js';
import { MAX_MAX_PARALLELISM } from '../keygroups/key-groups.js';
import type { CheckpointMetadata } from './metadata.js';

/**
 * The _metadata file (docs/FORMAT.md, "_metadata"):
 *
 *   "SSMD" | u16 version | u16 flags | u32 bodyLength | body (UTF-8 JSON) | u32 crc32(body)
 *
 * All integers big-endian. The body is the CheckpointMetadata as JSON; decode validates its shape
 * so that a damaged or hand-edited file fails here, with a path to the bad field, not deep in a restore.
 */
export const METADATA_MAGIC = Buffer.from('SSMD', 'ascii');
/**
 * The newest version this code writes and reads. Version 2 added per-subtask channel state
 * (unaligned checkpoints); a file without channel state is still written as version 1, so older
 * readers keep reading aligned checkpoints and savepoints. Every version up to this one is read.
 */
export const METADATA_VERSION = 2;
/** The version a file needs: 2 only when some subtask has channel state. */
export function metadataVersionFor(metadata: CheckpointMetadata): number {
  return metadata.operators.some((op) => op.subtasks.some((s) => s.channel !== undefined)) ? 2 : 1;
}
const HEADER_BYTES = 12;
const TRAILER_BYTES = 4;
/** No flags are defined in version 1; a reader refuses bits it does not know. */
const KNOWN_FLAGS = 0;

export function encodeMetadata(metadata: CheckpointMetadata): Buffer {
  validateMetadata(metadata, (field, problem) => {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `cannot write _metadata: ${field} ${problem}. This is a bug in the caller that built the metadata.`,
    );
  });
  const body = Buffer.from(JSON.stringify(metadata), 'utf8');
  const out = Buffer.allocUnsafe(HEADER_BYTES + body.length + TRAILER_BYTES);
  METADATA_MAGIC.copy(out, 0);
  out.writeUInt16BE(metadataVersionFor(metadata), 4);
  out.writeUInt16BE(0, 6);
  out.writeUInt32BE(body.length, 8);
  body.copy(out, HEADER_BYTES);
  out.writeUInt32BE(crc32(body), HEADER_BYTES + body.length);
  return out;
}

/** Decodes and validates _metadata bytes; `what` names the file in error messages. */
export function decodeMetadata(bytes: Uint8Array, what = '_metadata'): CheckpointMetadata {
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magicLen = Math.min(buf.length, METADATA_MAGIC.length);
  if (!buf.subarray(0, magicLen).equals(METADATA_MAGIC.subarray(0, magicLen)) || buf.length === 0) {
    if (buf.length === 0)
      fail(
        'TRUNCATED',
        `${what} is empty; the checkpoint was not written completely. Pick an earlier one with \`streamstate list\`.`,
      );
    fail('BAD_MAGIC', `${what} is not a streamstate _metadata file (it does not start with "SSMD"). Check the path.`);
  }
  if (buf.length < HEADER_BYTES) fail('TRUNCATED', truncated(what, buf.length, HEADER_BYTES));
  const version = buf.readUInt16BE(4);
  const flags = buf.readUInt16BE(6);
  const bodyLength = buf.readUInt32BE(8);
  const total = HEADER_BYTES + bodyLength + TRAILER_BYTES;
  // The checksum is verified before the version is believed: a damaged version field (next to a
  // damaged body) is corruption, not "upgrade streamstate". Only a frame that does not fit this
  // version's layout leaves the version as the best explanation.
  const knownVersion = version >= 1 && version <= METADATA_VERSION;
  if (buf.length !== total) {
    if (version > METADATA_VERSION) failNewer(what, version);
    if (!knownVersion) failNoSuchVersion(what, version);
    if (buf.length < total) fail('TRUNCATED', truncated(what, buf.length, total));
    fail('CORRUPT', `${what} has ${buf.length - total} bytes after its end; the file is damaged.`);
  }
  const body = buf.subarray(HEADER_BYTES, HEADER_BYTES + bodyLength);
  const expected = buf.readUInt32BE(HEADER_BYTES + bodyLength);
  const actual = crc32(body);
  if (actual !== expected) {
    fail(
      'CHECKSUM_MISMATCH',
      `${what}: checksum mismatch (crc32 ${actual.toString(16)}, recorded ${expected.toString(16)}); the file is corrupt. Pick an earlier checkpoint.`,
    );
  }
  if (version > METADATA_VERSION) failNewer(what, version);
  if (!knownVersion) failNoSuchVersion(what, version);
  if ((flags & ~KNOWN_FLAGS) !== 0) {
    fail(
      'UNSUPPORTED_VERSION',
      `${what} uses format flags 0x${flags.toString(16)} this streamstate does not know; upgrade streamstate.`,
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new FormatError(
      'CORRUPT',
      `${what}: body is not valid JSON (${(err as Error).message}); the file is damaged.`,
      { cause: err },
    );
  }
  validateMetadata(parsed, (field, problem) =>
    fail('CORRUPT', `${what}: ${field} ${problem}; the file is damaged or was edited by hand.`),
  );
  if (metadataVersionFor(parsed) > version) {
    fail(
      'CORRUPT',
      `${what}: format version ${version} cannot hold channel state, yet the body has some; the file is damaged or was edited by hand.`,
    );
  }
  return parsed;
}

function failNewer(what: string, version: number): never {
  fail(
    'UNSUPPORTED_VERSION',
    `${what} was written by a newer streamstate (format ${version}; this one reads up to ${METADATA_VERSION}); upgrade streamstate.`,
  );
}

function failNoSuchVersion(what: string, version: number): never {
  fail('CORRUPT', `${what} has format version ${version}, which never existed; the file is damaged.`);
}

function truncated(what: string, have: number, need: number): string {
  return `${what} is truncated (${have} of ${need} bytes); the checkpoint was not written completely. Pick an earlier one with \`streamstate list\`.`;
}

function fail(code: ErrorCode, message: string): never {
  throw new FormatError(code, message);
}

// ------------------------------------------------------------------ shape validation

type Problem = (field: string, problem: string) => never;
type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function isInt(v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= min && v <= max;
}

/** Checks that `m` has the shape of CheckpointMetadata; calls `bad` with the first problem found. */
export function validateMetadata(m: unknown, bad: Problem): asserts m is CheckpointMetadata {
  if (!isObj(m)) bad('the body', 'is not an object');
  if (!isInt(m.checkpointId, 0)) bad('checkpointId', 'must be a non-negative integer');
  if (typeof m.jobId !== 'string' || m.jobId.length === 0) bad('jobId', 'must be a non-empty string');
  if (m.kind !== 'checkpoint' && m.kind !== 'savepoint') bad('kind', 'must be "checkpoint" or "savepoint"');
  if (m.format !== 'native' && m.format !== 'canonical') bad('format', 'must be "native" or "canonical"');
  if (typeof m.backend !== 'string' || m.backend.length === 0) bad('backend', 'must be a non-empty string');
  if (!isInt(m.timestamp, 0)) bad('timestamp', 'must be a non-negative integer (ms)');
  if (m.properties !== undefined) {
    if (!isObj(m.properties)) bad('properties', 'must be an object');
    for (const [k, v] of Object.entries(m.properties)) {
      if (typeof v !== 'string' && typeof v !== 'boolean' && !(typeof v === 'number' && Number.isFinite(v))) {
        bad(`properties.${k}`, 'must be a string, finite number or boolean');
      }
    }
  }
  if (!Array.isArray(m.operators)) bad('operators', 'must be an array');
  const operatorIds = new Set<string>();
  m.operators.forEach((op: unknown, i: number) => validateOperator(op, `operators[${i}]`, operatorIds, bad));
  if (m.stats !== undefined) validateStats(m.stats, bad);
}

/**
 * The optional `stats` (added within version 1: older readers ignore it, files without it read
 * as before). Informational only, yet checked so that inspect and list never print garbage.
 */
function validateStats(st: unknown, bad: Problem): void {
  if (!isObj(st)) bad('stats', 'must be an object');
  if (!isDuration(st.durationMs)) bad('stats.durationMs', 'must be a non-negative number (ms)');
  for (const f of ['bytesWritten', 'fullSize', 'bytesReused', 'fileCount'] as const)
    if (!isInt(st[f], 0)) bad(`stats.${f}`, 'must be a non-negative integer');
  if (!Array.isArray(st.subtasks)) bad('stats.subtasks', 'must be an array');
  st.subtasks.forEach((s: unknown, i: number) => {
    const at = `stats.subtasks[${i}]`;
    if (!isObj(s)) bad(at, 'is not an object');
    if (typeof s.operatorId !== 'string' || s.operatorId.length === 0)
      bad(`${at}.operatorId`, 'must be a non-empty string');
    if (!isInt(s.subtaskIndex, 0)) bad(`${at}.subtaskIndex`, 'must be a non-negative integer');
    if (!isInt(s.ackTimestamp, 0)) bad(`${at}.ackTimestamp`, 'must be a non-negative integer (ms)');
    for (const f of ['syncDurationMs', 'asyncDurationMs', 'alignmentDurationMs'] as const) {
      if (s[f] !== undefined && !isDuration(s[f])) bad(`${at}.${f}`, 'must be a non-negative number (ms)');
    }
    for (const f of ['bytesWritten', 'fullSize', 'bytesReused', 'fileCount'] as const)
      if (!isInt(s[f], 0)) bad(`${at}.${f}`, 'must be a non-negative integer');
  });
}

function isDuration(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}

function validateOperator(op: unknown, at: string, seen: Set<string>, bad: Problem): void {
  if (!isObj(op)) bad(at, 'is not an object');
  if (typeof op.operatorId !== 'string' || op.operatorId.length === 0)
    bad(`${at}.operatorId`, 'must be a non-empty string');
  if (seen.has(op.operatorId)) bad(`${at}.operatorId`, `"${op.operatorId}" appears twice`);
  seen.add(op.operatorId);
  if (!isInt(op.maxParallelism, 1, MAX_MAX_PARALLELISM))
    bad(`${at}.maxParallelism`, `must be an integer in [1, ${MAX_MAX_PARALLELISM}]`);
  const maxParallelism = op.maxParallelism;
  if (!isInt(op.parallelism, 1, maxParallelism))
    bad(`${at}.parallelism`, `must be an integer in [1, maxParallelism=${maxParallelism}]`);
  const parallelism = op.parallelism;
  if (!Array.isArray(op.subtasks)) bad(`${at}.subtasks`, 'must be an array');
  const indexes = new Set<number>();
  op.subtasks.forEach((st: unknown, j: number) => {
    const sat = `${at}.subtasks[${j}]`;
    if (!isObj(st)) bad(sat, 'is not an object');
    if (!isInt(st.subtaskIndex, 0, parallelism - 1))
      bad(`${sat}.subtaskIndex`, `must be an integer in [0, ${parallelism - 1}]`);
    if (indexes.has(st.subtaskIndex)) bad(`${sat}.subtaskIndex`, `${st.subtaskIndex} appears twice`);
    indexes.add(st.subtaskIndex);
    if (!Array.isArray(st.keyed)) bad(`${sat}.keyed`, 'must be an array');
    if (!Array.isArray(st.operator)) bad(`${sat}.operator`, 'must be an array');
    st.keyed.forEach((h: unknown, k: number) => validateKeyedHandle(h, `${sat}.keyed[${k}]`, maxParallelism, bad));
    st.operator.forEach((h: unknown, k: number) => validateOperatorHandle(h, `${sat}.operator[${k}]`, bad));
    if (st.channel !== undefined) validateChannelStateHandle(st.channel, `${sat}.channel`, bad);
  });
}

/** Channel state (version 2): entries must lie inside the stream and not overlap; gaps in sequences are found when reading. */
function validateChannelStateHandle(h: unknown, at: string, bad: Problem): void {
  if (!isObj(h)) bad(at, 'is not an object');
  if (h.type !== 'channel-state') bad(`${at}.type`, 'must be "channel-state"');
  const ser = h.serializer;
  if (!isObj(ser) || typeof ser.id !== 'string' || ser.id.length === 0 || !isInt(ser.version, 0))
    bad(`${at}.serializer`, 'must be {id: non-empty string, version: integer}');
  validateStreamHandle(h.stream, `${at}.stream`, bad);
  const size = (h.stream as Obj).size as number;
  if (!Array.isArray(h.entries) || h.entries.length === 0) bad(`${at}.entries`, 'must be a non-empty array');
  const seen = new Set<string>();
  let end = 6; // entries follow the stream's "SSCS" + version header
  h.entries.forEach((e: unknown, i: number) => {
    const eat = `${at}.entries[${i}]`;
    if (!isObj(e)) bad(eat, 'is not an object');
    if (e.direction !== 'input' && e.direction !== 'output') bad(`${eat}.direction`, 'must be "input" or "output"');
    if (e.partitioning !== 'keyed' && e.partitioning !== 'round-robin')
      bad(`${eat}.partitioning`, 'must be "keyed" or "round-robin"');
    for (const f of ['channel', 'firstSequence'] as const)
      if (!isInt(e[f], 0)) bad(`${eat}.${f}`, 'must be a non-negative integer');
    if (!isInt(e.count, 1)) bad(`${eat}.count`, 'must be a positive integer');
    if (!isInt(e.offset, end) || !isInt(e.length, 1) || e.offset + e.length > size)
      bad(eat, `must cover bytes after the previous entry (from ${end}) and inside the stream's ${size} bytes`);
    end = e.offset + e.length;
    const key = `${e.direction}:${e.channel}`;
    if (seen.has(key)) bad(`${eat}.channel`, `${e.direction} channel ${e.channel} appears twice`);
    seen.add(key);
  });
}

function validateKeyedHandle(h: unknown, at: string, maxParallelism: number, bad: Problem): void {
  if (!isObj(h)) bad(at, 'is not an object');
  if (typeof h.type !== 'string' || h.type.length === 0) bad(`${at}.type`, 'must be a non-empty string');
  if (h.maxParallelism !== maxParallelism)
    bad(`${at}.maxParallelism`, `must equal the operator's maxParallelism ${maxParallelism}`);
  const r = h.keyGroupRange;
  if (!isObj(r) || !isInt(r.start, 0) || !isInt(r.end, -1, maxParallelism - 1) || r.end < r.start - 1) {
    bad(
      `${at}.keyGroupRange`,
      `must be {start, end} with 0 <= start <= end + 1 and end < maxParallelism=${maxParallelism}`,
    );
  }
  if (h.type === 'key-groups') {
    if (typeof h.layout !== 'string') bad(`${at}.layout`, 'must be a string');
    if (!isObj(h.keySerializer)) bad(`${at}.keySerializer`, 'must be a serializer snapshot object');
    if (!Array.isArray(h.states)) bad(`${at}.states`, 'must be an array');
    if (!Array.isArray(h.blocks)) bad(`${at}.blocks`, 'must be an array');
    h.blocks.forEach((b: unknown, i: number) => {
      if (
        !isObj(b) ||
        !isInt(b.keyGroup, 0, maxParallelism - 1) ||
        !isInt(b.offset, 0) ||
        !isInt(b.length, 0) ||
        !isInt(b.crc32, 0, 0xffffffff)
      ) {
        bad(`${at}.blocks[${i}]`, 'must be {keyGroup, offset, length, crc32} with integers in range');
      }
      if (b.entries !== undefined && !isInt(b.entries, 0))
        bad(`${at}.blocks[${i}].entries`, 'must be a non-negative integer when present');
    });
    validateStreamHandle(h.stream, `${at}.stream`, bad);
  }
  validateNestedFiles(h, at, bad);
}

function validateOperatorHandle(h: unknown, at: string, bad: Problem): void {
  if (!isObj(h)) bad(at, 'is not an object');
  if (h.type !== 'operator') bad(`${at}.type`, 'must be "operator"');
  if (!Array.isArray(h.states)) bad(`${at}.states`, 'must be an array');
  h.states.forEach((s: unknown, i: number) => {
    if (
      !isObj(s) ||
      typeof s.name !== 'string' ||
      (s.mode !== 'split' && s.mode !== 'union' && s.mode !== 'broadcast') ||
      !Array.isArray(s.offsets)
    ) {
      bad(`${at}.states[${i}]`, 'must be {name, mode: split|union|broadcast, offsets: [...]}');
    }
  });
  validateStreamHandle(h.stream, `${at}.stream`, bad);
}

function validateStreamHandle(s: unknown, at: string, bad: Problem): void {
  if (!isObj(s)) bad(at, 'must be a stream handle object');
  if (s.type === 'inline') {
    if (typeof s.data !== 'string') bad(`${at}.data`, 'must be a base64 string');
    if (!isInt(s.size, 0)) bad(`${at}.size`, 'must be a non-negative integer');
    if (!isInt(s.crc32, 0, 0xffffffff)) bad(`${at}.crc32`, 'must be a 32-bit unsigned integer');
  } else if (s.type === 'file') {
    validateFileHandle(s, at, bad);
  } else {
    bad(`${at}.type`, 'must be "inline" or "file"');
  }
}

function validateFileHandle(s: Obj, at: string, bad: Problem): void {
  if (typeof s.path !== 'string' || s.path.length === 0 || s.path.startsWith('/') || s.path.includes('\\')) {
    bad(`${at}.path`, 'must be a non-empty relative posix path');
  }
  if (!isInt(s.size, 0)) bad(`${at}.size`, 'must be a non-negative integer');
  if (!isInt(s.crc32, 0, 0xffffffff)) bad(`${at}.crc32`, 'must be a 32-bit unsigned integer');
}

/** Every object with type "file" anywhere inside a handle must be a well-formed file handle (gc relies on it). */
function validateNestedFiles(v: unknown, at: string, bad: Problem): void {
  if (Array.isArray(v)) {
    v.forEach((x, i) => validateNestedFiles(x, `${at}[${i}]`, bad));
  } else if (isObj(v)) {
    if (v.type === 'file') validateFileHandle(v, at, bad);
    else for (const [k, x] of Object.entries(v)) validateNestedFiles(x, `${at}.${k}`, bad);
  }
}
