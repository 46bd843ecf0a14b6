import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import type { CheckpointEvent } from '../../src/checkpoint/checkpoint-stats.js';
import { CheckpointCoordinator, type PendingCheckpoint } from '../../src/checkpoint/coordinator.js';
import { TolerableFailuresExceededError } from '../../src/checkpoint/failure-policy.js';
import { ManualClock } from '../../src/checkpoint/scheduler-clock.js';
import {
  InvalidCheckpointOptionError,
  resolveSchedulerOptions,
  type CheckpointSchedulerOptions,
} from '../../src/checkpoint/scheduler-options.js';
import { CheckpointScheduler, type TriggerDecline } from '../../src/checkpoint/scheduler.js';
import { stopWithSavepoint, type StopWithSavepointRuntime } from '../../src/checkpoint/stop-with-savepoint.js';
import type { StreamStateError } from '../../src/errors.js';
import { expectRejectsCode } from '../support/errors.js';
import { expectedJobFiles, FakeIncrementalSubtask, jobFiles, tempStorage } from './coordinator-fixture.js';

const JOB = 'job-s';
let storage: BlobCheckpointStorage;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ storage, cleanup } = await tempStorage());
});
afterEach(async () => {
  await cleanup();
});

interface Harness {
  clock: ManualClock;
  coord: CheckpointCoordinator;
  scheduler: CheckpointScheduler;
  tasks: FakeIncrementalSubtask[];
  triggered: PendingCheckpoint[];
  failures: StreamStateError[];
  aborted: Array<[number, string]>;
  events: CheckpointEvent[];
  /** Every subtask snapshots and acknowledges `p`. */
  ackAll(p: PendingCheckpoint): Promise<void>;
  /** Time passes; then everything the scheduler started settles. */
  advance(ms: number): Promise<void>;
  /** `times` steps of `step` ms, each settled (timers firing within one synchronous advance see no async outcome in between). */
  steps(times: number, step: number): Promise<void>;
}

async function harness(
  opts: CheckpointSchedulerOptions,
  answer: (p: PendingCheckpoint) => void | TriggerDecline = () => undefined,
): Promise<Harness> {
  const clock = new ManualClock(1_000_000);
  const coord = new CheckpointCoordinator({
    jobId: JOB,
    storage,
    backendName: 'fake',
    operators: [{ operatorId: 'op', parallelism: 2, maxParallelism: 128 }],
    clock: () => clock.now(),
  });
  await coord.restore();
  const h: Harness = {
    clock,
    coord,
    scheduler: undefined as unknown as CheckpointScheduler,
    tasks: [new FakeIncrementalSubtask('op', 0, 2), new FakeIncrementalSubtask('op', 1, 2)],
    triggered: [],
    failures: [],
    aborted: [],
    events: [],
    async ackAll(p) {
      for (const t of h.tasks)
        await coord.acknowledge(p.checkpointId, t.operatorId, t.subtaskIndex, await t.snapshot(p));
      await h.scheduler.settled();
    },
    async advance(ms) {
      clock.advance(ms);
      await h.scheduler.settled();
    },
    async steps(times, step) {
      for (let i = 0; i < times; i++) await h.advance(step);
    },
  };
  coord.addCheckpointListener((e) => h.events.push(e));
  h.scheduler = new CheckpointScheduler(
    coord,
    {
      triggerCheckpoint: (p) => {
        h.triggered.push(p);
        return answer(p);
      },
      failJob: (err) => void h.failures.push(err),
      checkpointAborted: (id, reason) => void h.aborted.push([id, reason]),
    },
    { clock, ...opts },
  );
  h.scheduler.start();
  return h;
}

