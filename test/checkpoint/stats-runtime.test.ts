import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import { memory } from '../../backends/memory/index.js';
import {
  CHECKPOINT_CHANNELS,
  type CheckpointEvent,
  type CheckpointStats,
} from '../../src/checkpoint/checkpoint-stats.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { checkCounts, countingInput, countingJob, runPipeline } from '../../src/testing/index.js';

/**
 * Checkpoint statistics as the reference runtime reports them: every subtask's synchronous,
 * asynchronous and alignment durations are there (no "n/a"), the per-checkpoint figures are the
 * sums over its subtasks, and a savepoint outside the storage is named by its target.
 */
const input = countingInput({ records: 1_500, keys: 40, partitions: 4, seed: 12 });
let root: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'ss-stats-rt-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function heard<T>(jobId: string, run: () => Promise<T>): Promise<{ result: T; events: CheckpointEvent[] }> {
  const events: CheckpointEvent[] = [];
  const listener = (m: unknown): void => {
    if ((m as CheckpointEvent).jobId === jobId) events.push(m as CheckpointEvent);
  };
  const names = Object.values(CHECKPOINT_CHANNELS);
  for (const n of names) subscribe(n, listener);
  try {
    return { result: await run(), events };
  } finally {
    for (const n of names) unsubscribe(n, listener);
  }
}

const completed = (events: CheckpointEvent[]): CheckpointStats[] =>
  events.flatMap((e) => (e.type === 'completed' ? [e.checkpoint] : []));

const sum = (c: CheckpointStats, f: 'bytesWritten' | 'fullSize' | 'bytesReused' | 'fileCount'): number =>
  c.subtasks.reduce((n, s) => n + s[f], 0);

describe('statistics through the reference runtime', () => {
  it.each([
    ['count-based', { checkpointEvery: 200 }],
    ['scheduled', { checkpointing: { interval: 50 } }],
  ] as const)(
    '%s: every subtask reports its durations; the checkpoint figures add up across subtasks',
    async (_, how) => {
      const jobId = `stats-${_}`;
      // Sources 2, keyed 3, sink 3: keyed subtasks align two inputs.
      const { result, events } = await heard(jobId, () =>
        runPipeline(countingJob(input, { parallelism: 3, sourceParallelism: 2, jobId }), {
          backend: filesystem({ checkpointDir: join(root, 'chk') }),
          numRetainedCheckpoints: 2,
          seed: 8,
          ...how,
        }),
      );
      const done = completed(events);
      expect(done.length).toBeGreaterThan(0);
      expect(done.length).toBe(result.checkpointsCompleted.length);
      for (const c of done) {
        expect(c.numSubtasks).toBe(2 + 3 + 3);
        expect(c.numAcknowledged).toBe(c.numSubtasks);
        expect(c.subtasks.map((s) => `${s.operatorId}/${s.subtaskIndex}`)).toEqual([
          'keyed/0',
          'keyed/1',
          'keyed/2',
          'sink/0',
          'sink/1',
          'sink/2',
          'source/0',
          'source/1',
        ]);
        for (const s of c.subtasks) {
          for (const d of [s.syncDurationMs, s.asyncDurationMs, s.alignmentDurationMs]) {
            expect(typeof d).toBe('number');
            expect(d).toBeGreaterThanOrEqual(0);
          }
          // A source has no input to align; a sink behind a forward edge has one.
          if (s.operatorId !== 'keyed') expect(s.alignmentDurationMs).toBe(0);
          expect(s.ackTimestamp).toBeGreaterThanOrEqual(c.triggerTimestamp);
        }
        expect(c.bytesWritten).toBe(sum(c, 'bytesWritten'));
        expect(c.fullSize).toBe(sum(c, 'fullSize'));
        expect(c.bytesReused).toBe(sum(c, 'bytesReused'));
        expect(c.fileCount).toBe(sum(c, 'fileCount'));
        expect(c.bytesWritten + c.bytesReused).toBe(c.fullSize);
        expect(c.fullSize).toBeGreaterThan(0);
        expect(c.durationMs).toBe(Math.max(...c.subtasks.map((s) => s.ackTimestamp)) - c.triggerTimestamp);
      }
      // The same figures are in each retained checkpoint's _metadata (what `streamstate inspect` reads).
      const storage = localCheckpointStorage(join(root, 'chk'));
      const latest = result.checkpointsCompleted.at(-1)!;
      const { metadata } = await storage.resolve(latest.pointer);
      const stats = done.find((c) => c.checkpointId === latest.checkpointId)!;
      expect(metadata.stats?.subtasks).toEqual(stats.subtasks);
      expect(metadata.stats?.bytesWritten).toBe(stats.bytesWritten);
      expect(checkCounts(result.committed, input).ok).toBe(true);
    },
  );

  it('a savepoint outside the storage, and a restore from it, are named by their path (not an internal mount name)', async () => {
    const target = join(root, 'savepoints', 'sp-1');
    const first = await heard('sp-first', () =>
      runPipeline(countingJob(input, { parallelism: 2, jobId: 'sp-first' }), {
        backend: memory(),
        checkpointEvery: 300,
        savepoints: [{ afterRecords: 700, target }],
      }),
    );
    const sp = first.events.filter(
      (e) => e.type !== 'restored' && e.type !== 'job-failed' && e.checkpoint.kind === 'savepoint',
    );
    expect(sp.map((e) => e.type)).toEqual(expect.arrayContaining(['triggered', 'completed']));
    for (const e of sp) if (e.type !== 'restored' && e.type !== 'job-failed') expect(e.checkpoint.pointer).toBe(target);
    expect(first.result.savepoints.map((s) => s.pointer)).toEqual([target]);

    const second = await heard('sp-second', () =>
      runPipeline(countingJob(input, { parallelism: 3, jobId: 'sp-second' }), {
        backend: memory(),
        checkpointStorage: localCheckpointStorage(join(root, 'second')),
        checkpointEvery: 300,
        restoreFrom: target,
      }),
    );
    const restored = second.events.flatMap((e) => (e.type === 'restored' ? [e.restored] : []));
    expect(restored.map((r) => [r.pointer, r.kind, r.mode])).toEqual([[target, 'savepoint', 'no-claim']]);
    for (const e of second.events)
      if (e.type !== 'restored' && e.type !== 'job-failed') expect(e.checkpoint.pointer).not.toMatch(/~ext-/);
  });
});
