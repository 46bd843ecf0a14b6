import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { memory } from '../../backends/memory/index.js';
import type { StateBackend } from '../../src/backend/contract.js';
import { changelog } from '../../src/changelog/backend.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import type { CompletedCheckpointInfo } from '../../src/checkpoint/metadata.js';
import { deleteGarbage, findGarbage } from '../../src/savepoint/checkpoint-dir.js';
import { copySnapshot } from '../../src/savepoint/copy-snapshot.js';
import type { S3BlobStore } from '../../src/storage/s3-blob-store.js';
import { DrivenJob, type JobContents } from '../support/s3/job-driver.js';
import { startS3rver, uniquePrefix, type S3rverFixture } from '../support/s3/s3rver-fixture.js';
import { blobNames } from '../support/s3/tree.js';

/**
 * Every backend checkpoints to S3 and restores from it through the CheckpointCoordinator, rescaled;
 * savepoints (canonical and native) go to S3, restore into the same and (canonical) another
 * backend, and a savepoint copied to another prefix restores from there with the original gone.
 * The conformance suites on S3 (conformance-s3.test.ts) cover the heap and LevelDB backends
 * operation by operation; this file covers the job-level path for all of them, changelog included.
 */
let s3: S3rverFixture;
let work: string;
beforeAll(async () => {
  s3 = await startS3rver();
  work = await mkdtemp(join(tmpdir(), 'ss-backends-s3-'));
});
afterAll(async () => {
  await s3?.stop();
  await rm(work, { recursive: true, force: true });
});

interface BackendCase {
  readonly name: string;
  /** A fresh backend instance (as after a process restart); `storage` is the job's checkpoint storage. */
  make(storage: BlobCheckpointStorage): StateBackend;
}

let instances = 0;
const CASES: readonly BackendCase[] = [
  { name: 'memory', make: () => memory() },
  { name: 'filesystem', make: () => filesystem({ checkpointDir: join(work, 'unused') }) },
  {
    name: 'leveldb (incremental)',
    make: () =>
      leveldb({ workingDir: join(work, `ldb-${++instances}`), incremental: true, writeBufferBytes: 16 * 1024 }),
  },
  {
    name: 'changelog(memory)',
    // Materialize at every checkpoint with changes, and upload log segments early: both go to S3.
    make: (storage) =>
      changelog({ backend: memory(), storage, materializationIntervalMs: 0, preemptivePersistBytes: 2048 }),
  },
];

describe.each(CASES)('$name with checkpoints and savepoints on S3', (c) => {
  let store: S3BlobStore;
  let storage: BlobCheckpointStorage;
  let afterRound3: JobContents;
  let canonical: CompletedCheckpointInfo;
  let native: CompletedCheckpointInfo;

  beforeAll(() => {
    store = s3.makeStore(uniquePrefix('backends'));
    storage = new BlobCheckpointStorage(store, { inlineThreshold: 0 });
  });

  it('checkpoints, restores rescaled (2 -> 3), checkpoints again; retention leaves nothing for gc', async () => {
    const job = await DrivenJob.start({ jobId: 'job', backend: c.make(storage), storage, parallelism: 2 });
    job.update(1);
    await job.checkpoint();
    job.update(2);
    const c2 = await job.checkpoint();
    const afterRound2 = await job.contents();
    await job.stop();
    expect(c2.checkpointId).toBe(2);
    expect(afterRound2.keyed).toHaveLength(200);
    expect((await blobNames(store, 'job/chk-2/')).length).toBeGreaterThan(1);

    const restored = await DrivenJob.start({
      jobId: 'job',
      backend: c.make(storage),
      storage,
      parallelism: 3,
      restore: 'latest',
    });
    try {
      expect(restored.plan?.checkpointId).toBe(2);
      expect(await restored.contents()).toEqual(afterRound2);
      restored.update(3);
      expect((await restored.checkpoint()).checkpointId).toBe(3);
      afterRound3 = await restored.contents();
      expect(afterRound3).not.toEqual(afterRound2);
      canonical = await restored.savepoint('canonical', 'savepoints');
      native = await restored.savepoint('native', 'savepoints');
    } finally {
      await restored.stop();
    }

    expect((await storage.listCompletedCheckpoints('job')).map((i) => i.checkpointId)).toEqual([3]);
    // Subsumed checkpoints and the shared files only they used were deleted from S3.
    expect((await blobNames(store, 'job/')).filter((n) => /\/chk-[12]\//.test(n))).toEqual([]);
    const garbage = await findGarbage(storage, 'job');
    if (c.name.startsWith('changelog')) {
      // A materialization that finished after the last checkpoint (here: while the savepoints were
      // taken) is in shared/ but referenced by no checkpoint yet; a stopped job leaves it to gc.
      expect(garbage.files.every((f) => f.reason === 'unreferenced-shared')).toBe(true);
    } else {
      expect(garbage.files).toEqual([]);
    }
    await deleteGarbage(storage, garbage);

    // What gc left is enough to restore the latest checkpoint.
    const again = await DrivenJob.start({
      jobId: 'job',
      backend: c.make(storage),
      storage,
      parallelism: 1,
      restore: 'latest',
    });
    try {
      expect(await again.contents()).toEqual(afterRound3);
    } finally {
      await again.stop();
    }
  });

  it('savepoints on S3 restore: canonical into this backend and into memory, native into this backend', async () => {
    expect(canonical.pointer.startsWith('savepoints/')).toBe(true);
    for (const [sp, backend, parallelism] of [
      [canonical, c.make(storage), 2],
      [canonical, memory(), 4],
      [native, c.make(storage), 2],
    ] as const) {
      const job = await DrivenJob.start({ jobId: 'reader', backend, storage, parallelism, restore: sp.pointer });
      try {
        expect(await job.contents()).toEqual(afterRound3);
      } finally {
        await job.stop();
      }
    }
  });

  it('a native savepoint copied to another prefix restores from there, with the original deleted', async () => {
    const elsewhere = s3.makeStore(uniquePrefix('relocated'));
    const copied = await copySnapshot({ store, dir: native.pointer }, { store: elsewhere, dir: 'moved/sp-1' });
    expect(copied.files).toBeGreaterThan(1);
    await store.delete(await blobNames(store, `${native.pointer}/`));
    const job = await DrivenJob.start({
      jobId: 'relocated',
      backend: c.make(storage),
      storage: new BlobCheckpointStorage(elsewhere),
      parallelism: 3,
      restore: 'moved/sp-1',
    });
    try {
      expect(await job.contents()).toEqual(afterRound3);
    } finally {
      await job.stop();
    }
  });
});