describe('scheduler options', () => {
  it("defaults are Flink's", () => {
    const o = resolveSchedulerOptions({});
    expect({
      interval: o.interval,
      timeout: o.timeout,
      maxConcurrent: o.maxConcurrent,
      minPause: o.minPause,
      tolerableFailures: o.tolerableFailures,
    }).toEqual({
      interval: undefined,
      timeout: 600_000,
      maxConcurrent: 1,
      minPause: 0,
      tolerableFailures: 0,
    });
  });

  it.each<[CheckpointSchedulerOptions, string]>([
    [{ timeout: 0 }, 'timeout'],
    [{ timeout: 0.5 }, 'timeout'],
    [{ maxConcurrent: 0 }, 'maxConcurrent'],
    [{ maxConcurrent: 1.5 }, 'maxConcurrent'],
    [{ minPause: -1 }, 'minPause'],
    [{ interval: 0 }, 'interval'],
    [{ interval: Number.NaN }, 'interval'],
    [{ interval: '100' as unknown as number }, 'interval'],
    [{ tolerableFailures: -1 }, 'tolerableFailures'],
    [{ tolerableFailures: Number.POSITIVE_INFINITY }, 'tolerableFailures'],
    [{ initialDelay: 10 }, 'initialDelay'],
    [{ interval: 10, initialDelay: -5 }, 'initialDelay'],
  ])('%j is refused naming %s', (opts, option) => {
    let caught: unknown;
    try {
      resolveSchedulerOptions(opts);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidCheckpointOptionError);
    const err = caught as InvalidCheckpointOptionError;
    expect({ code: err.code, option: err.option }).toEqual({ code: 'INVALID_CHECKPOINT_OPTION', option });
    expect(err.message).toContain(option);
  });
});

