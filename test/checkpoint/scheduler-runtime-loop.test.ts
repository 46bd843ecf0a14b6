import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import {
  CheckpointCoordinator,
  CheckpointScheduler,
  float64Serializer,
  keyGroupRangeForSubtask,
  ManualClock,
  stringSerializer,
  subtaskForKey,
  valueState,
  type PendingCheckpoint,
  type StreamStateError,
} from '../../src/index.js';

/**
 * The runtime loop of docs/RUNTIME.md ("A runtime loop with the scheduler") and the scheduler
 * snippet of the README work as written: the regions between the markers below are those
 * snippets (checked against the documents, import line aside), run here on a ManualClock.
 */
const dirs: string[] = [];
afterEach(async () => {
  while (dirs.length > 0) await rm(dirs.pop()!, { recursive: true, force: true });
});

/** Lets the loops run until `done()` (a bounded number of event-loop turns, no wall-clock limit). */
async function until(done: () => boolean, what: string): Promise<void> {
  for (let turn = 0; turn < 200_000; turn++) {
    if (done()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`never happened: ${what}`);
}

/** The fenced ```ts block of `doc` that follows `heading`, and the region of this file between `marker`:begin and :end. */
async function snippetAndRegion(doc: string, heading: string, marker: string): Promise<[string[], string[]]> {
  const text = await readFile(fileURLToPath(new URL(`../../${doc}`, import.meta.url)), 'utf8');
  const section = text.slice(text.indexOf(heading));
  const block = /```ts\n([\s\S]*?)```/.exec(section)![1];
  const self = await readFile(fileURLToPath(import.meta.url), 'utf8');
  const begin = `// ${marker}:begin\n`;
  const region = self.slice(self.indexOf(begin) + begin.length, self.indexOf(`// ${marker}:end`));
  const lines = (t: string) =>
    t
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '');
  return [lines(block), lines(region)];
}

it('the RUNTIME.md runtime loop checkpoints on the scheduler, reports its durations, and restores at another parallelism', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'streamstate-runtime-loop-'));
  dirs.push(dir);
  const jobId = 'loop-job';
  const backend = filesystem({ checkpointDir: dir });
  const storage = backend.checkpointStorage!;
  const clock = new ManualClock(Date.now());

  // RUNTIME:begin
  const P = 2;
  const MAXP = 128;
  const countDescriptor = valueState<number>('count', { serializer: float64Serializer, defaultValue: 0 });
  const coordinator = new CheckpointCoordinator({
    jobId,
    storage,
    backendName: backend.name,
    clock: () => clock.now(), // the scheduler's time
    operators: [{ operatorId: 'count', parallelism: P, maxParallelism: MAXP }],
  });
  const plan = await coordinator.restore(); // before creating the backends; null on a fresh start
  const subtasks = await Promise.all(
    Array.from({ length: P }, async (_, i) => ({
      queue: [] as Array<{ key: string } | { barrier: PendingCheckpoint }>,
      keyed: await backend.createKeyedStateBackend({
        jobId,
        operatorId: 'count',
        subtaskIndex: i,
        parallelism: P,
        maxParallelism: MAXP,
        keyGroupRange: keyGroupRangeForSubtask(MAXP, P, i),
        keySerializer: stringSerializer,
        restore: plan?.subtask('count', i).keyed,
      }),
    })),
  );
  let running = true;
  let failure: StreamStateError | undefined;
  const scheduler = new CheckpointScheduler(
    coordinator,
    {
      triggerCheckpoint(pending) {
        if (!running) return { decline: 'TASK_NOT_READY', message: 'the job is stopping' };
        for (const s of subtasks) s.queue.push({ barrier: pending }); // a source would emit it after its last record
      },
      checkpointAborted(id) {
        for (const s of subtasks) void s.keyed.notifyCheckpointAborted(id);
      },
      failJob(err) {
        running = false; // cancel the tasks, then restart from the latest checkpoint (the restart strategy)
        failure = err;
      },
    },
    { interval: 5_000, timeout: 60_000, tolerableFailures: 2, clock }, // clock: systemClock in production
  );
  scheduler.start();

  function route(key: string): void {
    // the keyed exchange: the subtask that owns the key's key group
    subtasks[subtaskForKey(key, stringSerializer, MAXP, P)].queue.push({ key });
  }

  async function runSubtask(i: number): Promise<void> {
    const s = subtasks[i];
    const counts = s.keyed.getState(countDescriptor);
    while (running) {
      const item = s.queue.shift();
      if (item === undefined) {
        await new Promise((r) => setImmediate(r));
        continue;
      }
      if ('key' in item) {
        s.keyed.setCurrentKey(item.key);
        counts.update((counts.value() ?? 0) + 1);
        continue;
      }
      const p = item.barrier; // one input: no alignment to wait for
      const started = performance.now();
      const task = await s.keyed.snapshot(p.checkpointId, p.snapshotOptions('count', i));
      const syncDurationMs = performance.now() - started; // processing resumes now; the rest runs in the background
      void task.done.then(
        async (handle) => {
          const asyncDurationMs = performance.now() - started - syncDurationMs;
          const metrics = { syncDurationMs, asyncDurationMs, alignmentDurationMs: 0 };
          const result = await coordinator.acknowledge(p.checkpointId, 'count', i, {
            keyed: [handle],
            operator: [],
            metrics,
          });
          if (result.status === 'completed')
            for (const t of subtasks) await t.keyed.notifyCheckpointComplete(p.checkpointId);
        },
        (err) => scheduler.decline(p.checkpointId, 'DECLINED', `subtask ${i}: ${(err as Error).message}`),
      );
    }
  }
  // Run: start runSubtask(i) for every i and route(key) every record. To stop: running = false,
  // scheduler.close(), await scheduler.settled(), coordinator.shutdown('finish'), close the backends.
  // RUNTIME:end

  const loops = subtasks.map((_, i) => runSubtask(i));
  const keys = Array.from({ length: 300 }, (_, n) => `user-${n % 17}`);
  for (const k of keys.slice(0, 200)) route(k);
  clock.advance(4_999);
  expect(coordinator.statistics.snapshot().counts.triggered).toBe(0);
  clock.advance(1); // the first periodic checkpoint
  const completed = () => coordinator.statistics.snapshot().counts.completed;
  await until(() => completed() === 1, 'checkpoint 1 completes');
  for (const k of keys.slice(200)) route(k);
  clock.advance(5_000);
  await until(() => completed() === 2, 'checkpoint 2 completes');

  const stats = coordinator.statistics.snapshot();
  expect(stats.counts).toMatchObject({ triggered: 2, completed: 2, failed: 0 });
  expect(stats.latestCompleted?.subtasks).toHaveLength(P);
  for (const s of stats.latestCompleted!.subtasks) {
    expect(s.syncDurationMs).toBeGreaterThanOrEqual(0);
    expect(s.asyncDurationMs).toBeGreaterThanOrEqual(0);
    expect(s.alignmentDurationMs).toBe(0);
  }
  expect(failure).toBeUndefined();

  running = false;
  await Promise.all(loops);
  scheduler.close();
  await scheduler.settled();
  await coordinator.shutdown('finish');
  for (const s of subtasks) await s.keyed.close();

  // Checkpoint 2 holds every record, and restores at parallelism 3.
  const again = new CheckpointCoordinator({
    jobId,
    storage,
    backendName: backend.name,
    operators: [{ operatorId: 'count', parallelism: 3, maxParallelism: 128 }],
  });
  const restored = await again.restore();
  expect(restored?.checkpointId).toBe(2);
  let total = 0;
  for (let i = 0; i < 3; i++) {
    const kb = await backend.createKeyedStateBackend({
      jobId,
      operatorId: 'count',
      subtaskIndex: i,
      parallelism: 3,
      maxParallelism: 128,
      keyGroupRange: keyGroupRangeForSubtask(128, 3, i),
      keySerializer: stringSerializer,
      restore: restored!.subtask('count', i).keyed,
    });
    const counts = kb.getState(countDescriptor);
    for (const k of new Set(keys)) {
      if (subtaskForKey(k, stringSerializer, 128, 3) !== i) continue;
      kb.setCurrentKey(k);
      total += counts.value() ?? 0;
    }
    await kb.close();
  }
  expect(total).toBe(keys.length);
  await again.shutdown('finish');
});

