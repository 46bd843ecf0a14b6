import type { KeyGroupRangeJson, KeyedStateHandle, KeyedStateHandleBase, StreamHandle } from '../backend/handles.js';
import { isKeyGroupsHandle, referencedFiles } from '../backend/handles.js';
import { FormatError } from '../errors.js';
import { KeyGroupRange } from '../keygroups/key-groups.js';
import type { SerializerSnapshot } from '../serializers/serializer.js';

/**
 * The keyed-state handle of a changelog checkpoint: the wrapped backend's handles from the last
 * materialization, then the logs to replay on top of them, in order. Every file is a
 * FileStreamHandle somewhere inside, so the shared-state registry tracks segments and
 * materializations without knowing this type.
 */
export const CHANGELOG_HANDLE_TYPE = 'changelog';
export const CHANGELOG_HANDLE_VERSION = 1;

/** Who wrote a log: a segment file must carry the same identity (it is checked on restore). */
export interface ChangelogLogIdentity {
  readonly logId: string;
  readonly jobId: string;
  readonly operatorId: string;
  readonly subtaskIndex: number;
  /** Name of the wrapped backend that wrote the log, e.g. `memory`. */
  readonly backend: string;
}

/** One persisted segment: records fromSeq..toSeq (inclusive) of its log. */
export interface ChangelogSegmentRef {
  readonly file: StreamHandle;
  readonly fromSeq: number;
  readonly toSeq: number;
}

/**
 * A contiguous range of one log. On restore only records whose key group lies in `keyGroupRange`
 * (and in the restoring subtask's range) are replayed.
 */
export interface ChangelogLogRef extends ChangelogLogIdentity {
  readonly keyGroupRange: KeyGroupRangeJson;
  readonly fromSeq: number;
  readonly toSeq: number;
  readonly segments: readonly ChangelogSegmentRef[];
}

export interface ChangelogStateHandle extends KeyedStateHandleBase {
  readonly type: typeof CHANGELOG_HANDLE_TYPE;
  readonly formatVersion: number;
  readonly keyGroupRange: KeyGroupRangeJson;
  readonly maxParallelism: number;
  readonly keySerializer: SerializerSnapshot;
  /** Name of the wrapped backend (`memory`, `filesystem`, `leveldb`). */
  readonly backend: string;
  /** Id of the materialization `materialized` came from (0: none). */
  readonly materializationId: number;
  readonly materialized: readonly KeyedStateHandle[];
  /** Replayed in this order after the materialized state. */
  readonly logs: readonly ChangelogLogRef[];
}

export function isChangelogHandle(
  h: KeyedStateHandle | null | undefined,
): h is ChangelogStateHandle & KeyedStateHandle {
  return h !== null && h !== undefined && h.type === CHANGELOG_HANDLE_TYPE;
}

function corrupt(msg: string): never {
  throw new FormatError(
    'CORRUPT',
    `changelog handle: ${msg}. The _metadata is damaged or was edited; restore from another checkpoint.`,
  );
}

function isRange(r: unknown): r is KeyGroupRangeJson {
  const o = r as KeyGroupRangeJson | null;
  return o !== null && typeof o === 'object' && Number.isInteger(o.start) && Number.isInteger(o.end);
}

function isSeq(n: unknown): n is number {
  return Number.isSafeInteger(n) && (n as number) >= 0;
}

/**
 * Checks the shape of a changelog handle and the order of its segments: every log's segments are
 * ascending and contiguous and cover exactly fromSeq..toSeq. A gap or overlap means a segment is
 * missing or misplaced: replaying would silently lose or repeat changes, so it is an error.
 */
export function validateChangelogHandle(h: ChangelogStateHandle): void {
  if (h.formatVersion !== CHANGELOG_HANDLE_VERSION) {
    if (typeof h.formatVersion === 'number' && h.formatVersion > CHANGELOG_HANDLE_VERSION) {
      throw new FormatError(
        'UNSUPPORTED_VERSION',
        `changelog handle format ${h.formatVersion} was written by a newer streamstate (this one reads ${CHANGELOG_HANDLE_VERSION}); upgrade streamstate.`,
      );
    }
    corrupt(`unknown formatVersion ${String(h.formatVersion)}`);
  }
  if (!isRange(h.keyGroupRange) || !Number.isInteger(h.maxParallelism)) corrupt('keyGroupRange/maxParallelism missing');
  if (!Array.isArray(h.materialized) || !Array.isArray(h.logs)) corrupt('materialized/logs must be arrays');
  if (!h.keySerializer || typeof h.keySerializer.id !== 'string') corrupt('keySerializer missing');
  for (const log of h.logs) {
    if (
      typeof log.logId !== 'string' ||
      typeof log.jobId !== 'string' ||
      !isRange(log.keyGroupRange) ||
      !Array.isArray(log.segments)
    ) {
      corrupt('a log entry lacks logId/jobId/keyGroupRange/segments');
    }
    if (!isSeq(log.fromSeq) || !isSeq(log.toSeq) || log.toSeq < log.fromSeq)
      corrupt(`log ${log.logId} has an invalid range ${log.fromSeq}..${log.toSeq}`);
    let expected = log.fromSeq;
    for (const seg of log.segments) {
      const where = describeSegmentRef(seg);
      if (!isSeq(seg.fromSeq) || !isSeq(seg.toSeq) || seg.toSeq < seg.fromSeq)
        corrupt(`segment ${where} has an invalid range`);
      if (seg.fromSeq !== expected) {
        throw new FormatError(
          'CORRUPT',
          `changelog log ${log.logId}: segment ${where} starts at sequence ${seg.fromSeq} but ${expected} was expected ` +
            `(a segment is missing or out of order). Refusing a partial replay; restore from another checkpoint.`,
        );
      }
      expected = seg.toSeq + 1;
    }
    if (expected !== log.toSeq + 1) {
      throw new FormatError(
        'CORRUPT',
        `changelog log ${log.logId}: segments end at sequence ${expected - 1} but the log runs to ${log.toSeq} (a segment is missing). ` +
          'Refusing a partial replay; restore from another checkpoint.',
      );
    }
  }
}

export function describeSegmentRef(seg: ChangelogSegmentRef): string {
  return seg.file?.type === 'file' ? seg.file.path : `inline segment ${seg.fromSeq}..${seg.toSeq}`;
}

/** The intersection of two ranges as JSON, or null when empty. */
export function intersectRanges(a: KeyGroupRangeJson, b: KeyGroupRangeJson): KeyGroupRangeJson | null {
  const r = KeyGroupRange.of(a).intersection(b);
  return r.isEmpty ? null : { start: r.start, end: r.end };
}

/**
 * A handle limited to `range`: key-groups handles drop the blocks outside it; other handle types
 * get the narrower keyGroupRange (their backend restores only that range). Null when nothing is left.
 */
export function clipKeyedHandle(h: KeyedStateHandle, range: KeyGroupRangeJson): KeyedStateHandle | null {
  const r = intersectRanges(h.keyGroupRange, range);
  if (r === null) return null;
  if (r.start === h.keyGroupRange.start && r.end === h.keyGroupRange.end) return h;
  if (isKeyGroupsHandle(h)) {
    return { ...h, keyGroupRange: r, blocks: h.blocks.filter((b) => b.keyGroup >= r.start && b.keyGroup <= r.end) };
  }
  return { ...h, keyGroupRange: r } as KeyedStateHandle;
}

/** True when every file the value references lives in the job's shared directory (so later checkpoints may reference it). */
export function onlySharedFiles(value: unknown): boolean {
  return referencedFiles(value).every((f) => f.path.startsWith('../shared/'));
}
