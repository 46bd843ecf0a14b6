import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/index.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator } from '../../src/checkpoint/coordinator.js';
import type { CheckpointMetadata } from '../../src/checkpoint/metadata.js';
import { decodeMetadata, encodeMetadata } from '../../src/checkpoint/metadata-codec.js';
import type { S3BlobStore } from '../../src/storage/s3-blob-store.js';
import { cli, tempDir } from '../cli/support.js';
import { MAX_PARALLELISM, OPERATOR, writeCheckpoints, writeJob } from '../savepoint/support/job.js';
import { expectRejectsCode } from '../support/errors.js';
import { blobNames, uploadTree } from '../support/s3/tree.js';
import { S3RVER_CREDENTIALS, startS3rver, type S3rverFixture } from '../support/s3/s3rver-fixture.js';

/**
 * Issue 12, "Paths in handles", on S3: a checkpoint whose handle climbs into another job, and a
 * savepoint under one prefix whose handle reaches objects under another, are refused (CORRUPT)
 * by the library and the CLI before any object is read or deleted. Snapshots are written on local
 * disk, crafted there (re-encoded _metadata: a valid checksum) and uploaded byte for byte.
 */
let s3: S3rverFixture;
let store: S3BlobStore;
let cleanup: () => Promise<void>;
let data: string;
let savepointDir: string;
const savedEnv: Record<string, string | undefined> = {};
const PREFIX = 'sec';
/** Store-relative (under PREFIX) name of the victim object of job B. */
let victim: string;

async function redirectFirstFile(metadataFile: string, targetPath: string, targetLocal: string): Promise<void> {
  const metadata = decodeMetadata(await readFile(metadataFile)) as CheckpointMetadata;
  const target = await readFile(targetLocal);
  let done = false;
  const visit = (v: unknown): void => {
    if (done || v === null || typeof v !== 'object') return;
    const o = v as Record<string, unknown>;
    if (o.type === 'file' && typeof o.path === 'string') {
      Object.assign(o, { path: targetPath, size: target.length, crc32: crc32(target) });
      done = true;
      return;
    }
    for (const x of Object.values(o)) visit(x);
  };
  visit(metadata.operators);
  expect(done).toBe(true);
  await writeFile(metadataFile, encodeMetadata(metadata));
}

const flags = (): string[] => ['--s3-endpoint', s3.endpoint, '--s3-path-style', '--s3-region', 'us-east-1'];
const url = (rel: string): string => `s3://${s3.bucket}/${PREFIX}/${rel}`;

beforeAll(async () => {
  for (const k of [
    'AWS_ACCESS_KEY_ID',
    'AWS_SECRET_ACCESS_KEY',
    'AWS_ENDPOINT_URL',
    'AWS_ENDPOINT_URL_S3',
    'AWS_REGION',
  ])
    savedEnv[k] = process.env[k];
  process.env.AWS_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = S3RVER_CREDENTIALS.secretAccessKey;
  delete process.env.AWS_ENDPOINT_URL;
  delete process.env.AWS_ENDPOINT_URL_S3;
  s3 = await startS3rver();
  store = s3.makeStore('');
  let root: string;
  ({ dir: root, cleanup } = await tempDir('ss-confined-s3-'));
  data = join(root, 'data');
  const ck = join(data, 'checkpoints');
  await writeCheckpoints(new HeapStateBackend({ name: 'filesystem' }), {
    root: ck,
    jobId: 'job-a',
    count: 2,
    numRetained: 2,
  });
  await writeCheckpoints(new HeapStateBackend({ name: 'filesystem' }), {
    root: ck,
    jobId: 'job-b',
    count: 1,
    numRetained: 1,
  });
  savepointDir = await writeJob(new HeapStateBackend({ name: 'memory' }), {
    root: join(data, 'savepoints'),
    parallelism: 2,
    format: 'native',
  });
  const bChk = join(ck, 'job-b', (await readdir(join(ck, 'job-b'))).find((n) => n.startsWith('chk-'))!);
  const bFile = join(bChk, (await readdir(bChk)).find((n) => n !== '_metadata')!);
  victim = relative(data, bFile).split(sep).join('/');
  // job-a's latest checkpoint reaches into job-b; the savepoint (under savepoints/) reaches under checkpoints/.
  const aChks = (await readdir(join(ck, 'job-a'))).filter((n) => n.startsWith('chk-')).sort();
  await redirectFirstFile(
    join(ck, 'job-a', aChks[aChks.length - 1], '_metadata'),
    `../../${relative(ck, bFile).split(sep).join('/')}`,
    bFile,
  );
  await redirectFirstFile(
    join(savepointDir, '_metadata'),
    `${'../'.repeat(relative(data, savepointDir).split(sep).length)}${victim}`,
    bFile,
  );
  await uploadTree(data, store, PREFIX);
}, 120_000);