describe('CheckpointScheduler', () => {
  it('interval: triggers periodically on the clock, not before', async () => {
    const h = await harness({ interval: 1000 });
    await h.advance(999);
    expect(h.triggered).toHaveLength(0);
    await h.advance(1);
    expect(h.triggered.map((p) => [p.checkpointId, p.timestamp])).toEqual([[1, 1_001_000]]);
    await h.ackAll(h.triggered[0]);
    await h.advance(1000);
    expect(h.triggered.map((p) => p.timestamp)).toEqual([1_001_000, 1_002_000]);
    expect(h.coord.latestCompleted()?.checkpointId).toBe(1);
  });

  it('timeout: a timed-out checkpoint is aborted with TIMEOUT, never becomes latest, and leaves no files', async () => {
    const h = await harness({ interval: 1000, timeout: 500 });
    await h.advance(1000);
    await h.ackAll(h.triggered[0]); // chk-1 completes
    const retained = await jobFiles(storage, JOB);
    await h.advance(1000); // chk-2 triggered
    const p = h.triggered[1];
    const [slow, fast] = [h.tasks[1], h.tasks[0]];
    await h.coord.acknowledge(p.checkpointId, 'op', 0, await fast.snapshot(p));
    const lateAck = await slow.snapshot(p); // wrote its files, never acknowledges in time
    expect((await jobFiles(storage, JOB)).length).toBeGreaterThan(retained.length);
    await h.advance(499);
    expect(h.coord.pendingCheckpoints().map((c) => c.checkpointId)).toEqual([2]);
    await h.advance(1);
    expect(h.coord.pendingCheckpoints()).toEqual([]);
    expect((await expectRejectsCode(p.completion, 'CHECKPOINT_DECLINED')) as unknown).toMatchObject({
      reason: 'TIMEOUT',
    });
    expect(h.coord.latestCompleted()?.checkpointId).toBe(1);
    expect(h.aborted).toEqual([[2, 'TIMEOUT']]);
    expect(h.coord.statistics.get(2)).toMatchObject({ status: 'failed', failureReason: 'TIMEOUT', durationMs: 500 });
    // the late acknowledgement is answered with TIMEOUT and its files go too
    expect(await h.coord.acknowledge(p.checkpointId, 'op', 1, lateAck)).toMatchObject({
      status: 'rejected',
      reason: 'TIMEOUT',
    });
    expect(await jobFiles(storage, JOB)).toEqual(await expectedJobFiles(storage, h.coord));
    expect(await jobFiles(storage, JOB)).toEqual(retained);
    expect(h.failures.map((e) => e.code)).toEqual(['TOLERABLE_FAILURES_EXCEEDED']); // tolerableFailures 0: TIMEOUT counts
  });

  it.each([1, 2, 3])(
    'maxConcurrent %i holds under a slow subtask; a queued trigger starts when one ends',
    async (maxConcurrent) => {
      const h = await harness({ interval: 100, maxConcurrent });
      let most = 0;
      h.coord.addCheckpointListener(() => (most = Math.max(most, h.coord.pendingCheckpoints().length)));
      await h.advance(100 * (maxConcurrent + 5)); // subtask 1 never acknowledges
      expect(h.triggered).toHaveLength(maxConcurrent);
      expect(h.coord.pendingCheckpoints()).toHaveLength(maxConcurrent);
      expect(most).toBe(maxConcurrent);
      await h.ackAll(h.triggered[0]); // frees a slot: the queued request runs at once
      expect(h.triggered).toHaveLength(maxConcurrent + 1);
      expect(h.triggered.at(-1)!.timestamp).toBe(h.clock.now());
      expect(h.coord.pendingCheckpoints().length).toBeLessThanOrEqual(maxConcurrent);
      // queued periodic requests coalesce: one checkpoint, not one per missed interval
      await h.advance(0);
      expect(h.triggered).toHaveLength(maxConcurrent + 1);
    },
  );

  it('minPause: the next periodic checkpoint starts minPause after the last completion', async () => {
    const h = await harness({ interval: 100, minPause: 250 });
    await h.advance(100);
    await h.advance(30);
    await h.ackAll(h.triggered[0]); // completes at +130
    const completedAt = h.clock.now();
    await h.advance(100 + 149); // periodic fires at +200 and +300: both wait for the pause
    expect(h.triggered).toHaveLength(1);
    await h.advance(1); // +380 = completion + 250
    expect(h.triggered).toHaveLength(2);
    expect(h.triggered[1].timestamp - completedAt).toBe(250);
    // a user-triggered checkpoint skips the pause but not maxConcurrent
    expect(h.scheduler.requestCheckpoint()).toEqual({ status: 'queued' });
    await h.ackAll(h.triggered[1]);
    expect(h.triggered).toHaveLength(3);
    expect(h.triggered[2].timestamp).toBe(h.clock.now());
  });

  it.each([0, 1, 3])('tolerableFailures %i: the job fails after N+1 consecutive failures, not after N', async (n) => {
    const h = await harness({ interval: 100, tolerableFailures: n }, () => ({
      decline: 'DECLINED',
      message: 'the snapshot failed',
    }));
    await h.steps(n, 100);
    expect(h.triggered).toHaveLength(n);
    expect(h.failures).toEqual([]);
    expect(h.scheduler.consecutiveFailures).toBe(n);
    await h.advance(100);
    expect(h.failures).toHaveLength(1);
    const err = h.failures[0] as TolerableFailuresExceededError;
    expect(err).toBeInstanceOf(TolerableFailuresExceededError);
    expect({ code: err.code, consecutive: err.consecutiveFailures, reason: err.lastReason }).toEqual({
      code: 'TOLERABLE_FAILURES_EXCEEDED',
      consecutive: n + 1,
      reason: 'DECLINED',
    });
    expect(h.events.filter((e) => e.type === 'job-failed')).toHaveLength(1);
    // the scheduler stopped: no more triggers
    await h.steps(10, 100);
    expect(h.triggered).toHaveLength(n + 1);
    expect(h.scheduler.isRunning).toBe(false);
  });

  it('a completed checkpoint resets the count; uncounted reasons never fail the job', async () => {
    let mode: 'decline' | 'not-ready' | 'accept' = 'decline';
    const h = await harness({ interval: 100, tolerableFailures: 1 }, () =>
      mode === 'decline'
        ? { decline: 'DECLINED', message: 'x' }
        : mode === 'not-ready'
          ? { decline: 'TASK_NOT_READY', message: 'source not running yet' }
          : undefined,
    );
    await h.advance(100); // failure 1 of 1 tolerated
    mode = 'accept';
    await h.advance(100);
    await h.ackAll(h.triggered[1]); // success: count back to 0
    expect(h.scheduler.consecutiveFailures).toBe(0);
    mode = 'decline';
    await h.advance(100); // 1 again: tolerated
    mode = 'not-ready';
    await h.steps(5, 100); // not counted
    expect(h.failures).toEqual([]);
    expect(h.scheduler.consecutiveFailures).toBe(1);
    expect(h.aborted.map(([, r]) => r)).toEqual([
      'DECLINED',
      'DECLINED',
      'TASK_NOT_READY',
      'TASK_NOT_READY',
      'TASK_NOT_READY',
      'TASK_NOT_READY',
      'TASK_NOT_READY',
    ]);
  });

  it('a decline after the trigger (scheduler.decline) and a throwing trigger callback', async () => {
    let throwNext = false;
    const h = await harness({ tolerableFailures: 5 }, () => {
      if (throwNext) throw new Error('barrier injection failed');
    });
    expect(h.scheduler.requestCheckpoint()).toEqual({ status: 'triggered', checkpointId: 1 });
    await h.scheduler.settled();
    await h.scheduler.decline(1, 'DECLINED', 'subtask 1 of op: its async snapshot failed');
    throwNext = true;
    expect(h.scheduler.requestCheckpoint()).toEqual({ status: 'triggered', checkpointId: 2 });
    await h.scheduler.settled();
    expect(h.aborted).toEqual([
      [1, 'DECLINED'],
      [2, 'TRIGGER_FAILED'],
    ]);
    expect(h.scheduler.consecutiveFailures).toBe(1); // TRIGGER_FAILED does not count
    expect(await jobFiles(storage, JOB)).toEqual([]);
  });

  it('stop(): no more triggers; start() resumes', async () => {
    const h = await harness({ interval: 100 });
    h.scheduler.stop();
    await h.advance(1000);
    expect(h.triggered).toHaveLength(0);
    expect(h.scheduler.requestCheckpoint()).toEqual({ status: 'stopped' });
    h.scheduler.start();
    await h.advance(100);
    expect(h.triggered).toHaveLength(1);
    h.scheduler.close();
  });
});

