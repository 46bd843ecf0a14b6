import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { memory } from '../../backends/memory/index.js';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CHECKPOINT_CHANNELS, type CheckpointEvent } from '../../src/checkpoint/checkpoint-stats.js';
import { ManualClock } from '../../src/checkpoint/scheduler-clock.js';
import {
  checkCounts,
  countingInput,
  countingJob,
  runPipeline,
  type CountOutput,
  type PipelineEvent,
} from '../../src/testing/index.js';
import { expectDocumentedError } from '../conformance/parity/error-classes.js';
import { localTree } from '../checkpoint/savepoint-anywhere-support.js';

/**
 * Stop-with-savepoint through the reference runtime (issue 14): a job stops with a savepoint in a
 * directory of its choice; a new job (another id, its own storage, another backend, another
 * parallelism) starts from it; the committed output of both together is exactly once.
 */
const input = countingInput({ records: 2_400, keys: 40, partitions: 4, seed: 11 });
let root: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'ss-stop-sp-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Per key, the committed counts are 1..m with no gap or duplicate (a prefix of the exactly-once output). */
function isCleanPrefix(committed: readonly CountOutput[]): boolean {
  const byKey = new Map<string, number[]>();
  for (const o of committed) byKey.set(o.key, [...(byKey.get(o.key) ?? []), o.count]);
  return [...byKey.values()].every((counts) => counts.sort((a, b) => a - b).every((c, i) => c === i + 1));
}

describe.each(['stop', 'cancel'] as const)('%s-with-savepoint through the reference runtime', (mode) => {
  it('ends the job at the savepoint barrier; a new job at another parallelism and backend continues exactly once', async () => {
    const target = join(root, 'savepoints', 'stop-1');
    const events: PipelineEvent[] = [];
    const first = await runPipeline(countingJob(input, { parallelism: 4, jobId: 'first' }), {
      backend: filesystem({ checkpointDir: join(root, 'first') }),
      checkpointEvery: 300,
      seed: 3,
      stopWithSavepoint: { afterRecords: 1_000, target, mode },
      onEvent: (e) => events.push(e),
    });
    expect(first.stopped?.mode).toBe(mode);
    expect(first.stopped?.savepoint.pointer).toBe(target);
    // Sources stop right after the savepoint barrier: nothing past it was read.
    expect(first.recordsEmitted).toBe(1_000);
    expect(isCleanPrefix(first.committed)).toBe(true);
    const savepointId = first.stopped!.savepoint.checkpointId;
    const commitsOfSavepoint = events.filter((e) => e.type === 'commit' && e.checkpointId === savepointId);
    if (mode === 'stop') {
      // The synchronous savepoint's completion notice commits everything up to the barrier.
      expect(first.committed.length).toBe(1_000);
      expect(commitsOfSavepoint.length).toBeGreaterThan(0);
    } else {
      // Cancelled: the last epoch stays pre-committed in the savepoint, for the next job to commit.
      expect(first.committed.length).toBeLessThan(1_000);
      expect(commitsOfSavepoint).toEqual([]);
    }
    const files = await localTree(target);

    const second = await runPipeline(countingJob(input, { parallelism: 3, jobId: 'second' }), {
      backend: leveldb({ workingDir: join(root, 'work') }),
      checkpointStorage: localCheckpointStorage(join(root, 'second')),
      checkpointEvery: 250,
      seed: 5,
      output: first.output,
      restoreFrom: target,
      // A crash before the new job's first checkpoint: it restores the savepoint again.
      crashAt: 100,
      recoverWithParallelism: 2,
    });
    expect(second.restoredFrom.map((r) => r.pointer)).toEqual([target, target]);
    expect(second.restoredFrom[0].location).toBe(target);
    expect(second.checkpointsCompleted[0].checkpointId).toBeGreaterThan(savepointId);
    const check = checkCounts(second.committed, input);
    expect(check.problems).toEqual([]);
    expect(check.ok).toBe(true);
    // No-claim: the new job never changed the savepoint.
    expect(await localTree(target)).toEqual(files);
  });
});

