import { crc32 } from 'node:zlib';
import { subtaskStateHandles } from '../checkpoint/metadata.js';
import type { StateFileReader } from '../backend/contract.js';
import {
  referencedFiles,
  type FileStreamHandle,
  type KeyedStateMetaInfo,
  type KeyGroupsStateHandle,
  type OperatorStateHandle,
  type StreamHandle,
} from '../backend/handles.js';
import type { CheckpointStorage } from '../checkpoint/storage.js';
import { readStreamHandle, resolveHandlePath } from '../checkpoint/streams.js';
import { isStreamStateError, StreamStateError, type ErrorCode } from '../errors.js';
import { ByteReader } from '../format/bytes.js';
import {
  checkKeyGroupsHeaderOf,
  entryKindsOf,
  listEntries,
  mapEntries,
  parseBlock,
  timerEntries,
  valueEntries,
  type KeyGroupsStreamHeader,
  type RawKeyGroup,
} from '../format/key-groups-stream.js';
import { keyGroupForBytes } from '../keygroups/key-groups.js';
import { checkOffset, checkStreamHeader } from '../operator/operator-stream.js';
import { keyGroupCoverageProblems } from './coverage.js';
import { keyGroupsHandlesIn } from './inspect.js';
import type { LocatedSnapshot } from './locate.js';
import { jsonDecoderFor } from './values.js';

/**
 * `streamstate verify`: every referenced file exists, every size and checksum matches, every
 * record decodes. Checks go on after a problem so that one run lists them all.
 */

export type ProblemCategory = 'missing' | 'corrupt' | 'decode' | 'unsupported';

export interface VerifyProblem {
  readonly category: ProblemCategory;
  readonly code: ErrorCode | 'DECODE_FAILED';
  readonly message: string;
}

export interface VerifyResult {
  readonly files: number;
  readonly bytes: number;
  readonly handles: number;
  /** Records decoded (values, lists, maps, timers, operator-state elements). */
  readonly records: number;
  /** Records whose serializer is not built in: framing checked, contents not decoded. */
  readonly opaqueRecords: number;
  /** Keyed handle types whose contents this tool cannot decode (files and checksums were checked). */
  readonly undecodedHandleTypes: readonly string[];
  readonly problems: readonly VerifyProblem[];
}

export interface VerifyProgress {
  /** Called as work is done: `done` of `total` bytes. */
  (done: number, total: number, what: string): void;
}

const CHUNK = 8 * 1024 * 1024;

function categoryOf(err: unknown): { category: ProblemCategory; code: ErrorCode } {
  if (isStreamStateError(err)) {
    const code = err.code;
    if (code === 'NOT_FOUND' || code === 'METADATA_MISSING') return { category: 'missing', code };
    if (code === 'UNSUPPORTED_VERSION') return { category: 'unsupported', code };
    if (code === 'SERIALIZATION_FAILED') return { category: 'decode', code };
    return { category: 'corrupt', code };
  }
  return { category: 'corrupt', code: 'CORRUPT' };
}

class Verifier {
  readonly problems: VerifyProblem[] = [];
  records = 0;
  opaqueRecords = 0;
  bytesDone = 0;
  readonly badFiles = new Set<string>();
  readonly undecoded = new Set<string>();

  constructor(
    private readonly storage: CheckpointStorage,
    private readonly pointer: string,
    private readonly files: StateFileReader,
    private readonly totalBytes: number,
    private readonly progress: VerifyProgress | undefined,
  ) {}

  problem(category: ProblemCategory, code: VerifyProblem['code'], message: string): void {
    this.problems.push({ category, code, message });
  }

  fromError(err: unknown, fallbackWhere: string): void {
    const { category, code } = categoryOf(err);
    const msg = err instanceof Error ? err.message : String(err);
    this.problem(category, code, err instanceof StreamStateError ? msg : `${fallbackWhere}: ${msg}`);
  }

  tick(n: number, what: string): void {
    this.bytesDone += n;
    this.progress?.(this.bytesDone, this.totalBytes, what);
  }

