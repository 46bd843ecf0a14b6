import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { memoryCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator, type PendingCheckpoint } from '../../src/checkpoint/coordinator.js';
import { countsAgainstTolerableFailures, type CheckpointFailureReason } from '../../src/checkpoint/acknowledgement.js';
import { ManualClock } from '../../src/checkpoint/scheduler-clock.js';
import { CheckpointScheduler } from '../../src/checkpoint/scheduler.js';
import type { StreamStateError } from '../../src/errors.js';
import { FakeIncrementalSubtask } from './coordinator-fixture.js';

type Command =
  | { readonly kind: 'advance'; readonly ms: number }
  | { readonly kind: 'ack'; readonly which: 'oldest' | 'newest' }
  | { readonly kind: 'decline'; readonly reason: 'DECLINED' | 'TASK_NOT_READY' | 'CANCELLED' };

const command: fc.Arbitrary<Command> = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: 1, max: 400 }).map((ms) => ({ kind: 'advance' as const, ms })) },
  {
    weight: 2,
    arbitrary: fc.constantFrom('oldest' as const, 'newest' as const).map((which) => ({ kind: 'ack' as const, which })),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom('DECLINED' as const, 'TASK_NOT_READY' as const, 'CANCELLED' as const)
      .map((reason) => ({ kind: 'decline' as const, reason })),
  },
);

/**
 * Random clock advances, acknowledgements and declines against a small model of the scheduler's
 * guarantees: never more than maxConcurrent pending, nothing pending past the timeout, periodic
 * checkpoints start no earlier than minPause after the last completion, and the job fails exactly
 * when the model's count of consecutive counted failures first exceeds tolerableFailures.
 */
describe('CheckpointScheduler against a model (property)', () => {
  it('maxConcurrent, timeout, minPause and tolerableFailures hold for any sequence', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          interval: fc.integer({ min: 50, max: 300 }),
          timeout: fc.integer({ min: 100, max: 1000 }),
          maxConcurrent: fc.integer({ min: 1, max: 3 }),
          minPause: fc.integer({ min: 0, max: 300 }),
          tolerableFailures: fc.integer({ min: 0, max: 3 }),
        }),
        fc.array(command, { minLength: 1, maxLength: 40 }),
        async (opts, commands) => {
          const clock = new ManualClock(0);
          const coord = new CheckpointCoordinator({
            jobId: 'prop',
            storage: memoryCheckpointStorage({ inlineThreshold: 0 }),
            backendName: 'fake',
            operators: [{ operatorId: 'op', parallelism: 2, maxParallelism: 128 }],
            clock: () => clock.now(),
          });
          await coord.restore();
          const tasks = [new FakeIncrementalSubtask('op', 0, 2), new FakeIncrementalSubtask('op', 1, 2)];
          const failures: StreamStateError[] = [];
          // the model
          let consecutive = 0;
          let lastCompletedId = -1;
          let lastCompletionAt: number | undefined;
          let modelFailed = false;
          coord.addCheckpointListener((e) => {
            if (e.type === 'triggered') {
              expect(coord.pendingCheckpoints().length).toBeLessThanOrEqual(opts.maxConcurrent);
              // only periodic triggers happen here: none inside the pause
              if (lastCompletionAt !== undefined)
                expect(e.checkpoint.triggerTimestamp).toBeGreaterThanOrEqual(lastCompletionAt + opts.minPause);
            } else if (e.type === 'completed') {
              consecutive = 0;
              lastCompletedId = Math.max(lastCompletedId, e.checkpoint.checkpointId);
              lastCompletionAt = clock.now();
            } else if (e.type === 'failed' && !modelFailed) {
              const reason = e.checkpoint.failureReason as CheckpointFailureReason;
              if (countsAgainstTolerableFailures(reason) && e.checkpoint.checkpointId > lastCompletedId) consecutive++;
              if (consecutive > opts.tolerableFailures) modelFailed = true;
            }
          });
          const scheduler = new CheckpointScheduler(
            coord,
            { triggerCheckpoint: () => undefined, failJob: (err) => void failures.push(err) },
            { ...opts, clock },
          );
          scheduler.start();
          for (const c of commands) {
            const pending: PendingCheckpoint[] = coord.pendingCheckpoints();
            if (c.kind === 'advance') clock.advance(c.ms);
            else if (pending.length > 0) {
              const p = c.kind === 'decline' || c.which === 'oldest' ? pending[0] : pending[pending.length - 1];
              if (c.kind === 'decline') await scheduler.decline(p.checkpointId, c.reason, 'property');
              else
                for (const t of tasks)
                  await coord.acknowledge(p.checkpointId, t.operatorId, t.subtaskIndex, await t.snapshot(p));
            }
            await scheduler.settled();
            // (a failed job's scheduler has stopped: it times nothing out any more)
            if (!modelFailed)
              for (const p of coord.pendingCheckpoints()) expect(clock.now() - p.timestamp).toBeLessThan(opts.timeout);
            expect(coord.pendingCheckpoints().length).toBeLessThanOrEqual(opts.maxConcurrent);
            expect(failures.length).toBe(modelFailed ? 1 : 0);
            if (modelFailed) expect(scheduler.isRunning).toBe(false);
          }
          scheduler.close();
          await coord.shutdown('finish');
        },
      ),
      { numRuns: 200 },
    );
  }, 60_000);
});
