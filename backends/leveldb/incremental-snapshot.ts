import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { CheckpointStreamFactory, SnapshotOptions, SnapshotTask } from '../../src/backend/contract.js';
import type { FileStreamHandle, KeyedStateHandle, StreamHandle } from '../../src/backend/handles.js';
import { SnapshotError, StreamStateError } from '../../src/errors.js';
import { snapshotOf, type Serializer } from '../../src/serializers/serializer.js';
import { fileSteps } from '../../src/storage/file-transfer.js';
import { encodeMeta } from './meta.js';
import { createNativeCheckpoint, type NativeCheckpoint } from './native-checkpoint.js';
import type { LevelDbSnapshotSource } from './snapshot-source.js';
import { uploadWindowed } from './upload-window.js';

/**
 * The handle of a native incremental snapshot. Table files are shared (uploaded once, referenced
 * by later checkpoints while they stay live); MANIFEST and CURRENT are private to the checkpoint.
 */
export type LevelDbIncrementalHandle = {
  readonly type: 'leveldb-incremental';
  readonly keyGroupRange: { readonly start: number; readonly end: number };
  readonly maxParallelism: number;
  /** Identity of the incremental chain (kept across claim-mode restores at unchanged range). */
  readonly backendId: string;
  readonly checkpointId: number;
  readonly sharedFiles: readonly { readonly localName: string; readonly handle: FileStreamHandle }[];
  readonly privateFiles: readonly { readonly localName: string; readonly handle: FileStreamHandle }[];
  /** The meta stream (meta.ts): key serializer, state meta infos, timers. */
  readonly meta: StreamHandle;
};

export const INCREMENTAL_HANDLE_TYPE = 'leveldb-incremental';

export function isIncrementalHandle(h: KeyedStateHandle): h is KeyedStateHandle & LevelDbIncrementalHandle {
  return h.type === INCREMENTAL_HANDLE_TYPE;
}

export type CancellableTask = SnapshotTask<KeyedStateHandle> & { cancel: () => void };

async function hasAnyRow(backend: LevelDbSnapshotSource): Promise<boolean> {
  const it = backend.db.iterator({ limit: 1 });
  try {
    return (await it.nextv(1)).length > 0;
  } finally {
    await it.close();
  }
}

