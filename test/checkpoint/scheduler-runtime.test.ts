import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import { memory } from '../../backends/memory/index.js';
import type { KeyedStateBackend, StateBackend } from '../../src/backend/contract.js';
import { presetStorage } from '../../src/backend/preset.js';
import {
  CHECKPOINT_CHANNELS,
  type CheckpointEvent,
  type CheckpointStats,
} from '../../src/checkpoint/checkpoint-stats.js';
import { ManualClock } from '../../src/checkpoint/scheduler-clock.js';
import { SnapshotError } from '../../src/errors.js';
import { checkCounts, countingInput, countingJob, runPipeline, type PipelineEvent } from '../../src/testing/index.js';
import { expectRejectsCode } from '../support/errors.js';

/**
 * The CheckpointScheduler through the reference runtime (runPipeline's `checkpointing`), on the
 * runner's virtual clock: every option holds in a real pipeline with real backends, and the
 * statistics the runtime reports are complete.
 */
const input = countingInput({ records: 1_200, keys: 30, partitions: 3, seed: 7 });
/** About 4,500 scheduling steps: room for several checkpoints even when each asynchronous part takes ~900. */
const longInput = countingInput({ records: 6_000, keys: 30, partitions: 3, seed: 7 });
let root: string;
let jobNo = 0;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'ss-sched-rt-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** What a keyed subtask's snapshot of a checkpoint does: go ahead, fail in its asynchronous part, or finish only when `hold` resolves. */
type SnapshotPlan = (checkpointId: number, subtaskIndex: number) => 'fail' | { hold: Promise<void> } | undefined;

/** `inner` with keyed snapshots as `plan` says. */
function planned(inner: StateBackend, plan: SnapshotPlan): StateBackend & { checkpointStorage: unknown } {
  return {
    checkpointStorage: presetStorage(inner),
    name: inner.name,
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
              const what = plan(args[0], params.subtaskIndex);
              if (what === undefined) return task;
              if (what === 'fail') {
                task.done.catch(() => undefined);
                const done = Promise.reject(new SnapshotError('SNAPSHOT_FAILED', `injected failure of ${args[0]}`));
                done.catch(() => undefined);
                return { checkpointId: task.checkpointId, done };
              }
              return { checkpointId: task.checkpointId, done: what.hold.then(() => task.done) };
            };
          }
          const v = Reflect.get(target, prop, receiver) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
    },
  };
}

/** Every checkpoint event of job `jobId` heard on diagnostics_channel while `run` runs, into `events`; `at` also records the virtual time of each. */
async function heard<T>(
  jobId: string,
  run: () => Promise<T>,
  events: CheckpointEvent[] = [],
  at?: { clock: ManualClock; times: number[] },
): Promise<{ result: T; events: CheckpointEvent[] }> {
  const listener = (m: unknown): void => {
    const e = m as CheckpointEvent;
    if (e.jobId !== jobId) return;
    events.push(e);
    at?.times.push(at.clock.now());
  };
  const names = Object.values(CHECKPOINT_CHANNELS);
  for (const n of names) subscribe(n, listener);
  try {
    return { result: await run(), events };
  } finally {
    for (const n of names) unsubscribe(n, listener);
  }
}

const ended = (events: CheckpointEvent[], type: 'completed' | 'failed'): CheckpointStats[] =>
  events.flatMap((e) => (e.type === type && e.checkpoint.kind === 'checkpoint' ? [e.checkpoint] : []));