  /** Existence, size and crc32 of one file, read in chunks (large files never sit in memory). */
  async checkFile(f: FileStreamHandle): Promise<void> {
    const where = this.files.describe(f);
    let name: string;
    try {
      name = resolveHandlePath(this.pointer, f.path);
    } catch (err) {
      this.badFiles.add(f.path);
      this.fromError(err, where);
      return;
    }
    const info = await this.storage.store.stat(name);
    if (info === null) {
      this.badFiles.add(f.path);
      this.problem(
        'missing',
        'NOT_FOUND',
        `${where} is missing (referenced by _metadata with ${f.size} bytes). Restore the file or use another snapshot.`,
      );
      this.tick(f.size, f.path);
      return;
    }
    if (info.size !== f.size) {
      this.badFiles.add(f.path);
      const code = info.size < f.size ? 'TRUNCATED' : 'CORRUPT';
      this.problem(
        'corrupt',
        code,
        `${where} has ${info.size} bytes but _metadata records ${f.size}; the file was ${info.size < f.size ? 'cut short' : 'modified'}. Use another snapshot.`,
      );
      this.tick(f.size, f.path);
      return;
    }
    let crc = 0;
    for (let off = 0; off < f.size; off += CHUNK) {
      const len = Math.min(CHUNK, f.size - off);
      const chunk = await this.storage.store.getRange(name, off, len);
      crc = crc32(chunk, crc);
      this.tick(chunk.length, f.path);
    }
    if (crc >>> 0 !== f.crc32 >>> 0) {
      this.badFiles.add(f.path);
      this.problem(
        'corrupt',
        'CHECKSUM_MISMATCH',
        `${where}: crc32 is ${(crc >>> 0).toString(16)} but _metadata records ${(f.crc32 >>> 0).toString(16)}; the file is corrupt. Use another snapshot.`,
      );
    }
  }

  usable(value: unknown): boolean {
    return referencedFiles(value).every((f) => !this.badFiles.has(f.path));
  }

  async checkInline(stream: StreamHandle, where: string): Promise<boolean> {
    if (stream.type !== 'inline') return true;
    try {
      await readStreamHandle(stream, this.files);
      return true;
    } catch (err) {
      this.fromError(err, where);
      return false;
    }
  }

  // ------------------------------------------------------------------ keyed state

  async checkKeyGroups(h: KeyGroupsStateHandle, where: string): Promise<void> {
    if (!(await this.checkInline(h.stream, where))) return;
    if (!this.usable(h.stream)) return;
    const what = h.stream.type === 'file' ? this.files.describe(h.stream) : `${where} (inline)`;
    const stream = h.stream;
    let all: Buffer | undefined;
    const range = (offset: number, length: number): Promise<Buffer> =>
      stream.type === 'file'
        ? this.files.readRange(stream, offset, length)
        : Promise.resolve((all as Buffer).subarray(offset, offset + length));
    try {
      if (stream.type === 'inline') all = await readStreamHandle(stream, this.files);
      const { headerLength } = await checkKeyGroupsHeaderOf(stream, this.files, await range(0, 12), what);
      const json = await range(12, headerLength);
      const header = JSON.parse(json.toString('utf8')) as KeyGroupsStreamHeader;
      if (
        header.layout !== h.layout ||
        header.maxParallelism !== h.maxParallelism ||
        (header.states?.length ?? -1) !== h.states.length
      ) {
        this.problem(
          'corrupt',
          'CORRUPT',
          `${what}: the stream's header (layout ${header.layout}, ${header.states?.length} states) does not match its handle in _metadata (layout ${h.layout}, ${h.states.length} states).`,
        );
      }
    } catch (err) {
      this.fromError(err, what);
      return;
    }
    const kinds = entryKindsOf(h.states);
    const metas = new Map(h.states.map((s) => [s.stateId, s]));
    const key = jsonDecoderFor(h.keySerializer);
    for (const b of h.blocks) {
      let kg: RawKeyGroup;
      try {
        if (b.keyGroup < h.keyGroupRange.start || b.keyGroup > h.keyGroupRange.end) {
          this.problem(
            'corrupt',
            'CORRUPT',
            `${what}: a block of key group ${b.keyGroup} lies outside the handle's range ${h.keyGroupRange.start}-${h.keyGroupRange.end}.`,
          );
          continue;
        }
        if (h.stream.type === 'file' && b.offset + b.length > h.stream.size) {
          this.problem(
            'corrupt',
            'TRUNCATED',
            `${what}: key group ${b.keyGroup} lies beyond the end of the ${h.stream.size}-byte file.`,
          );
          continue;
        }
        const bytes = await range(b.offset, b.length);
        kg = parseBlock(bytes, b, kinds, what);
      } catch (err) {
        this.fromError(err, what);
        continue;
      }
      for (const s of kg.sections) {
        const meta = metas.get(s.stateId)!;
        try {
          this.decodeSection(meta, s, kg.keyGroup, h, key, `${what}, key group ${kg.keyGroup}, state "${meta.name}"`);
        } catch (err) {
          this.problem(
            'decode',
            'DECODE_FAILED',
            `${what}, key group ${kg.keyGroup}, state "${meta.name}": a record does not decode (${(err as Error).message}). The state cannot be restored as written.`,
          );
        }
      }
    }
  }

