import { cp, mkdir, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import type { KeyedStateBackend, OperatorStateBackend } from '../../src/backend/contract.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator } from '../../src/checkpoint/coordinator.js';
import { keyGroupForKey, keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { descriptors, MAX_PARALLELISM, OPERATOR, readJob, writeCheckpoints } from '../savepoint/support/job.js';
import { cli, tempDir } from './support.js';

/** gc refuses what is not a streamstate job, never walks into unrelated folders, and spares checkpoints in flight. */

let root: string;
let cleanup: () => Promise<void>;
const HOUR = 3_600_000;

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-cli-gc-'));
});
afterAll(async () => cleanup());

const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

/** Every file under `dir` (relative paths), sorted. */
async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)).split(sep).join('/'));
  }
  return out.sort();
}

/** Writes a file dated `ageMs` back. */
async function aged(path: string, text: string, ageMs: number): Promise<void> {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, text);
  const t = new Date(Date.now() - ageMs);
  await utimes(path, t, t);
}

async function ageTree(dir: string, ageMs: number): Promise<void> {
  const t = new Date(Date.now() - ageMs);
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true }))
    await utimes(join(e.parentPath, e.name), t, t);
  await utimes(dir, t, t);
}

/** A user's directory that merely has folders named like streamstate's: files two hours old, some with hex names. */
async function userDir(dir: string): Promise<void> {
  await aged(join(dir, 'shared', 'holiday.jpg'), 'photo', 2 * HOUR);
  await aged(join(dir, 'shared', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'), 'a hex-named file of the user', 2 * HOUR);
  await aged(join(dir, 'chk-1', 'report.pdf'), 'pdf', 2 * HOUR);
  await aged(join(dir, 'chk-1', '_metadata'), 'not a streamstate _metadata', 2 * HOUR);
}

describe('streamstate gc refuses what is not a streamstate job', () => {
  it('a plain user directory with shared/ and chk-1/ folders: nothing deleted, exit 3', async () => {
    const dir = join(root, 'user');
    await userDir(dir);
    const before = await tree(dir);
    for (const args of [[], ['--min-age', '0'], ['--dry-run']]) {
      const r = await cli(['gc', dir, ...args]);
      expect(r.code).toBe(3);
      expect(r.stderr).toContain('holds no streamstate job');
      expect(await tree(dir)).toEqual(before);
    }
  });

  it('a parent of a job and an unrelated folder: only the job is collected, the other folder is left alone', async () => {
    const parent = join(root, 'parent');
    const jobDir = await writeCheckpoints(leveldb({ workingDir: join(root, 'work-p') }), {
      root: parent,
      jobId: 'job-p',
      count: 2,
      numRetained: 1,
    });
    await aged(join(jobDir, 'shared', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'), 'orphan', 2 * HOUR);
    await userDir(join(parent, 'unrelated'));
    const unrelatedBefore = await tree(join(parent, 'unrelated'));
    const r = await cli(['gc', parent, '--json', '--min-age', '0']);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('unrelated is not a streamstate job');
    const report = JSON.parse(r.stdout);
    expect(report.skipped).toEqual(['unrelated']);
    expect(report.jobs.map((j: { jobId: string }) => j.jobId)).toEqual(['job-p']);
    expect(report.jobs[0].files.map((f: { name: string }) => f.name)).toEqual([
      'job-p/shared/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb',
    ]);
    expect(await exists(join(jobDir, 'shared', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'))).toBe(false);
    expect(await tree(join(parent, 'unrelated'))).toEqual(unrelatedBefore);
    expect((await cli(['verify', join(jobDir, 'chk-2')])).code).toBe(0);
  });
});

describe('streamstate gc during a checkpoint', () => {
  it('a checkpoint in flight (files written, no _metadata yet) loses nothing; it then completes and restores', async () => {
    const ckRoot = join(root, 'live');
    const backend = leveldb({ workingDir: join(root, 'work-live') });
    const storage = localCheckpointStorage(ckRoot, { inlineThreshold: 0 });
    const coordinator = new CheckpointCoordinator({
      jobId: 'job-live',
      storage,
      backendName: backend.name,
      numRetained: 1,
      operators: [{ operatorId: OPERATOR, parallelism: 2, maxParallelism: MAX_PARALLELISM }],
    });
    await coordinator.restore();
    const subtasks: { keyed: KeyedStateBackend<string>; operator: OperatorStateBackend }[] = [];
    const jobDir = join(ckRoot, 'job-live');
    try {
      for (let i = 0; i < 2; i++) {
        const info = { jobId: 'job-live', operatorId: OPERATOR, subtaskIndex: i, parallelism: 2 };
        const keyed = await backend.createKeyedStateBackend({
          ...info,
          maxParallelism: MAX_PARALLELISM,
          keyGroupRange: keyGroupRangeForSubtask(MAX_PARALLELISM, 2, i),
          keySerializer: stringSerializer,
        });
        subtasks.push({ keyed, operator: await backend.createOperatorStateBackend(info) });
      }
      const write = (round: number): void => {
        for (const s of subtasks) {
          const count = s.keyed.getState(descriptors.count);
          for (let k = 0; k < 200; k++) {
            const key = `key-${k}`;
            if (!s.keyed.keyGroupRange.contains(keyGroupForKey(key, stringSerializer, MAX_PARALLELISM))) continue;
            s.keyed.setCurrentKey(key);
            count.update(k * 10 + round);
          }
        }
      };
      const checkpoint = async (beforeAck: () => Promise<void>): Promise<number> => {
        const pending = coordinator.triggerCheckpoint();
        const acks = [];
        for (let i = 0; i < subtasks.length; i++) {
          const options = pending.snapshotOptions(OPERATOR, i);
          const k = await subtasks[i].keyed.snapshot(pending.checkpointId, options);
          const o = await subtasks[i].operator.snapshot(pending.checkpointId, options);
          acks.push({ keyed: [await k.done], operator: [await o.done] });
        }
        await beforeAck();
        for (const [i, ack] of acks.entries()) await coordinator.acknowledge(pending.checkpointId, OPERATOR, i, ack);
        const info = await pending.completion;
        for (const s of subtasks) await s.keyed.notifyCheckpointComplete(pending.checkpointId);
        return info.checkpointId;
      };
      write(1);
      await checkpoint(async () => undefined);
      write(2);
      let inFlight: string[] = [];
      const id = await checkpoint(async () => {
        // Uploaded, not yet acknowledged: files in chk-2/ and shared/ that no _metadata references.
        const before = await tree(jobDir);
        inFlight = before.filter((f) => f.startsWith('chk-2/'));
        expect(inFlight.length).toBeGreaterThan(0);
        expect(before).not.toContain('chk-2/_metadata');
        const r = await cli(['gc', jobDir]);
        expect(r.code).toBe(7); // refused: the job's lease is live
        expect(await tree(jobDir)).toEqual(before);
        // --min-age 0 does not get past a live lease.
        const bare = await cli(['gc', jobDir, '--dry-run', '--json', '--min-age', '0']);
        expect(bare.code).toBe(7);
        // A job without a lease (written before fencing existed): the age rule alone keeps the
        // in-flight files, which are exactly what gc would take without it.
        const copy = join(root, 'live-copy', 'job-live');
        await cp(jobDir, copy, { recursive: true });
        await rm(join(copy, '_lease'), { recursive: true, force: true });
        const copyBefore = await tree(copy);
        const ageOnly = await cli(['gc', copy, '--json']);
        expect(ageOnly.code).toBe(0);
        expect(await tree(copy)).toEqual(copyBefore);
        const keptNames = (JSON.parse(ageOnly.stdout).jobs[0].kept as { name: string; reason: string }[])
          .filter((k) => k.reason === 'too-young')
          .map((k) => k.name);
        expect(keptNames).toEqual(expect.arrayContaining(inFlight.map((f) => `job-live/${f}`)));
        const noAge = await cli(['gc', copy, '--dry-run', '--json', '--min-age', '0']);
        expect((JSON.parse(noAge.stdout).jobs[0].files as { name: string }[]).map((f) => f.name)).toEqual(
          expect.arrayContaining(inFlight.map((f) => `job-live/${f}`)),
        );
      });
      expect(id).toBe(2);
      expect(await tree(jobDir)).toEqual(expect.arrayContaining(inFlight));
    } finally {
      for (const s of subtasks) {
        await s.keyed.close();
        await s.operator.close();
      }
      await coordinator.shutdown('finish');
    }
    const restored = await readJob(leveldb({ workingDir: join(root, 'work-read') }), join(jobDir, 'chk-2'), {
      parallelism: 2,
    });
    expect(restored.keyed.filter((l) => l.startsWith('["count"'))).toHaveLength(200);
    expect(restored.keyed).toContain('["count","key-7","",72]');
    expect((await cli(['verify', join(jobDir, 'chk-2')])).code).toBe(0);
  });
});

describe('streamstate gc and the job lease', () => {
  it('while an instance of the job holds its lease, gc deletes nothing (exit 7); after a clean shutdown it collects', async () => {
    const ckRoot = join(root, 'leased');
    const backend = new HeapStateBackend({ name: 'filesystem' });
    const storage = localCheckpointStorage(ckRoot, { inlineThreshold: 0 });
    const coordinator = new CheckpointCoordinator({
      jobId: 'job-l',
      storage,
      backendName: backend.name,
      operators: [{ operatorId: OPERATOR, parallelism: 1, maxParallelism: MAX_PARALLELISM }],
    });
    await coordinator.restore();
    const keyed = await backend.createKeyedStateBackend({
      jobId: 'job-l',
      operatorId: OPERATOR,
      subtaskIndex: 0,
      parallelism: 1,
      maxParallelism: MAX_PARALLELISM,
      keyGroupRange: keyGroupRangeForSubtask(MAX_PARALLELISM, 1, 0),
      keySerializer: stringSerializer,
    });
    const jobDir = join(ckRoot, 'job-l');
    const orphan = join(jobDir, 'shared', 'dddddddddddddddddddddddddddddddd');
    try {
      keyed.setCurrentKey('k');
      keyed.getState(descriptors.count).update(1);
      const pending = coordinator.triggerCheckpoint();
      const task = await keyed.snapshot(pending.checkpointId, pending.snapshotOptions(OPERATOR, 0));
      await coordinator.acknowledge(pending.checkpointId, OPERATOR, 0, { keyed: [await task.done], operator: [] });
      await pending.completion;
      await aged(orphan, 'old and unreferenced', 2 * HOUR);
      const before = await tree(jobDir);
      const r = await cli(['gc', jobDir, '--min-age', '0']);
      expect(r.code).toBe(7);
      expect(r.stderr).toContain('job job-l');
      expect(r.stderr).toContain('may be running');
      expect(await tree(jobDir)).toEqual(before);
    } finally {
      await keyed.close();
      await coordinator.shutdown('finish');
    }
    const after = await cli(['gc', jobDir, '--min-age', '0']);
    expect(after.code).toBe(0);
    expect(after.stdout).toContain('deleted 1 file');
    expect(await exists(orphan)).toBe(false);
    expect((await cli(['verify', join(jobDir, 'chk-1')])).code).toBe(0);
  });
});

describe('streamstate gc removes leftovers of interrupted converts', () => {
  it('old hidden convert directories go, young ones and other hidden folders stay', async () => {
    const dir = join(root, 'savepoints');
    const old = join(dir, '.sp-1.streamstate-convert-0123456789ab');
    const oldScratch = join(dir, '.sp-1.streamstate-scratch-0123456789ab');
    const legacy = join(dir, '.sp-0.tmp-abcdef012345');
    const young = join(dir, '.sp-2.streamstate-convert-ba9876543210');
    const mine = join(dir, '.config');
    for (const d of [old, oldScratch, legacy, young, mine]) await aged(join(d, 'stage-0', 'f'), 'x'.repeat(100), 0);
    for (const d of [old, oldScratch, legacy, mine]) await ageTree(d, 2 * HOUR);
    const dry = await cli(['gc', dir, '--dry-run', '--json']);
    expect(dry.code).toBe(0);
    const { convertLeftovers } = JSON.parse(dry.stdout);
    expect(convertLeftovers.stale.map((l: { path: string }) => l.path)).toEqual([legacy, old, oldScratch]);
    expect(convertLeftovers.young.map((l: { path: string }) => l.path)).toEqual([young]);
    expect(await exists(old)).toBe(true);
    const r = await cli(['gc', dir]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('convert leftovers: deleted 3 directories');
    expect(await readdir(dir)).toEqual(expect.arrayContaining(['.config', '.sp-2.streamstate-convert-ba9876543210']));
    expect((await readdir(dir)).sort()).toEqual(['.config', '.sp-2.streamstate-convert-ba9876543210']);
  });
});