describe('scheduled checkpoints through runPipeline', () => {
  it('interval: checkpoints come on the virtual clock, and the output is exactly once', async () => {
    const jobId = `sched-${++jobNo}`;
    const clock = new ManualClock(0);
    const at = { clock, times: [] as number[] };
    const { result, events } = await heard(
      jobId,
      () =>
        runPipeline(countingJob(input, { parallelism: 2, jobId }), {
          backend: memory(),
          checkpointing: { interval: 40, clock },
          seed: 3,
        }),
      [],
      at,
    );
    // Virtual times of the triggers (a checkpoint's triggerTimestamp is wall time).
    const triggers = events.flatMap((e, i) => (e.type === 'triggered' ? [at.times[i]] : []));
    // How many periodic checkpoints fit depends on how many steps each one's asynchronous part
    // takes (real time: 24 to 880 steps were seen), so only their timing on the virtual clock is
    // asserted: the first after the initial delay, each next one at least an interval later
    // (maxConcurrent 1 queues it while one is pending), then the final one at the end of the input.
    expect(triggers.length).toBeGreaterThanOrEqual(2);
    expect(triggers[0]).toBe(40);
    const periodic = triggers.slice(0, -1);
    for (let i = 1; i < periodic.length; i++) expect(periodic[i] - periodic[i - 1]).toBeGreaterThanOrEqual(40);
    expect(clock.now()).toBeGreaterThanOrEqual(triggers[triggers.length - 1]);
    expect(ended(events, 'failed')).toEqual([]);
    expect(result.checkpointsCompleted.length).toBe(triggers.length);
    expect(checkCounts(result.committed, input).ok).toBe(true);
  });

  it('timeout: a checkpoint a subtask never finishes is aborted with TIMEOUT, never becomes latest and leaves no files', async () => {
    const jobId = `sched-${++jobNo}`;
    const checkpointDir = join(root, 'chk');
    let release: () => void = () => undefined;
    const hold = new Promise<void>((resolve) => {
      release = resolve;
    });
    const pipelineEvents: PipelineEvent[] = [];
    const { result, events } = await heard(jobId, () =>
      runPipeline(countingJob(input, { parallelism: 2, jobId }), {
        // Keyed subtask 1 finishes checkpoint 2 only after it was aborted (a late acknowledgement).
        backend: planned(filesystem({ checkpointDir }), (id, i) => (id === 2 && i === 1 ? { hold } : undefined)),
        // Another checkpoint may time out too on a very slow machine (its files go to a real disk; while
        // the runner only waits, a virtual ms is a real one): tolerated, and 2 s leave the final one room.
        checkpointing: { interval: 30, timeout: 2_000, tolerableFailures: 1_000 },
        numRetainedCheckpoints: 100,
        seed: 5,
        onEvent: (e) => {
          pipelineEvents.push(e);
          if (e.type === 'checkpoint-aborted' && e.checkpointId === 2) release();
        },
      }),
    );
    const failed = ended(events, 'failed');
    expect(failed.map((c) => c.checkpointId)).toContain(2);
    for (const c of failed) expect(c.failureReason).toBe('TIMEOUT');
    expect(pipelineEvents).toContainEqual(expect.objectContaining({ type: 'checkpoint-aborted', checkpointId: 2 }));
    const completed = result.checkpointsCompleted.map((c) => c.checkpointId);
    expect(completed).not.toContain(2);
    expect(completed.some((id) => id > 2)).toBe(true);
    // Every completed checkpoint is on disk, the timed-out one left nothing behind.
    const entries = await readdir(join(checkpointDir, jobId));
    for (const c of failed) expect(entries).not.toContain(`chk-${c.checkpointId}`);
    for (const id of completed) expect(entries).toContain(`chk-${id}`);
    expect(checkCounts(result.committed, input).ok).toBe(true);
  });

  it('maxConcurrent holds while a slow subtask keeps checkpoints pending (requests queue instead)', async () => {
    const jobId = `sched-${++jobNo}`;
    const clock = new ManualClock(0);
    // Keyed subtask 0 finishes each snapshot 120 virtual ms after taking it: several intervals.
    const slow = (): { hold: Promise<void> } => ({
      hold: new Promise<void>((resolve) => void clock.setTimer(120, resolve)),
    });
    let pending = 0;
    let maxPending = 0;
    const { result, events } = await heard(jobId, () =>
      runPipeline(countingJob(input, { parallelism: 2, jobId }), {
        backend: planned(memory(), (_id, i) => (i === 0 ? slow() : undefined)),
        checkpointing: { interval: 20, maxConcurrent: 2, clock },
        seed: 9,
      }),
    );
    for (const e of events) {
      if (e.type === 'triggered' && e.checkpoint.kind === 'checkpoint') maxPending = Math.max(maxPending, ++pending);
      if ((e.type === 'completed' || e.type === 'failed') && e.checkpoint.kind === 'checkpoint') pending--;
    }
    expect(maxPending).toBe(2);
    expect(pending).toBe(0);
    // A trigger every 20 ms would have been far more: the slow subtask held the rest back.
    const triggered = events.filter((e) => e.type === 'triggered').length;
    expect(triggered).toBeLessThan(clock.now() / 20);
    // With two in flight, a later one may complete first and subsume the earlier: nothing else fails.
    expect(ended(events, 'failed').filter((c) => c.failureReason !== 'SUBSUMED')).toEqual([]);
    expect(checkCounts(result.committed, input).ok).toBe(true);
  });

  it('minPause: no periodic checkpoint starts sooner than minPause after the previous one completed', async () => {
    const jobId = `sched-${++jobNo}`;
    const clock = new ManualClock(0);
    const times: number[] = [];
    const { result, events } = await heard(
      jobId,
      () =>
        runPipeline(countingJob(longInput, { parallelism: 2, jobId }), {
          backend: memory(),
          checkpointing: { interval: 10, minPause: 60, clock },
          seed: 2,
        }),
      [],
      { clock, times },
    );
    // Virtual times of each trigger and of the completion before it.
    const gaps: number[] = [];
    let lastCompletion: number | undefined;
    const triggers = events.flatMap((e, i) => (e.type === 'triggered' ? [i] : []));
    for (const [i, e] of events.entries()) {
      if (e.type === 'completed') lastCompletion = times[i];
      // The last trigger may be the final checkpoint at the end of the input: a user request, which skips minPause.
      if (e.type === 'triggered' && i !== triggers.at(-1) && lastCompletion !== undefined)
        gaps.push(times[i] - lastCompletion);
    }
    // How many fit depends on how many steps each asynchronous part takes (real time; see 'interval'):
    // the long input leaves room for several, and every one is checked.
    expect(gaps.length).toBeGreaterThanOrEqual(1);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(60);
    // With interval 10 alone there would be a trigger every 10 virtual ms; the pause spaces them out.
    // (No exact gap is asserted: while the runner waits on real I/O, virtual time moves with real time.)
    expect(triggers.length).toBeLessThanOrEqual(clock.now() / 60 + 2);
    expect(checkCounts(result.committed, longInput).ok).toBe(true);
  });
});

