import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { keyGroupForKey } from '../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import type { S3BlobStore } from '../../src/storage/s3-blob-store.js';
import { cli, errorLine, oneLine, tempDir, type CliRun } from '../cli/support.js';
import { writeCheckpoints, writeJob } from '../savepoint/support/job.js';
import { BackendHarness } from '../support/backend-harness.js';
import { startFaultProxy, type FaultProxy } from '../support/s3/fault-proxy.js';
import { S3RVER_CREDENTIALS, startS3rver, type S3rverFixture } from '../support/s3/s3rver-fixture.js';
import { blobNames, localFiles, uploadTree } from '../support/s3/tree.js';

/**
 * The CLI on s3:// paths, run in-process against s3rver: snapshots and checkpoint directories are
 * written locally, uploaded byte for byte, and every command must print on the S3 copy what it
 * prints on the local one (paths aside). Credentials come from the AWS variables, as for users.
 */
let s3: S3rverFixture;
let store: S3BlobStore;
let root: string;
let data: string;
let cleanup: () => Promise<void>;
let heapNative: string;
let levelNative: string;
let ckRoot: string;
const savedEnv: Record<string, string | undefined> = {};

const PREFIX = 'cli';
const s3Url = (local: string): string => `s3://${s3.bucket}/${PREFIX}/${relative(data, local).split(sep).join('/')}`;
const flags = (): string[] => ['--s3-endpoint', s3.endpoint, '--s3-path-style', '--s3-region', 'us-east-1'];
const onS3 = (args: string[]): Promise<CliRun> => cli([...flags(), ...args]);
/** Output with the given path spelled the same on both sides. */
const sameAs = (r: CliRun, path: string): string => r.stdout.split(path).join('<path>');

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
  ({ dir: root, cleanup } = await tempDir('ss-cli-s3-'));
  data = join(root, 'data');
  heapNative = await writeJob(new HeapStateBackend({ name: 'memory' }), {
    root: data,
    parallelism: 2,
    format: 'native',
  });
  levelNative = await writeJob(leveldb({ workingDir: join(root, 'work') }), {
    root: data,
    parallelism: 3,
    format: 'native',
  });
  ckRoot = join(data, 'checkpoints');
  await writeCheckpoints(new HeapStateBackend({ name: 'filesystem' }), {
    root: ckRoot,
    jobId: 'job-x',
    count: 3,
    numRetained: 2,
  });
  // LevelDB incremental: its checkpoints reference ../shared/ files.
  await writeCheckpoints(leveldb({ workingDir: join(root, 'work2') }), {
    root: ckRoot,
    jobId: 'job-y',
    count: 2,
    numRetained: 1,
  });
  await uploadTree(data, store, PREFIX);
});