describe('queued requests (Flink queues each one; we coalesce them, docs/RUNTIME.md "Queued requests")', () => {
  it('at maxConcurrent, periodic ticks and user requests wait as one: a single checkpoint follows the pending one', async () => {
    const h = await harness({ interval: 100, maxConcurrent: 1, minPause: 1_000 });
    await h.advance(100);
    expect(h.triggered.map((p) => p.checkpointId)).toEqual([1]);
    // Three periodic ticks and two user requests while checkpoint 1 is pending.
    await h.advance(300);
    expect(h.scheduler.requestCheckpoint()).toEqual({ status: 'queued' });
    expect(h.scheduler.requestCheckpoint()).toEqual({ status: 'queued' });
    expect(h.triggered).toHaveLength(1);
    await h.ackAll(h.triggered[0]);
    // One checkpoint for all five, at once: a user request skips minPause. It covers everything
    // every waiting request asked for (all records up to its trigger), so none is lost.
    expect(h.triggered.map((p) => p.checkpointId)).toEqual([1, 2]);
    await h.ackAll(h.triggered[1]);
    expect(h.triggered).toHaveLength(2);
    // Nothing else was queued: the next periodic one waits for minPause after checkpoint 2's completion.
    await h.steps(9, 100);
    expect(h.triggered).toHaveLength(2);
    await h.advance(100);
    expect(h.triggered).toHaveLength(3);
    h.scheduler.close();
  });

  it('periodic ticks alone coalesce into one periodic request, which still honours minPause', async () => {
    const h = await harness({ interval: 100, maxConcurrent: 1, minPause: 250 });
    await h.advance(100);
    await h.advance(500); // five ticks while checkpoint 1 is pending
    await h.ackAll(h.triggered[0]);
    expect(h.triggered).toHaveLength(1); // the queued periodic request waits for the pause
    await h.advance(249);
    expect(h.triggered).toHaveLength(1);
    await h.advance(1);
    expect(h.triggered.map((p) => p.checkpointId)).toEqual([1, 2]);
    await h.ackAll(h.triggered[1]);
    await h.advance(249);
    expect(h.triggered).toHaveLength(2); // not a backlog of five run back to back
    h.scheduler.close();
  });
});