describe('tolerableFailures through runPipeline', () => {
  const failFirst =
    (n: number): SnapshotPlan =>
    (id, i) =>
      id <= n && i === 0 ? 'fail' : undefined;

  it('N failed checkpoints in a row are tolerated: the job completes without a restart', async () => {
    const jobId = `sched-${++jobNo}`;
    const { result, events } = await heard(jobId, () =>
      runPipeline(countingJob(input, { parallelism: 2, jobId }), {
        backend: planned(memory(), failFirst(2)),
        checkpointing: { interval: 25, tolerableFailures: 2 },
        seed: 4,
      }),
    );
    expect(ended(events, 'failed').map((c) => [c.checkpointId, c.failureReason])).toEqual([
      [1, 'DECLINED'],
      [2, 'DECLINED'],
    ]);
    expect(events.some((e) => e.type === 'job-failed')).toBe(false);
    expect(result.crashes).toBe(0);
    expect(checkCounts(result.committed, input).ok).toBe(true);
  });

  it('N+1 failed in a row fail the job (TOLERABLE_FAILURES_EXCEEDED); with no restarts left the run rejects with it', async () => {
    const jobId = `sched-${++jobNo}`;
    const events: CheckpointEvent[] = [];
    const err = await expectRejectsCode(
      heard(
        jobId,
        () =>
          runPipeline(countingJob(input, { parallelism: 2, jobId }), {
            backend: planned(memory(), failFirst(3)),
            checkpointing: { interval: 25, tolerableFailures: 2 },
            maxRestarts: 0,
            seed: 4,
          }),
        events,
      ),
      'TOLERABLE_FAILURES_EXCEEDED',
    );
    expect(err.message).toMatch(/3 consecutive checkpoints failed, more than tolerableFailures = 2/);
    expect(ended(events, 'failed').map((c) => [c.checkpointId, c.failureReason])).toEqual([
      [1, 'DECLINED'],
      [2, 'DECLINED'],
      [3, 'DECLINED'],
    ]);
    const jobFailed = events.filter((e) => e.type === 'job-failed');
    expect(jobFailed).toHaveLength(1);
    expect(jobFailed[0]).toMatchObject({ consecutiveFailures: 3 });
  });

  it('the failed job restarts from its latest checkpoint like a crash and finishes exactly once', async () => {
    const jobId = `sched-${++jobNo}`;
    const pipelineEvents: PipelineEvent[] = [];
    const failedOnce = new Set<number>();
    const { result, events } = await heard(jobId, () =>
      runPipeline(countingJob(input, { parallelism: 2, jobId }), {
        // Checkpoint 1 completes; 2 and 3 fail (tolerableFailures 1): the job fails at 3. The
        // restarted job reuses ids 2 and 3 (it restores checkpoint 1): they do not fail again.
        backend: planned(memory(), (id, i) =>
          id >= 2 && id <= 3 && i === 1 && !failedOnce.has(id) && failedOnce.add(id) ? 'fail' : undefined,
        ),
        checkpointing: { interval: 25, tolerableFailures: 1 },
        seed: 6,
        onEvent: (e) => pipelineEvents.push(e),
      }),
    );
    expect(events.filter((e) => e.type === 'job-failed')).toHaveLength(1);
    expect(result.crashes).toBe(1);
    expect(pipelineEvents).toContainEqual(
      expect.objectContaining({ type: 'crash', reason: expect.stringMatching(/tolerableFailures = 1/) }),
    );
    expect(result.restoredFrom[0]?.checkpointId).toBe(1);
    expect(checkCounts(result.committed, input).ok).toBe(true);
  });
});

describe('options through runPipeline', () => {
  it('bad scheduling options are refused before anything runs', async () => {
    const job = countingJob(input, { parallelism: 2 });
    await expectRejectsCode(
      runPipeline(job, { backend: memory(), checkpointing: { interval: 10, maxConcurrent: 0 } }),
      'INVALID_CHECKPOINT_OPTION',
    );
    await expectRejectsCode(
      runPipeline(job, { backend: memory(), checkpointing: { interval: 10 }, checkpointEvery: 5 }),
      'INVALID_ARGUMENT',
    );
    await expectRejectsCode(runPipeline(job, { backend: memory() }), 'INVALID_ARGUMENT');
  });
});