afterAll(async () => {
  await s3?.stop();
  await cleanup?.();
  for (const [k, v] of Object.entries(savedEnv)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

describe('the CLI on s3:// paths prints what it prints on a local copy', () => {
  it('inspect (savepoints, a checkpoint with ../shared files, the _metadata object itself)', async () => {
    for (const local of [
      heapNative,
      levelNative,
      join(ckRoot, 'job-y', 'chk-2'),
      join(ckRoot, 'job-x', 'chk-3', '_metadata'),
    ]) {
      const a = await cli(['inspect', local, '--json']);
      const b = await onS3(['inspect', s3Url(local), '--json']);
      expect(a.code, a.stderr).toBe(0);
      expect(b.code, b.stderr).toBe(0);
      expect(sameAs(b, s3Url(local))).toBe(sameAs(a, local));
      expect(JSON.parse(b.stdout).operators.length).toBe(1);
    }
  });

  it('verify decodes every record, also of LevelDB native handles restored through LevelDB', async () => {
    for (const local of [heapNative, levelNative, join(ckRoot, 'job-y', 'chk-2')]) {
      const a = await cli(['verify', local, '--json']);
      const b = await onS3(['verify', s3Url(local), '--json']);
      expect(b.code, b.stderr).toBe(0);
      expect(sameAs(b, s3Url(local))).toBe(sameAs(a, local));
      expect(JSON.parse(b.stdout).records).toBeGreaterThan(0);
    }
  });

  it('dump', async () => {
    for (const local of [heapNative, levelNative, join(ckRoot, 'job-y', 'chk-2')]) {
      const a = await cli(['dump', local, '--operator', 'op-1']);
      const b = await onS3(['dump', s3Url(local), '--operator', 'op-1']);
      expect(b.code, b.stderr).toBe(0);
      expect(b.stdout).toBe(a.stdout);
      expect(b.stdout.split('\n').length).toBeGreaterThan(100);
    }
  });

  it('list: the storage root and one job directory', async () => {
    for (const local of [ckRoot, join(ckRoot, 'job-x'), join(ckRoot, 'job-y')]) {
      const a = await cli(['list', local, '--json']);
      const b = await onS3(['list', s3Url(local), '--json']);
      expect(b.code, b.stderr).toBe(0);
      expect(b.stdout).toBe(a.stdout);
    }
    const jobs = JSON.parse((await onS3(['list', s3Url(ckRoot), '--json'])).stdout) as {
      jobId: string;
      checkpoints: { checkpointId: number }[];
    }[];
    expect(jobs.map((j) => [j.jobId, j.checkpoints.map((c) => c.checkpointId)])).toEqual([
      ['job-x', [2, 3]],
      ['job-y', [2]],
    ]);
  });

  it('gc --dry-run and gc find and delete the same garbage; the retained checkpoints stay intact', async () => {
    const jobDir = join(ckRoot, 'job-x');
    // Names streamstate writes (gc deletes no others); --min-age 0 as the job is stopped (S3 cannot backdate objects).
    const garbage = {
      'chk-9/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa': 'partial',
      'shared/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb': 'nobody uses me',
      'taskowned/keep': 'never touched',
    };
    for (const [name, text] of Object.entries(garbage)) {
      await mkdir(join(jobDir, name, '..'), { recursive: true });
      await writeFile(join(jobDir, name), text);
      await store.put(`${PREFIX}/checkpoints/job-x/${name}`, Buffer.from(text));
    }
    const dryLocal = await cli(['gc', jobDir, '--dry-run', '--json', '--min-age', '0']);
    const dryS3 = await onS3(['gc', s3Url(jobDir), '--dry-run', '--json', '--min-age', '0']);
    expect(dryS3.code, dryS3.stderr).toBe(0);
    expect(dryS3.stdout).toBe(dryLocal.stdout);
    expect((JSON.parse(dryS3.stdout).jobs[0].files as { name: string }[]).map((f) => f.name)).toEqual([
      'job-x/chk-9/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
      'job-x/shared/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb',
    ]);
    expect(await blobNames(store, `${PREFIX}/checkpoints/job-x/shared/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb`)).toHaveLength(
      1,
    );

    const real = await onS3(['gc', s3Url(ckRoot), '--min-age', '0']); // the root: every job
    expect(real.code, real.stderr).toBe(0);
    expect(real.stdout).toContain('job job-x: deleted 2 files');
    const left = await blobNames(store, `${PREFIX}/checkpoints/job-x/`);
    expect(left).not.toContain(`${PREFIX}/checkpoints/job-x/chk-9/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa`);
    expect(left).not.toContain(`${PREFIX}/checkpoints/job-x/shared/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb`);
    expect(left).toContain(`${PREFIX}/checkpoints/job-x/taskowned/keep`);
    await cli(['gc', jobDir, '--min-age', '0']);
    const remaining = (await localFiles(jobDir)).map((f) => `${PREFIX}/checkpoints/job-x/${f}`);
    expect(left).toEqual(remaining);
    for (const id of [2, 3]) expect((await onS3(['verify', s3Url(join(jobDir, `chk-${id}`))])).code).toBe(0);
  });
});

describe('convert with s3:// source and destination', () => {
  it('s3 -> s3, s3 -> local and local -> s3 produce savepoints with the same contents as local -> local', async () => {
    const out = join(root, 'converted');
    await mkdir(out, { recursive: true });
    const args = ['--to', 'leveldb', '--format', 'native', '--parallelism', '2'];
    const local = await cli(['convert', levelNative, join(out, 'local'), ...args]);
    expect(local.code, local.stderr).toBe(0);
    const dstS3 = `s3://${s3.bucket}/converted/from-s3`;
    const s3ToS3 = await onS3(['convert', s3Url(levelNative), dstS3, ...args]);
    expect(s3ToS3.code, s3ToS3.stderr).toBe(0);
    expect(s3ToS3.stdout).toContain(`-> ${dstS3}: native savepoint for leveldb (op-1@2)`);
    const s3ToLocal = await onS3(['convert', s3Url(levelNative), join(out, 'from-s3'), ...args]);
    expect(s3ToLocal.code, s3ToLocal.stderr).toBe(0);
    const localToS3 = await onS3(['convert', heapNative, `s3://${s3.bucket}/converted/from-local`, '--to', 'memory']);
    expect(localToS3.code, localToS3.stderr).toBe(0);

    // Only the savepoint's own objects, _metadata among them.
    const names = await blobNames(store, 'converted/from-s3/');
    expect(names).toContain('converted/from-s3/_metadata');
    expect(names.every((n) => n.startsWith('converted/from-s3/'))).toBe(true);

    const dumpOf = async (path: string): Promise<string> => (await onS3(['dump', path, '--operator', 'op-1'])).stdout;
    const expected = await dumpOf(join(out, 'local'));
    expect(expected.length).toBeGreaterThan(1000);
    expect(await dumpOf(dstS3)).toBe(expected);
    expect(await dumpOf(join(out, 'from-s3'))).toBe(expected);
    // Heap native and canonical order entries within a key group differently: compare as sets.
    const sorted = (text: string): string[] => text.split('\n').sort();
    expect(sorted(await dumpOf(`s3://${s3.bucket}/converted/from-local`))).toEqual(sorted(await dumpOf(heapNative)));
    const inspect = JSON.parse((await onS3(['inspect', dstS3, '--json'])).stdout) as { kind: string; backend: string };
    expect([inspect.kind, inspect.backend]).toEqual(['savepoint', 'leveldb']);

    // An existing destination is refused before any work, and left as it was.
    const again = await onS3(['convert', s3Url(levelNative), dstS3, ...args]);
    expect(again.code).toBe(2);
    expect(oneLine(again.stderr)).toContain('ALREADY_EXISTS');
    expect(await blobNames(store, 'converted/from-s3/')).toEqual(names);
  });

  it('an upload that fails leaves nothing under the destination (exit 1, typed error)', async () => {
    const proxy: FaultProxy = await startFaultProxy({ target: s3.endpoint, seed: 7 });
    try {
      proxy.setRules([
        { fault: 'slowdown', method: 'PUT', pathIncludes: 'failed-dst/_metadata', times: Number.POSITIVE_INFINITY },
      ]);
      const dst = `s3://${s3.bucket}/converted/failed-dst`;
      const r = await cli([
        '--s3-endpoint',
        proxy.endpoint,
        '--s3-path-style',
        'convert',
        s3Url(heapNative),
        dst,
        '--to',
        'memory',
      ]);
      expect(r.code).toBe(1);
      expect(errorLine(r.stderr)).toMatch(/STORAGE_IO: S3 kept throttling.*failed-dst\/_metadata/);
      expect(proxy.stats.faults.slowdown).toBeGreaterThanOrEqual(2);
      expect(await blobNames(store, 'converted/failed-dst')).toEqual([]);
    } finally {
      await proxy.stop();
    }
  });
});

describe('bad s3:// input', () => {
  it('a missing bucket, a missing prefix, a job directory given as a snapshot', async () => {
    const bucket = await onS3(['inspect', 's3://no-such-bucket/x/chk-1']);
    expect(bucket.code).toBe(3);
    expect(oneLine(bucket.stderr)).toContain('bucket "no-such-bucket" does not exist');
    const prefix = await onS3(['verify', `s3://${s3.bucket}/nothing/here`]);
    expect(prefix.code).toBe(3);
    expect(oneLine(prefix.stderr)).toContain('no objects under this prefix');
    const list = await onS3(['list', `s3://${s3.bucket}/nothing`]);
    expect(list.code).toBe(3);
    const jobDir = await onS3(['inspect', s3Url(join(ckRoot, 'job-x'))]);
    expect(jobDir.code).toBe(3);
    expect(oneLine(jobDir.stderr)).toContain('streamstate list');
    const bare = await onS3(['inspect', `s3://${s3.bucket}`]);
    expect(bare.code).toBe(2);
    const notUrl = await onS3(['inspect', 's3://UPPER/x']);
    expect(notUrl.code).toBe(2);
    expect(oneLine(notUrl.stderr)).toContain('bucket name');
  });

  it('wrong credentials: a typed error that names the cause, after bounded retries', async () => {
    // s3rver checks the access key id (it does not verify SigV4 signatures).
    process.env.AWS_ACCESS_KEY_ID = 'WRONG';
    try {
      const r = await onS3(['inspect', s3Url(heapNative)]);
      expect(r.code).toBe(1);
      expect(oneLine(r.stderr)).toMatch(/STORAGE_IO: S3 access denied.*check credentials/);
    } finally {
      process.env.AWS_ACCESS_KEY_ID = S3RVER_CREDENTIALS.accessKeyId;
    }
  });

  it('the endpoint and region come from AWS_ENDPOINT_URL_S3 / AWS_REGION when no flag is given', async () => {
    process.env.AWS_ENDPOINT_URL_S3 = s3.endpoint;
    try {
      const r = await cli(['inspect', s3Url(heapNative), '--s3-path-style']); // global option after the command
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('op-1');
    } finally {
      delete process.env.AWS_ENDPOINT_URL_S3;
    }
  });
});

describe('checkpoints written with entropy injection', () => {
  it('list and verify read them given --s3-entropy-marker; without it the data files are not found', async () => {
    const entropyStore = s3.makeStore('ent/_entropy_/chk', { entropy: { marker: '_entropy_' } });
    const harness = await BackendHarness.create(async () => ({
      backend: new HeapStateBackend({ name: 'memory' }),
      storage: new BlobCheckpointStorage(entropyStore, { inlineThreshold: 0 }),
      cleanup: async () => undefined,
    }));
    try {
      const op = await harness.createKeyedOperator({ keySerializer: stringSerializer, parallelism: 2 });
      const v = valueState<string>('v', { serializer: stringSerializer });
      for (let i = 0; i < 50; i++) {
        const key = `k${i}`;
        const owner = op.find((x) =>
          x.keyGroupRange.contains(keyGroupForKey(key, stringSerializer, x.maxParallelism)),
        )!;
        owner.setCurrentKey(key);
        owner.getState(v).update(`value-${i}`);
      }
      const pointer = await harness.checkpoint(op);
      // The data files really are under random prefixes, outside ent/chk/.
      const keys = (await blobNames(store, 'ent/')).filter((k) => !k.startsWith('ent/chk/'));
      expect(keys.length).toBeGreaterThanOrEqual(2);

      const withMarker = ['--s3-entropy-marker', '_entropy_'];
      const list = await onS3([...withMarker, 'list', `s3://${s3.bucket}/ent/_entropy_/chk`, '--json']);
      expect(list.code, list.stderr).toBe(0);
      expect(JSON.parse(list.stdout)[0].checkpoints.map((c: { pointer: string }) => c.pointer)).toEqual([pointer]);
      const url = `s3://${s3.bucket}/ent/_entropy_/chk/${pointer}`;
      const ok = await onS3([...withMarker, 'verify', url, '--json']);
      expect(ok.code, ok.stderr).toBe(0);
      expect(JSON.parse(ok.stdout).records).toBe(50);
      const without = await onS3(['verify', `s3://${s3.bucket}/ent/chk/${pointer}`]);
      expect(without.code).toBe(3);
    } finally {
      await harness.dispose();
    }
  });
});
