import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import type { KeyedStateBackend, StateBackend } from '../../src/backend/contract.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import { SnapshotError } from '../../src/errors.js';
import {
  CommittedOutput,
  checkCounts,
  countingInput,
  countingJob,
  runPipeline,
  type CountOutput,
  type PipelineEvent,
} from '../../src/testing/index.js';
import { DEFAULT_DEMO_OPTIONS, parseDemoArgs, runDemo } from '../../examples/demo.js';

const input = countingInput({ records: 800, keys: 25, partitions: 3, seed: 4 });

/** A memory backend whose keyed snapshots of the listed checkpoints fail in their asynchronous part. */
function failingSnapshots(
  failIds: readonly number[],
  aborted: number[],
): StateBackend & { readonly checkpointStorage: CheckpointStorage } {
  const inner = memory();
  return {
    name: inner.name,
    checkpointStorage: inner.checkpointStorage!,
    supportsSavepointFormat: (f) => inner.supportsSavepointFormat(f),
    createOperatorStateBackend: (p) => inner.createOperatorStateBackend(p),
    async createKeyedStateBackend<K>(
      params: Parameters<StateBackend['createKeyedStateBackend']>[0],
    ): Promise<KeyedStateBackend<K>> {
      const kb = (await inner.createKeyedStateBackend(params)) as KeyedStateBackend<K>;
      return new Proxy(kb, {
        get(target, prop, receiver) {
          if (prop === 'snapshot') {
            return async (...args: Parameters<KeyedStateBackend<K>['snapshot']>) => {
              const task = await target.snapshot(...args);
              if (!failIds.includes(args[0])) return task;
              task.done.catch(() => undefined);
              const done = Promise.reject(
                new SnapshotError('SNAPSHOT_FAILED', `injected failure of checkpoint ${args[0]}`),
              );
              done.catch(() => undefined);
              return { checkpointId: task.checkpointId, done };
            };
          }
          if (prop === 'notifyCheckpointAborted') {
            return async (id: number) => {
              aborted.push(id);
              return target.notifyCheckpointAborted(id);
            };
          }
          const v = Reflect.get(target, prop, receiver) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
    },
  };
}

describe('runPipeline', () => {
  it('rejects bad jobs and options with INVALID_ARGUMENT', async () => {
    const job = countingJob(input, { parallelism: 2 });
    const bad = { code: 'INVALID_ARGUMENT' };
    await expect(runPipeline({ ...job, input: [] }, { backend: memory(), checkpointEvery: 10 })).rejects.toMatchObject(
      bad,
    );
    await expect(runPipeline(job, { backend: memory(), checkpointEvery: 0 })).rejects.toMatchObject(bad);
    await expect(
      runPipeline({ ...job, parallelism: 0 }, { backend: memory(), checkpointEvery: 10 }),
    ).rejects.toMatchObject(bad);
    const m = memory();
    const bare: StateBackend = {
      name: 'bare',
      supportsSavepointFormat: (f) => m.supportsSavepointFormat(f),
      createOperatorStateBackend: (p) => m.createOperatorStateBackend(p),
      createKeyedStateBackend: (p) => m.createKeyedStateBackend(p),
    };
    await expect(runPipeline(job, { backend: bare, checkpointEvery: 10 })).rejects.toThrow(
      /brings no checkpoint storage; pass options.checkpointStorage/,
    );
    await expect(
      runPipeline(job, { backend: bare, checkpointStorage: m.checkpointStorage!, checkpointEvery: 100 }),
    ).resolves.toMatchObject({ crashes: 0 });
    await expect(
      runPipeline({ ...job, parallelism: 200 }, { backend: memory(), checkpointEvery: 10 }),
    ).rejects.toMatchObject({ code: 'PARALLELISM_INVALID' });
  });

  it('gives up after maxRestarts crashes', async () => {
    const job = countingJob(input, { parallelism: 2 });
    await expect(
      runPipeline(job, {
        backend: memory(),
        checkpointEvery: 50,
        crashAt: (e) => e.type === 'record' && e.recordsProcessed % 100 === 0,
        maxRestarts: 3,
      }),
    ).rejects.toThrow(/crashed 4 times/);
  });

  it('fails the run on an error that is not an injected crash', async () => {
    const job = countingJob(input, { parallelism: 2 });
    let n = 0;
    const failing = {
      ...job,
      process: (r: (typeof input)[0][0], ctx: Parameters<typeof job.process>[1]) => {
        if (++n === 300) throw new TypeError('user code bug');
        job.process(r, ctx);
      },
    };
    await expect(runPipeline(failing, { backend: memory(), checkpointEvery: 50 })).rejects.toThrow('user code bug');
  });

  it('aborts a checkpoint whose snapshot fails, notifies the backends and carries on exactly once', async () => {
    const notified: number[] = [];
    const events: PipelineEvent[] = [];
    const result = await runPipeline(countingJob(input, { parallelism: 2 }), {
      backend: failingSnapshots([2, 3], notified),
      checkpointEvery: 100,
      crashAt: 500,
      onEvent: (e) => events.push(e),
    });
    expect(result.checkpointsAborted).toEqual(expect.arrayContaining([2, 3]));
    expect(result.checkpointsCompleted.map((c) => c.checkpointId)).not.toContain(2);
    expect(notified).toEqual(expect.arrayContaining([2, 3]));
    expect(
      events.some((e) => e.type === 'checkpoint-aborted' && e.checkpointId === 2 && /injected failure/.test(e.reason)),
    ).toBe(true);
    // The sink's epochs 2 and 3 were committed with a later checkpoint.
    expect(checkCounts(result.committed, input).ok).toBe(true);
  });

  it('fails when the final checkpoint keeps failing (the last epoch would never commit)', async () => {
    const ids = Array.from({ length: 40 }, (_, i) => i + 1);
    await expect(
      runPipeline(countingJob(input, { parallelism: 2 }), { backend: failingSnapshots(ids, []), checkpointEvery: 100 }),
    ).rejects.toMatchObject({
      code: 'SNAPSHOT_FAILED',
    });
  });

  it('resumes a job from its latest checkpoint in a new run (resume: true)', async () => {
    const backend = memory();
    const output = new CommittedOutput<CountOutput>();
    const job = countingJob(input, { parallelism: 3, jobId: 'resumable' });
    await expect(
      runPipeline(job, { backend, output, checkpointEvery: 60, crashAt: 450, maxRestarts: 0 }),
    ).rejects.toThrow(/crashed 1 times/);
    const partial = output.records().length;
    expect(partial).toBeGreaterThan(0);
    expect(partial).toBeLessThan(800);
    // maxParallelism cannot change across a restore: refused before anything is opened or committed.
    await expect(
      runPipeline(countingJob(input, { parallelism: 2, jobId: 'resumable', maxParallelism: 64 }), {
        backend,
        output,
        checkpointEvery: 60,
        resume: true,
      }),
    ).rejects.toMatchObject({ code: 'MAX_PARALLELISM_MISMATCH' });
    expect(output.records().length).toBe(partial);
    const resumed = await runPipeline(countingJob(input, { parallelism: 2, jobId: 'resumable' }), {
      backend,
      output,
      checkpointEvery: 60,
      resume: true,
    });
    expect(resumed.restoredFrom).toHaveLength(1);
    expect(resumed.restoredFrom[0].checkpointId).not.toBeNull();
    expect(resumed.restoredFrom[0].attempt).toBe(0);
    expect(checkCounts(output.records(), input)).toMatchObject({ ok: true, problems: [] });
  });

  for (const sinkParallelism of [1, 2]) {
    it(`runs a sink of another parallelism (${sinkParallelism}, round-robin edges) exactly once across a rescale`, async () => {
      const result = await runPipeline(
        { ...countingJob(input, { parallelism: 3 }), sinkParallelism },
        { backend: memory(), checkpointEvery: 70, seed: 8, crashAt: [333, 700], recoverWithParallelism: (n) => n + 1 },
      );
      expect(result.crashes).toBe(2);
      expect(checkCounts(result.committed, input)).toMatchObject({ ok: true, problems: [] });
    });
  }

  it('restarts from scratch when no checkpoint completed before the crash', async () => {
    const result = await runPipeline(countingJob(input, { parallelism: 2 }), {
      backend: memory(),
      checkpointEvery: 10_000,
      crashAt: 100,
    });
    expect(result.restoredFrom).toEqual([expect.objectContaining({ checkpointId: null, pointer: null })]);
    expect(result.recordsProcessed).toBe(99 + 800); // the 100th crashed before it was processed
    expect(checkCounts(result.committed, input).ok).toBe(true);
  });
});

describe('the demo', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  it('passes on the filesystem backend: crash, recovery at another parallelism, counts equal the run without failure', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'streamstate-demo-'));
    dirs.push(dir);
    const report = await runDemo({
      ...DEFAULT_DEMO_OPTIONS,
      records: 20_000,
      keys: 200,
      checkpointEvery: 1_000,
      checkpointDir: dir,
    });
    expect(report.pass).toBe(true);
    expect(report.crashed.crashes).toBe(1);
    expect(report.crashed.restoredFrom[0]).toMatchObject({ parallelism: 3 });
    expect(report.crashed.restoredFrom[0].location).toContain(dir);
    expect(report.lines.join('\n')).toMatch(/result: PASS/);
    expect(report.lines.join('\n')).toMatch(/restored from checkpoint \d+/);
  });

  it('parses its flags and rejects bad ones', () => {
    expect(parseDemoArgs([])).toEqual(DEFAULT_DEMO_OPTIONS);
    expect(
      parseDemoArgs(['--backend', 'memory', '--records', '5_000', '--seed', '9', '--crash-at', '10']),
    ).toMatchObject({
      backend: 'memory',
      records: 5000,
      seed: 9,
      crashAt: 10,
    });
    expect(() => parseDemoArgs(['--backend', 'rocksdb'])).toThrow(/memory or filesystem/);
    expect(() => parseDemoArgs(['--records', 'many'])).toThrow(/--records must be an integer/);
    expect(() => parseDemoArgs(['--nope'])).toThrow();
  });
});
