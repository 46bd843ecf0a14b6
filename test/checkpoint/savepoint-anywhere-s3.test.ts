import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { BlobCheckpointStorage, localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import type { S3Connection } from '../../src/checkpoint/savepoint-location.js';
import { expectDocumentedError } from '../conformance/parity/error-classes.js';
import { startS3rver, uniquePrefix, type S3rverFixture } from '../support/s3/s3rver-fixture.js';
import {
  checkpoint,
  fill,
  readAll,
  snapshotAndAcknowledge,
  startJob,
  storeTree,
} from './savepoint-anywhere-support.js';

/**
 * Savepoints anywhere on S3 (s3rver on 127.0.0.1): a job on S3 storage takes a savepoint to an
 * s3:// URL of its choice; a local job (its own local storage, another backend, another
 * parallelism) starts from that URL, and from the S3 job's chk-<n>, in no-claim mode.
 */
const KEYS = 50;
let s3: S3rverFixture;
let root: string;
let connection: S3Connection;

beforeAll(async () => {
  s3 = await startS3rver();
  root = await mkdtemp(join(tmpdir(), 'ss-sp-s3-'));
  const { bucket: _b, prefix: _p, ...rest } = s3.storeOptions('');
  connection = rest;
});
afterAll(async () => {
  await s3?.stop();
  await rm(root, { recursive: true, force: true });
});

describe('savepoints on S3, restored into a local job', () => {
  it('savepoint to s3://bucket/prefix, then a local LevelDB job at another parallelism restores it and checkpoints locally; the S3 objects stay', async () => {
    const prefix = uniquePrefix('sp-anywhere');
    const a = await startJob({
      jobId: 'job-s3',
      storage: new BlobCheckpointStorage(s3.makeStore(`${prefix}/checkpoints`), { inlineThreshold: 0 }),
      backend: filesystem({ checkpointDir: join(root, 'unused') }),
      parallelism: 2,
      savepoints: { s3: connection },
    });
    fill(a, KEYS, 1);
    const target = `s3://${s3.bucket}/${prefix}/savepoints/sp-1`;
    const sp = a.coordinator.triggerSavepoint({ target });
    await snapshotAndAcknowledge(a, sp);
    const info = await sp.completion;
    expect(info.pointer).toBe(target);
    fill(a, KEYS, 2);
    const chk = await checkpoint(a);
    await a.close();

    const bucket = s3.makeStore('');
    const savepointObjects = await storeTree(bucket, `${prefix}/savepoints/sp-1/`);
    expect(savepointObjects.has(`${prefix}/savepoints/sp-1/_metadata`)).toBe(true);
    const checkpointObjects = await storeTree(bucket, `${prefix}/checkpoints/`);

    const fromSavepoint = await startJob({
      jobId: 'job-local',
      storage: localCheckpointStorage(join(root, 'local-1'), { inlineThreshold: 0 }),
      backend: leveldb({ workingDir: join(root, 'work-1') }),
      parallelism: 3,
      restoreFrom: target,
      savepoints: { s3: connection },
    });
    expect(fromSavepoint.plan?.mode).toBe('no-claim');
    expect(readAll(fromSavepoint, KEYS)).toEqual(Array.from({ length: KEYS }, (_, k) => `key-${k}@1`));
    fill(fromSavepoint, KEYS, 3);
    expect((await checkpoint(fromSavepoint)).pointer).toMatch(/^job-local\/chk-\d+$/);
    await fromSavepoint.coordinator.collectGarbage();
    await fromSavepoint.close('cancel');

    const fromCheckpoint = await startJob({
      jobId: 'job-local-2',
      storage: localCheckpointStorage(join(root, 'local-2'), { inlineThreshold: 0 }),
      backend: filesystem({ checkpointDir: join(root, 'unused-2') }),
      parallelism: 1,
      restoreFrom: `s3://${s3.bucket}/${prefix}/checkpoints/${chk.pointer}`,
      savepoints: { s3: connection },
    });
    expect(readAll(fromCheckpoint, KEYS)).toEqual(Array.from({ length: KEYS }, (_, k) => `key-${k}@2`));
    await checkpoint(fromCheckpoint);
    await fromCheckpoint.coordinator.collectGarbage();
    await fromCheckpoint.close();

    expect(await storeTree(bucket, `${prefix}/savepoints/sp-1/`)).toEqual(savepointObjects);
    expect(await storeTree(bucket, `${prefix}/checkpoints/`)).toEqual(checkpointObjects);
  });

  it('an s3:// target that holds objects: SAVEPOINT_TARGET_NOT_EMPTY and nothing written; an s3:// pointer without _metadata: NOT_A_SNAPSHOT', async () => {
    const prefix = uniquePrefix('sp-taken');
    const bucket = s3.makeStore('');
    await bucket.put(`${prefix}/taken/readme`, Buffer.from('someone else'));
    const a = await startJob({
      jobId: 'job-local',
      storage: localCheckpointStorage(join(root, 'local-3'), { inlineThreshold: 0 }),
      backend: filesystem({ checkpointDir: join(root, 'unused-3') }),
      parallelism: 2,
      savepoints: { s3: connection },
    });
    fill(a, KEYS, 1);
    const sp = a.coordinator.triggerSavepoint({ target: `s3://${s3.bucket}/${prefix}/taken` });
    const failed = await snapshotAndAcknowledge(a, sp).then(
      () => null,
      (e: unknown) => e,
    );
    if (failed !== null) await a.coordinator.abort(sp.checkpointId, String(failed));
    expectDocumentedError(
      await sp.completion.then(
        () => null,
        (e: unknown) => e,
      ),
      'SAVEPOINT_TARGET_NOT_EMPTY',
    );
    expect([...(await storeTree(bucket, `${prefix}/`)).keys()]).toEqual([`${prefix}/taken/readme`]);
    await a.close();

    const err = await startJob({
      jobId: 'job-b',
      storage: localCheckpointStorage(join(root, 'local-4')),
      backend: filesystem({ checkpointDir: join(root, 'unused-4') }),
      parallelism: 1,
      restoreFrom: `s3://${s3.bucket}/${prefix}/taken`,
      savepoints: { s3: connection },
    }).then(
      () => null,
      (e: unknown) => e,
    );
    expectDocumentedError(err, 'NOT_A_SNAPSHOT');
  });
});
