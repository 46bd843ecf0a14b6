import type { KeyedBackendParams, KeyedStateBackend, RestoreSource, StateFileReader } from '../backend/contract.js';
import type { KeyedStateHandle, StreamHandle } from '../backend/handles.js';
import { readStreamHandle } from '../checkpoint/streams.js';
import { isStreamStateError, StateMigrationError, StorageError } from '../errors.js';
import { resolveCompatibility, describeSerializer, snapshotOf, type Serializer } from '../serializers/serializer.js';
import { checkRestoreMaxParallelism } from '../keygroups/key-groups.js';
import {
  clipKeyedHandle,
  describeSegmentRef,
  intersectRanges,
  isChangelogHandle,
  onlySharedFiles,
  validateChangelogHandle,
  type ChangelogLogRef,
  type ChangelogStateHandle,
} from './handle.js';
import { ChangelogKeyedStateBackend, ClockControl, Materialization, type ChangelogSettings } from './keyed-backend.js';
import type { StateMetaRecord } from './records.js';
import { PendingChanges } from './replay.js';
import { decodeSegment } from './segment-format.js';

export interface OpenChangelogArgs<K> {
  /** Creates the wrapped backend (never given changelog handles). */
  readonly createInner: (params: KeyedBackendParams<K>) => Promise<KeyedStateBackend<K>>;
  readonly innerName: string;
  readonly params: KeyedBackendParams<K>;
  readonly settings: ChangelogSettings;
  readonly mode: 'log' | 'passthrough';
}

/**
 * Creates a changelog keyed backend, restoring when params.restore is given:
 *  1. every changelog handle is validated (format, segment order, maxParallelism, key serializer);
 *  2. every segment is read and verified, its records kept per state (only this subtask's key groups);
 *  3. the wrapped backend restores the materialized handles (clipped to their changelog handle's
 *     range, so a rescaled chain never restores a key group twice) and any plain handles;
 *  4. the changes are replayed per state when the state is registered.
 * Plain handles (key-groups, leveldb) restore as-is: that is how a plain checkpoint turns the changelog on.
 */
export async function openChangelogKeyedBackend<K>(args: OpenChangelogArgs<K>): Promise<ChangelogKeyedStateBackend<K>> {
  const { params } = args;
  const clock = new ClockControl(params.clock ?? Date.now);
  const restore = params.restore;
  const handles = restore?.handles ?? [];
  const myRange = params.keyGroupRange.toJSON();
  const changelogHandles = handles.filter(isChangelogHandle) as unknown as ChangelogStateHandle[];
  const plain = handles.filter((h) => !isChangelogHandle(h));
  for (const h of changelogHandles) checkChangelogHandle(h, params);

  const materialized: KeyedStateHandle[] = [...plain];
  const logs: ChangelogLogRef[] = [];
  for (const h of changelogHandles) {
    for (const m of h.materialized) {
      const clipped = clipKeyedHandle(m, h.keyGroupRange);
      if (clipped !== null) materialized.push(clipped);
    }
    for (const log of h.logs) {
      const outer = intersectRanges(log.keyGroupRange, h.keyGroupRange);
      const range = outer === null ? null : intersectRanges(outer, myRange);
      if (range !== null) logs.push({ ...log, keyGroupRange: range });
    }
  }

  const pending = new PendingChanges();
  if (restore !== undefined) await loadLogs(logs, restore.files, pending);

  const baseId = Math.max(0, restore?.checkpointId ?? 0, ...changelogHandles.map((h) => h.materializationId));
  const inner = await args.createInner({
    ...params,
    clock: clock.clock,
    ...(restore !== undefined && materialized.length > 0
      ? { restore: { ...restore, handles: materialized, checkpointId: baseId } }
      : { restore: undefined }),
  });
  // Restored files may be referenced by later checkpoints only when they are ours (claim) and shared.
  const shareable =
    handles.length === 0 || (restore?.mode === 'claim' && onlySharedFiles(materialized) && onlySharedFiles(logs));
  const base = Materialization.restored(handles.length === 0 ? 0 : baseId, materialized, logs, shareable);
  return new ChangelogKeyedStateBackend({
    inner,
    innerName: args.innerName,
    jobId: params.jobId,
    operatorId: params.operatorId,
    subtaskIndex: params.subtaskIndex,
    clock,
    settings: args.settings,
    pending,
    base,
    mode: args.mode,
    createInner: args.createInner,
    params: { ...params, clock: clock.clock, restore: undefined },
    restorePlain: restorePlainFromChangelog,
  });
}