export async function takeIncrementalSnapshot(
  b: LevelDbSnapshotSource,
  checkpointId: number,
  options: SnapshotOptions,
): Promise<CancellableTask> {
  // ---- synchronous part: only fixes the point of the snapshot. The write buffer is sealed here and
  // writes after this point are held back, so LevelDB holds exactly this point's state once the
  // sealed layers are written; state accesses go on at once (into the buffer) while that happens
  // and the files are linked, in the asynchronous part. The pause does not grow with the state.
  b.store.checkHealthy();
  const hold = b.store.hold();
  const timers = b.timersSnapshot();
  const anyTimer = [...timers.values()].some((t) => t.length > 0);
  const localDir = join(b.instance.dir, `chk-${checkpointId}-${randomBytes(4).toString('hex')}`);
  const metaBytes = encodeMeta({
    keySerializer: snapshotOf(b.keySerializer as Serializer<unknown>),
    maxParallelism: b.maxParallelism,
    keyGroupRange: { start: b.keyGroupRange.start, end: b.keyGroupRange.end },
    states: b.catalog.all(),
    timers,
  });
  const isSavepoint = options.type === 'savepoint';
  const full = options.full === true || isSavepoint;
  // What may be referenced instead of uploaded: see IncrementalChain for the reuse rule.
  const plan = b.chain.begin(checkpointId, {
    savepoint: isSavepoint,
    full,
    ...(options.mayReuse !== undefined ? { mayReuse: options.mayReuse } : {}),
  });
  const backendId = b.chain.backendId;

  // ---- asynchronous part
  let cancelled = false;
  const uploaded: FileStreamHandle[] = [];
  let metaStream: ReturnType<typeof options.streams.createOutputStream> | null = null;
  const checkCancelled = (): void => {
    if (cancelled || b.isClosed())
      throw new SnapshotError(
        'SNAPSHOT_CANCELLED',
        `checkpoint ${checkpointId} was cancelled: the LevelDB backend was closed.`,
      );
  };
  /** The files of the snapshot point, linked into localDir (null: nothing to snapshot). */
  const link = async (): Promise<NativeCheckpoint | null> => {
    try {
      await hold.written;
      checkCancelled();
      // Linking and the emptiness check at once: each waits for event-loop turns, and an empty
      // database is rare (its link is then thrown away with localDir).
      const taking = createNativeCheckpoint(b.instance.dbDir, localDir, b.manifests).then(
        (native) => ({ native }),
        (error: unknown) => ({ error }),
      );
      // Settled before the hold is released, whatever hasAnyRow does.
      const rows = anyTimer || (await hasAnyRow(b).finally(() => taking));
      const taken = await taking;
      if (!rows) return null;
      if ('error' in taken) throw taken.error;
      return taken.native;
    } finally {
      hold.release();
    }
  };
  const writeMeta = async (streams: CheckpointStreamFactory): Promise<StreamHandle> => {
    metaStream = streams.createOutputStream('exclusive');
    await metaStream.write(metaBytes);
    const handle = await metaStream.closeAndGetHandle();
    if (handle === null)
      throw new SnapshotError('SNAPSHOT_FAILED', 'the meta stream of a LevelDB snapshot came back empty');
    // A closed stream's file is no longer the stream's to discard: it goes with the uploads.
    if (handle.type === 'file') uploaded.push(handle);
    return handle;
  };
  const run = async (): Promise<KeyedStateHandle | null> => {
    const native = await link();
    if (native === null) return null;
    checkCancelled();
    const streams = options.streams;
    // Uploads run many at a time, shared and private files together (uploadWindowed): one at a
    // time leaves an object store's bandwidth unused, and every wave waits for event-loop turns.
    const upload = async (
      name: string,
      scope: 'shared' | 'exclusive',
      storedName: string,
    ): Promise<{ localName: string; handle: FileStreamHandle }> => {
      // Every file in localDir is immutable: links of table files, and copies nothing writes again.
      const handle = await streams.uploadFile(join(localDir, name), scope, storedName, { immutable: true });
      uploaded.push(handle);
      checkCancelled();
      return { localName: name, handle };
    };
    // Asked once per table, after linking (the snapshot's own tables are known only now).
    const reused = new Map<string, FileStreamHandle>();
    for (const t of native.tables) {
      const h = plan.reusable(t.name);
      if (h !== undefined) reused.set(t.name, h);
    }
    const newTables = native.tables.filter((t) => !reused.has(t.name));
    const jobs: { name: string; scope: 'shared' | 'exclusive'; stored: string }[] = [
      ...newTables.map((t) => ({ name: t.name, scope: 'shared' as const, stored: `${backendId}-${t.name}` })),
      ...native.privateFiles.map((name) => ({ name, scope: 'exclusive' as const, stored: name })),
    ];
    // The meta stream alongside the uploads (its writes and close cost event-loop turns of their
    // own); both settle before either's failure is reported, so nothing is left writing.
    const writingMeta = writeMeta(streams);
    const uploading = uploadWindowed(jobs, (j) => upload(j.name, j.scope, j.stored));
    await Promise.allSettled([writingMeta, uploading]);
    const metaHandle = await writingMeta;
    const done = await uploading;
    const fresh = new Map(done.slice(0, newTables.length).map((f) => [f.localName, f.handle]));
    const sharedFiles = native.tables.map((t) => ({
      localName: t.name,
      handle: reused.get(t.name) ?? fresh.get(t.name)!,
    }));
    const privateFiles = done.slice(newTables.length);
    const handle: LevelDbIncrementalHandle = {
      type: INCREMENTAL_HANDLE_TYPE,
      keyGroupRange: { start: b.keyGroupRange.start, end: b.keyGroupRange.end },
      maxParallelism: b.maxParallelism,
      backendId,
      checkpointId,
      sharedFiles,
      privateFiles,
      meta: metaHandle,
    };
    if (!isSavepoint) b.chain.recordUploaded(checkpointId, new Map(sharedFiles.map((f) => [f.localName, f.handle])));
    return handle;
  };
  const done = run()
    .catch(async (err: unknown) => {
      // Nothing half-done survives: delete what this attempt uploaded (reused files are not ours).
      await metaStream?.discard().catch(() => undefined);
      await options.streams.discardFiles(uploaded).catch(() => undefined);
      if (err instanceof StreamStateError) throw err;
      throw new SnapshotError(
        'SNAPSHOT_FAILED',
        `LevelDB checkpoint ${checkpointId} failed while uploading: ${(err as Error).message}`,
        { cause: err },
      );
    })
    // On the worker: a recursive rm on the main thread took an event-loop turn per few files.
    .finally(() => fileSteps([{ op: 'remove', path: localDir }]).catch(() => undefined));
  return {
    checkpointId,
    done,
    cancel: () => {
      cancelled = true;
      // Aborts a write blocked in I/O; the upload loop notices `cancelled` after its current file.
      void metaStream?.discard().catch(() => undefined);
    },
  };
}
