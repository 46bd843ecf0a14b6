import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ALL_COMMAND_KINDS } from './commands.js';
import { lifecycleProperty, replayFromEnv } from './property.js';
import { LIFECYCLE_VARIANTS } from './variants.js';
import { LifecycleWorld } from './world.js';

/**
 * Issue 12: random interleavings of the checkpoint lifecycle (trigger, per-subtask snapshots and
 * acknowledgements, late/duplicate/missing/out-of-order notifications, aborts, gc, `streamstate
 * gc`, crashes with a restore at another parallelism, a second instance) against every backend;
 * after every step every retained checkpoint restores to the plain model's state for it.
 * The long form is `npm run lifecycle-long -- --minutes 30`.
 *
 * Replay a failure: LIFECYCLE_BACKEND=<name> LIFECYCLE_SEED=<seed> LIFECYCLE_PATH=<path>
 * (LIFECYCLE_REPLAY_PATH=<replayPath> for the command list) npx vitest run test/lifecycle/lifecycle.test.ts
 * (plus LIFECYCLE_MAX_COMMANDS and LIFECYCLE_EXCLUDE as the long form prints them).
 * LIFECYCLE_RUNS sets the runs per backend (default 15, or the variant's defaultRuns).
 */
const replay = replayFromEnv();
const only = process.env.LIFECYCLE_BACKEND;
const runsFromEnv = process.env.LIFECYCLE_RUNS;
// The long form's settings, for replaying its failures (it prints them with the seed).
const commandsFromEnv = process.env.LIFECYCLE_MAX_COMMANDS;
const excluded = new Set((process.env.LIFECYCLE_EXCLUDE ?? '').split(',').filter((k) => k.length > 0));

describe('lifecycle: random interleavings against a plain model', () => {
  for (const variant of LIFECYCLE_VARIANTS) {
    if (only !== undefined && only !== '' && only !== variant.name) continue;
    const numRuns = Number(runsFromEnv ?? variant.defaultRuns?.numRuns ?? 15);
    const maxCommands = Number(commandsFromEnv ?? variant.defaultRuns?.maxCommands ?? 20);
    it(`${variant.name}: after every step every retained checkpoint restores to the model, nothing outside the job is touched`, async () => {
      await fc.assert(
        lifecycleProperty(variant, {
          maxCommands,
          kinds: ALL_COMMAND_KINDS.filter((k) => !excluded.has(k)),
          ...(replay.replayPath !== undefined ? { replayPath: replay.replayPath } : {}),
        }),
        {
          numRuns,
          ...(replay.seed !== undefined ? { seed: replay.seed } : {}),
          ...(replay.path !== undefined ? { path: replay.path, endOnFailure: true } : {}),
        },
      );
    }, 120_000);
  }

  // The path random interleavings reach only now and then: an abort notice while the aborted
  // checkpoint's snapshots are still writing (held in their I/O, so the order is certain).
  for (const variant of LIFECYCLE_VARIANTS) {
    if (only !== undefined && only !== '' && only !== variant.name) continue;
    it(`${variant.name}: an abort notice cancels the aborted checkpoint's snapshots still writing; the retained checkpoint and the next one restore`, async () => {
      const world = await LifecycleWorld.create(variant, 2, 1);
      const step = async (name: string, apply: () => Promise<void> | void): Promise<void> => {
        world.begin(name);
        await apply();
        await world.check(name);
      };
      try {
        await step('write', () => world.write(0, 10, 400, false, 1));
        await step('checkpoint', () => world.fullCheckpoint());
        await step('write', () => world.write(0, 10, 400, false, 1));
        await step('trigger', () => world.trigger());
        await step('snapshot(all, held)', () => world.snapshot(0, 0, true, true));
        await step('abort', () => world.abort(0));
        await step('notifyAborted(every subtask)', () => world.notifyAborted(0, 2));
        await step('ack(all)', () => world.acknowledge(0, true));
        expect(world.stats.cancelledByAbort).toBe(2);
        await step('checkpoint', () => world.fullCheckpoint());
        await step('gc', () => world.collectGarbage());
        expect(world.stats.completed).toBe(2);
      } finally {
        await world.dispose();
      }
    });
  }
});
