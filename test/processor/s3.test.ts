import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { bootstrapSavepoint, keyedValues, openSnapshot, transformSavepoint } from '../../src/processor/index.js';
import type { OperatorKeyGroups } from '../../src/savepoint/key-group-sizes.js';
import type { S3ConnectionOptions } from '../../src/savepoint/locate.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import type { S3BlobStore } from '../../src/storage/s3-blob-store.js';
import { cli, tempDir } from '../cli/support.js';
import { OPERATOR, writeJob } from '../savepoint/support/job.js';
import { S3RVER_CREDENTIALS, startS3rver, type S3rverFixture } from '../support/s3/s3rver-fixture.js';
import { uploadTree } from '../support/s3/tree.js';
import { jobModel, readerContents } from './support.js';

/** The State Processor API and its CLI verbs on s3:// paths, against s3rver on 127.0.0.1. */
let s3: S3rverFixture;
let store: S3BlobStore;
let root: string;
let cleanup: () => Promise<void>;
let conn: S3ConnectionOptions;
const savedEnv: Record<string, string | undefined> = {};
const url = (key: string): string => `s3://${s3.bucket}/${key}`;
const flags = (): string[] => ['--s3-endpoint', s3.endpoint, '--s3-path-style', '--s3-region', 'us-east-1'];

beforeAll(async () => {
  for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']) savedEnv[k] = process.env[k];
  process.env.AWS_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = S3RVER_CREDENTIALS.secretAccessKey;
  s3 = await startS3rver();
  store = s3.makeStore('');
  conn = { endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true };
  ({ dir: root, cleanup } = await tempDir('ss-processor-s3-'));
  await writeJob(new HeapStateBackend({ name: 'memory' }), {
    root: join(root, 'data', 'heap'),
    parallelism: 2,
    format: 'canonical',
    data: { keys: 20 },
  });
  await writeJob(leveldb({ workingDir: join(root, 'work') }), {
    root: join(root, 'data', 'ldb'),
    parallelism: 2,
    format: 'native',
    data: { keys: 20 },
  });
  await uploadTree(join(root, 'data'), store, 'up');
}, 30_000);

afterAll(async () => {
  await s3?.stop();
  await cleanup?.();
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

async function savepointKey(dir: string): Promise<string> {
  const names = (await store.list(`${dir}/`)).map((b) => b.name).filter((n) => n.endsWith('/_metadata'));
  expect(names.length).toBe(1);
  return names[0].slice(0, -'/_metadata'.length);
}

describe('processor on S3', () => {
  it('reads canonical and LevelDB native savepoints from s3:// as the job wrote them', async () => {
    for (const dir of ['up/heap', 'up/ldb']) {
      const reader = await openSnapshot(url(await savepointKey(dir)), { s3: conn });
      try {
        expect(await readerContents(reader, OPERATOR)).toEqual(jobModel(20, 2));
      } finally {
        await reader.close();
      }
    }
  }, 30_000);

  it('bootstraps to s3://, edits s3:// -> s3:// through the CLI, and an existing prefix is ALREADY_EXISTS', async () => {
    const target = url('made/bootstrapped');
    await bootstrapSavepoint(
      target,
      [
        {
          operatorId: 'geo',
          parallelism: 2,
          keySerializer: stringSerializer,
          keyed: [
            keyedValues(valueState<string>('city', { serializer: stringSerializer }), [
              { key: 'u1', value: 'Oslo' },
              { key: 'u2', value: 'Lima' },
            ]),
          ],
        },
      ],
      { s3: conn },
    );
    await expect(bootstrapSavepoint(target, [{ operatorId: 'x', parallelism: 1 }], { s3: conn })).rejects.toMatchObject(
      { code: 'ALREADY_EXISTS' },
    );
    const r = await cli([...flags(), 'edit', target, url('made/edited'), '--rename-operator', 'geo=places']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const d = await cli([...flags(), 'dump', url('made/edited'), '--operator', 'places']);
    expect(d.code).toBe(0);
    expect(
      d.stdout
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => (JSON.parse(l) as { key: string; value: string }).value)
        .sort(),
    ).toEqual(['Lima', 'Oslo']);
    // A transform from S3 to a local directory too.
    await transformSavepoint(
      url('made/edited'),
      join(root, 'local-copy'),
      [{ type: 'drop-state', operatorId: 'places', state: 'city' }],
      { s3: conn },
    );
    const local = await openSnapshot(join(root, 'local-copy'));
    // The operator stays (a job may still expect it), without state.
    expect(local.describe().map((o) => [o.operatorId, o.keyedStates.length, o.operatorStates.length])).toEqual([
      ['places', 0, 0],
    ]);
    await local.close();
  }, 30_000);

  it('convert --max-parallelism reads s3:// and writes s3:// (and local), and inspect --key-groups reads the result', async () => {
    const src = url(await savepointKey('up/ldb'));
    const dst = url('rehashed/ldb-256');
    const r = await cli([
      ...flags(),
      'convert',
      src,
      dst,
      '--to',
      'memory',
      '--max-parallelism',
      '256',
      '--parallelism',
      '3',
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const reader = await openSnapshot(dst, { s3: conn });
    try {
      expect(reader.describe().map((o) => [o.operatorId, o.maxParallelism, o.parallelism])).toEqual([
        [OPERATOR, 256, 3],
      ]);
      expect(await readerContents(reader, OPERATOR)).toEqual(jobModel(20, 2));
    } finally {
      await reader.close();
    }
    // Key-group sizes of the S3 result: 256 key groups, shares at a proposed parallelism, sums that add up.
    const k = await cli([...flags(), 'inspect', dst, '--key-groups', '--json', '--parallelism', '5']);
    expect(k.stderr).toBe('');
    expect(k.code).toBe(0);
    const [op] = (JSON.parse(k.stdout) as { operators: OperatorKeyGroups[] }).operators;
    expect([op.operatorId, op.maxParallelism, op.proposedParallelism, op.subtasks.length]).toEqual([
      OPERATOR,
      256,
      5,
      5,
    ]);
    expect(op.keyGroups.every((g) => g.keyGroup >= 0 && g.keyGroup < 256)).toBe(true);
    expect(op.keyGroups.reduce((n, g) => n + g.bytes, 0)).toBe(op.bytes);
    expect(op.subtasks.reduce((n, t) => n + t.bytes, 0)).toBe(op.bytes);
    // An existing s3:// destination: ALREADY_EXISTS, and nothing more is written there.
    const before = (await store.list('rehashed/')).map((b) => b.name).sort();
    const again = await cli([...flags(), 'convert', src, dst, '--to', 'memory', '--max-parallelism', '64']);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain('ALREADY_EXISTS');
    expect((await store.list('rehashed/')).map((b) => b.name).sort()).toEqual(before);
    // s3:// -> local at yet another max parallelism, back from the S3 result.
    const local = join(root, 'rehashed-local');
    const l = await cli([
      ...flags(),
      'convert',
      dst,
      local,
      '--to',
      'memory',
      '--max-parallelism',
      '7',
      '--parallelism',
      '2',
    ]);
    expect(l.stderr).toBe('');
    expect(l.code).toBe(0);
    const back = await openSnapshot(local);
    try {
      expect(back.describe().map((o) => [o.operatorId, o.maxParallelism, o.parallelism])).toEqual([[OPERATOR, 7, 2]]);
      expect(await readerContents(back, OPERATOR)).toEqual(jobModel(20, 2));
    } finally {
      await back.close();
    }
  }, 60_000);
});