function checkChangelogHandle<K>(h: ChangelogStateHandle, params: KeyedBackendParams<K>): void {
  validateChangelogHandle(h);
  checkRestoreMaxParallelism(h.maxParallelism, params.maxParallelism, 'the changelog snapshot');
  const c = resolveCompatibility(h.keySerializer, params.keySerializer as Serializer<unknown>);
  if (c.kind !== 'compatible-as-is') {
    throw new StateMigrationError(
      'KEY_SERIALIZER_MISMATCH',
      `the snapshot's keys were written with ${describeSerializer(h.keySerializer)} but the backend uses ${describeSerializer(snapshotOf(params.keySerializer as Serializer<unknown>))}; ` +
        'keys cannot be migrated: use the original key serializer.',
    );
  }
}

/** Reads every segment (in parallel), then verifies and indexes them in log order. */
async function loadLogs(
  logs: readonly ChangelogLogRef[],
  files: StateFileReader,
  pending: PendingChanges,
): Promise<void> {
  const reads = logs.map((log) => log.segments.map((seg) => readSegmentBytes(seg.file, files)));
  for (const r of reads) for (const p of r) p.catch(() => undefined);
  for (const [i, log] of logs.entries()) {
    const ids = new Map<number, StateMetaRecord>();
    for (const [j, seg] of log.segments.entries()) {
      const where = seg.file.type === 'file' ? files.describe(seg.file) : describeSegmentRef(seg);
      const bytes = await reads[i][j];
      const { body } = decodeSegment(bytes, { ...log, fromSeq: seg.fromSeq, toSeq: seg.toSeq }, where);
      pending.addSegment(body, ids, log.keyGroupRange, where);
    }
  }
}

async function readSegmentBytes(file: StreamHandle, files: StateFileReader): Promise<Buffer> {
  try {
    return await readStreamHandle(file, files);
  } catch (err) {
    if (isStreamStateError(err, 'NOT_FOUND')) {
      const where = file.type === 'file' ? files.describe(file) : 'inline segment';
      throw new StorageError(
        'NOT_FOUND',
        `changelog segment ${where} is missing; the checkpoint cannot be replayed without it. Restore from another checkpoint.`,
        { cause: err },
      );
    }
    throw err;
  }
}

/** True when a restore includes changelog handles (a plain backend needs restorePlainFromChangelog then). */
export function hasChangelogHandles(restore: RestoreSource<KeyedStateHandle> | undefined): boolean {
  return restore !== undefined && restore.handles.some(isChangelogHandle);
}

/**
 * For plain backends restoring from a changelog checkpoint (turning the changelog off): call it
 * from createKeyedStateBackend when hasChangelogHandles(params.restore). It restores the
 * materialized part through `createPlain` (which then sees only plain handles) and replays the log
 * into it as states are registered; nothing is logged afterwards and snapshots are the plain
 * backend's own (plus, while restored states remain unregistered, their changes).
 */
export function restorePlainFromChangelog<K>(
  createPlain: (params: KeyedBackendParams<K>) => Promise<KeyedStateBackend<K>>,
  backendName: string,
  params: KeyedBackendParams<K>,
): Promise<KeyedStateBackend<K>> {
  return openChangelogKeyedBackend({
    createInner: createPlain,
    innerName: backendName,
    params,
    settings: {
      materializationIntervalMs: Number.POSITIVE_INFINITY,
      preemptivePersistBytes: Number.POSITIVE_INFINITY,
      backgroundStreams: null,
      now: Date.now,
    },
    mode: 'passthrough',
  });
}