afterAll(async () => {
  await s3?.stop();
  await cleanup?.();
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

async function victimIntact(): Promise<void> {
  expect(await blobNames(store, `${PREFIX}/${victim}`)).toEqual([`${PREFIX}/${victim}`]);
}

describe('confined paths on S3', () => {
  it('restore of the crafted checkpoint refuses with CORRUPT; job B keeps every object', async () => {
    const before = await blobNames(store, `${PREFIX}/checkpoints/job-b/`);
    const storage = new BlobCheckpointStorage(s3.makeStore(`${PREFIX}/checkpoints`), { inlineThreshold: 0 });
    const coordinator = new CheckpointCoordinator({
      jobId: 'job-a',
      storage,
      backendName: 'filesystem',
      operators: [{ operatorId: OPERATOR, parallelism: 2, maxParallelism: MAX_PARALLELISM }],
      numRetained: 1,
    });
    const err = await expectRejectsCode(coordinator.restore(), 'CORRUPT');
    expect(err.message).toContain('outside the snapshot');
    expect(await blobNames(store, `${PREFIX}/checkpoints/job-b/`)).toEqual(before);
  });

  it('claim-mode restore of the savepoint whose handle reaches under another prefix refuses; nothing is deleted', async () => {
    const storage = new BlobCheckpointStorage(s3.makeStore(PREFIX), { inlineThreshold: 0 });
    const coordinator = new CheckpointCoordinator({
      jobId: 'job-c',
      storage,
      backendName: 'memory',
      operators: [{ operatorId: OPERATOR, parallelism: 2, maxParallelism: MAX_PARALLELISM }],
      numRetained: 1,
      restoreMode: 'claim',
    });
    await expectRejectsCode(coordinator.restore(relative(data, savepointDir).split(sep).join('/')), 'CORRUPT');
    await victimIntact();
  });

  it('the CLI (verify, dump, convert) on s3:// refuses both with exit 4', async () => {
    const chk = (await blobNames(store, `${PREFIX}/checkpoints/job-a/`))
      .filter((n) => n.endsWith('/_metadata'))
      .sort()
      .at(-1)!;
    const targets = [
      url(chk.slice(PREFIX.length + 1, -'/_metadata'.length)),
      url(relative(data, savepointDir).split(sep).join('/')),
    ];
    const { dir, cleanup: done } = await tempDir('ss-confined-s3-out-');
    try {
      for (const target of targets) {
        for (const args of [
          ['verify', target],
          ['dump', target, '--operator', OPERATOR],
          ['convert', target, join(dir, `out-${targets.indexOf(target)}`), '--to', 'memory'],
        ]) {
          const r = await cli([...flags(), ...args]);
          expect(r.code, `${args[0]} ${target}: ${r.stdout}${r.stderr}`).toBe(4);
          expect(`${r.stdout}${r.stderr}`).toContain('a snapshot may reference only files under');
        }
      }
    } finally {
      await done();
    }
    await victimIntact();
  }, 60_000);
});