  private decodeSection(
    meta: KeyedStateMetaInfo,
    s: RawKeyGroup['sections'][number],
    keyGroup: number,
    h: KeyGroupsStateHandle,
    key: ((b: Uint8Array) => unknown) | undefined,
    where: string,
  ): void {
    const ns = jsonDecoderFor(meta.namespaceSerializer);
    const value = jsonDecoderFor(meta.valueSerializer);
    const userKey = jsonDecoderFor(meta.userKeySerializer);
    const checkKey = (k: Buffer): void => {
      key?.(k);
      const kg = keyGroupForBytes(k, h.maxParallelism);
      if (kg !== keyGroup)
        throw new RangeError(`a key hashes to key group ${kg} but is stored in key group ${keyGroup}`);
    };
    const count = (decoded: boolean): void => {
      if (decoded) this.records++;
      else this.opaqueRecords++;
    };
    const all = key !== undefined && ns !== undefined;
    if (meta.kind === 'timers') {
      for (const t of timerEntries(s, where)) {
        checkKey(t.key);
        ns?.(t.namespace);
        count(all);
      }
    } else if (meta.kind === 'list') {
      for (const e of listEntries(s, where)) {
        checkKey(e.key);
        ns?.(e.namespace);
        for (const el of e.elements) value?.(el);
        count(all && value !== undefined);
      }
    } else if (meta.kind === 'map') {
      for (const e of mapEntries(s, where)) {
        checkKey(e.key);
        ns?.(e.namespace);
        for (const [uk, v] of e.entries) {
          userKey?.(uk);
          if (v !== null) value?.(v);
          count(all && value !== undefined && userKey !== undefined);
        }
      }
    } else {
      for (const e of valueEntries(s, where)) {
        checkKey(e.key);
        ns?.(e.namespace);
        value?.(e.value);
        count(all && value !== undefined);
      }
    }
  }

  // ------------------------------------------------------------------ operator state

  async checkOperator(h: OperatorStateHandle, where: string): Promise<void> {
    if (!(await this.checkInline(h.stream, where)) || !this.usable(h.stream)) return;
    if (!h.states.some((s) => s.offsets.length > 0)) return;
    const what = h.stream.type === 'file' ? this.files.describe(h.stream) : `${where} (inline)`;
    let bytes: Buffer;
    try {
      bytes = await readStreamHandle(h.stream, this.files);
      checkStreamHeader(bytes, what);
    } catch (err) {
      this.fromError(err, what);
      return;
    }
    for (const s of h.states) {
      const value = jsonDecoderFor(s.valueSerializer);
      const key = s.mode === 'broadcast' ? jsonDecoderFor(s.keySerializer) : undefined;
      try {
        for (const offset of s.offsets) {
          checkOffset(offset, bytes.length, what);
          const r = new ByteReader(bytes, `${what}, state "${s.name}"`, offset);
          if (s.mode === 'broadcast') key?.(r.bytes());
          value?.(r.bytes());
          if (value !== undefined && (s.mode !== 'broadcast' || key !== undefined)) this.records++;
          else this.opaqueRecords++;
        }
      } catch (err) {
        if (isStreamStateError(err) && err.code !== 'SERIALIZATION_FAILED') this.fromError(err, what);
        else
          this.problem(
            'decode',
            'DECODE_FAILED',
            `${what}, operator state "${s.name}": an element does not decode (${(err as Error).message}).`,
          );
      }
    }
  }
}

/** Verifies a located snapshot. Never throws for damage it finds; the problems are in the result. */
export async function verifySnapshot(located: LocatedSnapshot, progress?: VerifyProgress): Promise<VerifyResult> {
  const { metadata, files } = located.snapshot;
  const unique = new Map<string, FileStreamHandle>();
  for (const op of metadata.operators)
    for (const s of op.subtasks) for (const f of referencedFiles(subtaskStateHandles(s))) unique.set(f.path, f);
  const totalBytes = [...unique.values()].reduce((n, f) => n + f.size, 0);
  const v = new Verifier(located.storage, located.pointer, files, totalBytes, progress);
  for (const message of keyGroupCoverageProblems(metadata)) v.problem('corrupt', 'CORRUPT', message);
  for (const f of unique.values()) await v.checkFile(f);
  let handles = 0;
  for (const op of metadata.operators) {
    for (const s of op.subtasks) {
      const where = `operator ${op.operatorId} subtask ${s.subtaskIndex}`;
      for (const h of s.keyed) {
        handles++;
        const kgs = keyGroupsHandlesIn(h);
        if (kgs.length === 0 || h.type !== 'key-groups') v.undecoded.add(h.type);
        for (const k of kgs) await v.checkKeyGroups(k, `${where}, keyed state`);
      }
      for (const h of s.operator) {
        handles++;
        await v.checkOperator(h, `${where}, operator state`);
      }
    }
  }
  v.undecoded.delete('key-groups');
  return {
    files: unique.size,
    bytes: totalBytes,
    handles,
    records: v.records,
    opaqueRecords: v.opaqueRecords,
    undecodedHandleTypes: [...v.undecoded].sort(),
    problems: v.problems,
  };
}