it('the README scheduler snippet builds and starts a scheduler that triggers through its callback', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'streamstate-readme-sched-'));
  dirs.push(dir);
  const backend = filesystem({ checkpointDir: dir });
  const coordinator = new CheckpointCoordinator({
    jobId: 'readme-sched',
    storage: backend.checkpointStorage!,
    backendName: backend.name,
    operators: [{ operatorId: 'counter', parallelism: 1, maxParallelism: 128 }],
  });
  await coordinator.restore();
  const injected: number[] = [];
  const injectBarriers = (pending: PendingCheckpoint): void => void injected.push(pending.checkpointId);
  const failures: StreamStateError[] = [];
  const restartFromLatestCheckpoint = (err: StreamStateError): void => void failures.push(err);

  // README:begin
  const scheduler = new CheckpointScheduler(
    coordinator,
    {
      triggerCheckpoint: (pending) => injectBarriers(pending), // or return { decline: 'TASK_NOT_READY', message }
      failJob: (err) => restartFromLatestCheckpoint(err), // TOLERABLE_FAILURES_EXCEEDED
    },
    { interval: 10_000, timeout: 60_000, tolerableFailures: 3 },
  );
  scheduler.start();
  // README:end

  expect(scheduler.requestCheckpoint()).toEqual({ status: 'triggered', checkpointId: 1 });
  expect(injected).toEqual([1]);
  expect(failures).toEqual([]);
  scheduler.close();
  await coordinator.shutdown('cancel');
});

it('the regions run above are the RUNTIME.md and README snippets', async () => {
  const [runtimeDoc, runtimeRegion] = await snippetAndRegion(
    'docs/RUNTIME.md',
    '### A runtime loop with the scheduler',
    'RUNTIME',
  );
  expect(runtimeDoc[0]).toMatch(/^import \{ .*CheckpointScheduler.* \} from 'streamstate';$/);
  expect(runtimeRegion).toEqual(runtimeDoc.slice(1));
  const [readmeDoc, readmeRegion] = await snippetAndRegion(
    'README.md',
    '### Scheduling, guards and statistics',
    'README',
  );
  expect(readmeRegion).toEqual(readmeDoc);
});
