import { mkdir, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { writeCheckpoints, writeJob } from '../savepoint/support/job.js';
import { cli, oneLine, tempDir } from './support.js';

let root: string;
let cleanup: () => Promise<void>;
let heapNative: string;
let levelNative: string;
let ckRoot: string;
let jobDir: string;

const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-cli-dlg-'));
  heapNative = await writeJob(new HeapStateBackend({ name: 'memory' }), { root, parallelism: 2, format: 'native' });
  levelNative = await writeJob(leveldb({ workingDir: join(root, 'work') }), { root, parallelism: 3, format: 'native' });
  ckRoot = join(root, 'checkpoints');
  jobDir = await writeCheckpoints(new HeapStateBackend({ name: 'filesystem' }), {
    root: ckRoot,
    jobId: 'job-x',
    count: 3,
    numRetained: 2,
  });
  await writeCheckpoints(leveldb({ workingDir: join(root, 'work2') }), {
    root: ckRoot,
    jobId: 'job-y',
    count: 2,
    numRetained: 1,
  });
});

afterAll(async () => cleanup());

function lines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('streamstate dump', () => {
  it('prints every record as a JSON line with decoded key, namespace and value', async () => {
    const r = await cli(['dump', heapNative, '--operator', 'op-1']);
    expect(r.code).toBe(0);
    const recs = lines(r.stdout);
    const count = recs.filter((x) => x.state === 'count');
    expect(count).toHaveLength(60);
    expect(count.find((x) => x.key === 'key-7')).toMatchObject({ kind: 'value', namespace: '', value: 7 });
    const ev = recs.find((x) => x.state === 'events' && x.key === 'key-4' && x.namespace === 'w1');
    // list order is kept, not sorted
    expect(ev?.value).toEqual(['e4-c', 'e4-a', 'e4-b']);
    const attrs = recs.filter((x) => x.state === 'attrs' && x.key === 'key-3');
    expect(attrs.map((x) => [x.userKey, x.value])).toEqual([
      ['z0-3', { v: 30 }],
      ['z1-3', { v: 31 }],
      ['z2-3', { v: 32 }],
      ['z3-3', { v: 33 }],
    ]);
    expect(recs.filter((x) => x.state === 'timers')).toHaveLength(60);
    expect(recs.filter((x) => x.state === 'offsets').map((x) => x.value)).toEqual(['p0-a', 'p0-b', 'p1-a', 'p1-b']);
    expect(recs.filter((x) => x.state === 'rules')).toEqual([
      { state: 'rules', kind: 'broadcast', key: 'threshold', value: 42 },
      { state: 'rules', kind: 'broadcast', key: 'window', value: 2 },
    ]);
  });

  it('--state filters to one state', async () => {
    const r = await cli(['dump', heapNative, '--operator', 'op-1', '--state', 'total']);
    expect(r.code).toBe(0);
    const recs = lines(r.stdout);
    expect(recs).toHaveLength(60);
    expect(new Set(recs.map((x) => x.state))).toEqual(new Set(['total']));
    expect(recs.find((x) => x.key === 'key-9')?.value).toBe(10);
  });

  it('dumps LevelDB native savepoints (restored through LevelDB) with the same records', async () => {
    const a = await cli(['dump', levelNative, '--operator', 'op-1', '--state', 'attrs']);
    const b = await cli(['dump', heapNative, '--operator', 'op-1', '--state', 'attrs']);
    expect(a.code).toBe(0);
    const key = (x: Record<string, unknown>): string => JSON.stringify([x.key, x.userKey, x.value]);
    expect(lines(a.stdout).map(key).sort()).toEqual(lines(b.stdout).map(key).sort());
  });

  it('an unknown operator or state: exit 2 with the known names', async () => {
    const r = await cli(['dump', heapNative, '--operator', 'nope']);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toContain('operators: op-1');
    const s = await cli(['dump', heapNative, '--operator', 'op-1', '--state', 'nope']);
    expect(s.code).toBe(2);
    expect(oneLine(s.stderr)).toContain(
      'states: attrs, count, events, offsets, profile, rules, sources, timers, total',
    );
  });

  it('--operator is required (usage error, exit 2)', async () => {
    const r = await cli(['dump', heapNative]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("required option '--operator <id>' not specified");
  });
});

describe('streamstate list', () => {
  it("lists a job's completed checkpoints with ids, times and sizes", async () => {
    const r = await cli(['list', jobDir, '--json']);
    expect(r.code).toBe(0);
    const [job] = JSON.parse(r.stdout);
    expect(job.jobId).toBe('job-x');
    expect(job.checkpoints.map((c: { checkpointId: number }) => c.checkpointId)).toEqual([2, 3]);
    for (const c of job.checkpoints) {
      expect(c.size).toBeGreaterThan(0);
      expect(c.timestamp).toBeGreaterThan(0);
    }
    const text = await cli(['list', jobDir]);
    expect(text.stdout).toMatch(/job job-x: 2 completed checkpoints/);
    expect(text.stdout).toMatch(/\s+3\s+\d{4}-\d\d-\d\dT.*job-x\/chk-3/);
  });

  it('lists every job when given the storage root', async () => {
    const r = await cli(['list', ckRoot, '--json']);
    expect(r.code).toBe(0);
    const jobs = JSON.parse(r.stdout) as { jobId: string; checkpoints: { checkpointId: number }[] }[];
    expect(jobs.map((j) => j.jobId)).toEqual(['job-x', 'job-y']);
    expect(jobs[1].checkpoints.map((c) => c.checkpointId)).toEqual([2]);
  });

  it('a directory without checkpoints: exit 3', async () => {
    const empty = join(root, 'empty');
    await mkdir(empty, { recursive: true });
    const r = await cli(['list', empty]);
    expect(r.code).toBe(3);
    expect(oneLine(r.stderr)).toContain('holds no job checkpoint directories');
  });
});

describe('streamstate gc', () => {
  const HOUR = 3_600_000;
  /** Writes a file and dates it `ageMs` back (gc keeps files younger than --min-age, default 1 h). */
  async function aged(path: string, text: string, ageMs: number): Promise<void> {
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, text);
    const t = new Date(Date.now() - ageMs);
    await utimes(path, t, t);
  }

  it('--dry-run lists old unreferenced streamstate files and incomplete checkpoint directories; gc deletes exactly those', async () => {
    // A crashed checkpoint (no _metadata) and an orphaned shared file, both two hours old.
    await aged(join(jobDir, 'chk-9', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'), 'partial', 2 * HOUR);
    await aged(join(jobDir, 'shared', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'), 'nobody uses me', 2 * HOUR);
    // Kept: a young one (a checkpoint may still complete with it) and names streamstate never writes.
    await aged(join(jobDir, 'shared', '0123456789abcdef-000007.ldb'), 'just uploaded', 0);
    await aged(join(jobDir, 'shared', 'notes.txt'), 'the user wrote this', 2 * HOUR);
    await aged(join(jobDir, 'taskowned', 'keep'), 'never touched', 2 * HOUR);

    const dry = await cli(['gc', jobDir, '--dry-run', '--json']);
    expect(dry.code).toBe(0);
    const report = JSON.parse(dry.stdout);
    const files = report.jobs[0].files as { name: string; reason: string }[];
    expect(files.map((f) => [f.name, f.reason])).toEqual([
      ['job-x/chk-9/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'incomplete-checkpoint'],
      ['job-x/shared/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 'unreferenced-shared'],
    ]);
    expect((report.jobs[0].kept as { name: string; reason: string }[]).map((f) => [f.name, f.reason])).toEqual([
      ['job-x/shared/0123456789abcdef-000007.ldb', 'too-young'],
      ['job-x/shared/notes.txt', 'unknown-name'],
    ]);
    expect(await exists(join(jobDir, 'shared', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'))).toBe(true);

    const real = await cli(['gc', jobDir]);
    expect(real.code).toBe(0);
    expect(real.stdout).toContain('deleted 2 files');
    expect(real.stdout).toContain('kept 2 files (1 younger than 1h, 1 unknown-name)');
    expect(await exists(join(jobDir, 'shared', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'))).toBe(false);
    expect(await exists(join(jobDir, 'chk-9'))).toBe(false);
    expect(await exists(join(jobDir, 'shared', '0123456789abcdef-000007.ldb'))).toBe(true);
    expect(await exists(join(jobDir, 'shared', 'notes.txt'))).toBe(true);
    expect(await exists(join(jobDir, 'taskowned', 'keep'))).toBe(true);
    // The retained checkpoints are intact.
    for (const id of [2, 3]) expect((await cli(['verify', join(jobDir, `chk-${id}`)])).code).toBe(0);
    // --min-age 0: the young file goes too (the job is stopped here); the user's file stays.
    expect((await cli(['gc', jobDir, '--min-age', '0'])).stdout).toContain('deleted 1 file');
    expect(await exists(join(jobDir, 'shared', 'notes.txt'))).toBe(true);
    expect(
      JSON.parse((await cli(['gc', jobDir, '--dry-run', '--json', '--min-age', '0'])).stdout).jobs[0].files,
    ).toEqual([]);
  });

  it('keeps shared files when a _metadata cannot be read', async () => {
    const yDir = join(ckRoot, 'job-y');
    await mkdir(join(yDir, 'chk-7'), { recursive: true });
    await writeFile(join(yDir, 'chk-7', '_metadata'), 'garbage');
    await aged(join(yDir, 'shared', 'cccccccccccccccccccccccccccccccc'), 'x', 2 * HOUR);
    const before = (await readdir(join(yDir, 'shared'))).length;
    const r = await cli(['gc', yDir, '--json', '--min-age', '0']);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('warning');
    expect(JSON.parse(r.stdout).jobs[0].files).toEqual([]);
    expect((await readdir(join(yDir, 'shared'))).length).toBe(before);
    expect(await exists(join(yDir, 'shared', 'cccccccccccccccccccccccccccccccc'))).toBe(true);
  });

  it('--min-age takes durations; anything else is a usage error', async () => {
    expect((await cli(['gc', jobDir, '--dry-run', '--min-age', '90s'])).code).toBe(0);
    expect((await cli(['gc', jobDir, '--dry-run', '--min-age', '2h'])).code).toBe(0);
    for (const bad of ['10', '-1h', 'soon', '1w']) expect((await cli(['gc', jobDir, '--min-age', bad])).code).toBe(2);
  });
});