describe('savepoints in the reference runtime', () => {
  it('an ordinary savepoint goes to the default location, gets no completion notice (nothing committed for it), and the job runs on', async () => {
    const dir = join(root, 'default-savepoints');
    const events: PipelineEvent[] = [];
    const result = await runPipeline(countingJob(input, { parallelism: 2 }), {
      backend: memory(),
      checkpointEvery: 500,
      savepoints: [{ afterRecords: 700 }],
      savepointLocation: { dir },
      onEvent: (e) => events.push(e),
    });
    expect(result.savepoints).toHaveLength(1);
    expect(result.savepoints[0].pointer.startsWith(`${dir}/savepoint-`)).toBe(true);
    const completedAt = events.findIndex((e) => e.type === 'savepoint-completed');
    const nextCheckpoint = events.findIndex((e, i) => i > completedAt && e.type === 'checkpoint-completed');
    expect(completedAt).toBeGreaterThan(-1);
    expect(events.slice(completedAt, nextCheckpoint).filter((e) => e.type === 'commit')).toEqual([]);
    expect(checkCounts(result.committed, input).ok).toBe(true);
  });

  it('a stop whose savepoint fails (target not empty) leaves the job running: STOP_WITH_SAVEPOINT_FAILED, exactly-once output, target untouched', async () => {
    const target = join(root, 'taken');
    await mkdir(target, { recursive: true });
    await writeFile(join(target, 'keep.txt'), 'mine');
    const result = await runPipeline(countingJob(input, { parallelism: 2 }), {
      backend: filesystem({ checkpointDir: join(root, 'chk') }),
      checkpointEvery: 400,
      stopWithSavepoint: { afterRecords: 900, target },
    });
    expect(result.stopped).toBeNull();
    expect(result.savepointFailures).toHaveLength(1);
    const failure = expectDocumentedError(result.savepointFailures[0], 'STOP_WITH_SAVEPOINT_FAILED');
    expectDocumentedError(failure.cause, 'SAVEPOINT_TARGET_NOT_EMPTY');
    expect(result.recordsEmitted).toBe(2_400);
    expect(checkCounts(result.committed, input).ok).toBe(true);
    expect([...(await localTree(target)).keys()]).toEqual(['keep.txt']);
  });
});

describe('stop-with-savepoint with scheduled checkpoints (RunOptions.checkpointing)', () => {
  /** The job's checkpoint events (diagnostics_channel), each with the virtual time it happened at. */
  async function heard<T>(jobId: string, clock: ManualClock, run: () => Promise<T>) {
    const events: Array<{ e: CheckpointEvent; at: number }> = [];
    const listener = (m: unknown): void => {
      if ((m as CheckpointEvent).jobId === jobId) events.push({ e: m as CheckpointEvent, at: clock.now() });
    };
    const names = Object.values(CHECKPOINT_CHANNELS);
    for (const n of names) subscribe(n, listener);
    try {
      return { result: await run(), events };
    } finally {
      for (const n of names) unsubscribe(n, listener);
    }
  }

  it.each(['stop', 'cancel'] as const)(
    '%s: no checkpoint is triggered once the stop began; the output up to the savepoint is exactly once',
    async (mode) => {
      const clock = new ManualClock(0);
      const jobId = `sched-stop-${mode}`;
      const target = join(root, `sp-${mode}`);
      const { result, events } = await heard(jobId, clock, () =>
        runPipeline(countingJob(input, { parallelism: 3, jobId }), {
          backend: filesystem({ checkpointDir: join(root, 'chk') }),
          // Far more often than a savepoint takes: without the suspension, checkpoints would be triggered behind it.
          checkpointing: { interval: 5, maxConcurrent: 3, clock },
          stopWithSavepoint: { afterRecords: 1_100, target, mode },
          seed: 4,
        }),
      );
      expect(result.stopped?.mode).toBe(mode);
      const savepointAt = events.findIndex(({ e }) => e.type === 'triggered' && e.checkpoint.kind === 'savepoint');
      expect(savepointAt).toBeGreaterThan(0);
      expect(events.slice(0, savepointAt).some(({ e }) => e.type === 'triggered')).toBe(true);
      expect(events.slice(savepointAt + 1).filter(({ e }) => e.type === 'triggered')).toEqual([]);
      // Time went on while the savepoint was pending: periodic ticks were due and did not trigger.
      const done = events.find(({ e }) => e.type === 'completed' && e.checkpoint.kind === 'savepoint');
      expect(done!.at - events[savepointAt].at).toBeGreaterThan(5);
      expect(result.recordsEmitted).toBe(1_100);
      expect(isCleanPrefix(result.committed)).toBe(true);
    },
  );
});