describe('stop-with-savepoint suspends the scheduler', () => {
  function runtime(log: string[]): StopWithSavepointRuntime<PendingCheckpoint> & { savepoint?: PendingCheckpoint } {
    const r: StopWithSavepointRuntime<PendingCheckpoint> & { savepoint?: PendingCheckpoint } = {
      injectTerminalBarrier: (sp) => {
        r.savepoint = sp;
        log.push(`inject ${sp.checkpointId}`);
      },
      resume: () => void log.push('resume'),
      notifyComplete: (info) => void log.push(`notify ${info.checkpointId}`),
      terminate: (mode) => void log.push(`terminate ${mode}`),
    };
    return r;
  }

  it('no checkpoint is triggered from the moment the stop begins, periodic or requested', async () => {
    const h = await harness({ interval: 100, timeout: 60_000 });
    const log: string[] = [];
    const r = runtime(log);
    await h.advance(50);
    const run = stopWithSavepoint(h.coord, r, { scheduler: h.scheduler });
    await h.steps(20, 100); // twenty intervals while the savepoint is pending
    expect(h.triggered).toEqual([]);
    expect(h.scheduler.requestCheckpoint()).toEqual({ status: 'stopped' });
    await h.ackAll(r.savepoint!);
    const info = await run;
    expect(log).toEqual([`inject ${info.checkpointId}`, `notify ${info.checkpointId}`, 'terminate stop']);
    await h.steps(5, 100);
    expect(h.triggered).toEqual([]);
    expect(h.events.filter((e) => e.type === 'triggered').map((e) => e.checkpoint.kind)).toEqual(['savepoint']);
    h.scheduler.close();
  });

  it("the stop's savepoint still times out; the job resumes and the scheduler triggers again an interval later", async () => {
    const h = await harness({ interval: 100, timeout: 500 });
    const log: string[] = [];
    const run = stopWithSavepoint(h.coord, runtime(log), { scheduler: h.scheduler });
    const failed = expectRejectsCode(run, 'STOP_WITH_SAVEPOINT_FAILED');
    await h.advance(499);
    expect(h.events.some((e) => e.type === 'failed')).toBe(false);
    await h.advance(1);
    const err = await failed;
    expect(err.message).toMatch(/timeout/);
    expect(log).toContain('resume');
    expect(h.triggered).toEqual([]);
    expect(h.scheduler.consecutiveFailures).toBe(0); // a savepoint's failure is not counted
    await h.advance(99);
    expect(h.triggered).toEqual([]);
    await h.advance(1);
    expect(h.triggered).toHaveLength(1);
    h.scheduler.close();
  });

  it('a savepoint that cannot even be triggered leaves the scheduler running', async () => {
    const h = await harness({ interval: 100 });
    const run = stopWithSavepoint(h.coord, runtime([]), {
      scheduler: h.scheduler,
      target: 'x',
      targetDir: 'y',
    });
    await expectRejectsCode(run, 'INVALID_ARGUMENT');
    await h.advance(100);
    expect(h.triggered).toHaveLength(1);
    h.scheduler.close();
  });
});
