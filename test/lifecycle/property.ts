import fc from 'fast-check';
import { ALL_COMMAND_KINDS, commandArbitraries, type CommandKind } from './commands.js';
import type { LifecycleVariant } from './variants.js';
import { LifecycleWorld, type LifecycleStats } from './world.js';

export interface LifecyclePropertyOptions {
  /** Longest command list (default 30). */
  readonly maxCommands?: number;
  /** Command kinds drawn (default all). */
  readonly kinds?: readonly CommandKind[];
  /** fast-check's replayPath of the command list (printed with a counterexample). */
  readonly replayPath?: string;
  /** Called after each run (interleaving) with its figures. */
  readonly onRun?: (stats: LifecycleStats) => void;
  /** Called with each run's world when it starts (diagnostics of a run that hangs). */
  readonly onWorld?: (world: LifecycleWorld) => void;
}

/**
 * One property per backend variant: a random interleaving of lifecycle commands, starting at
 * parallelism 2 or 3 with numRetained 1 or 2; after every command every retained checkpoint
 * restores to the model's state for it (LifecycleWorld.check).
 */
export function lifecycleProperty(variant: LifecycleVariant, opts: LifecyclePropertyOptions = {}) {
  const cmds = fc.commands(commandArbitraries(opts.kinds ?? ALL_COMMAND_KINDS), {
    maxCommands: opts.maxCommands ?? 30,
    // Long lists: late notifications and retention bugs need several checkpoints in one run.
    size: 'max',
    ...(opts.replayPath !== undefined ? { replayPath: opts.replayPath } : {}),
  });
  return fc.asyncProperty(
    fc.integer({ min: 2, max: 3 }),
    fc.integer({ min: 1, max: 2 }),
    cmds,
    async (parallelism, numRetained, commands) => {
      const world = await LifecycleWorld.create(variant, parallelism, numRetained);
      opts.onWorld?.(world);
      try {
        await world.check('start');
        await fc.asyncModelRun(() => ({ model: world, real: world }), commands);
      } finally {
        opts.onRun?.(world.stats);
        await world.dispose();
      }
    },
  );
}

/** Replay settings from the environment: LIFECYCLE_SEED, LIFECYCLE_PATH (and LIFECYCLE_REPLAY_PATH for the command list). */
export function replayFromEnv(env: NodeJS.ProcessEnv = process.env): {
  seed?: number;
  path?: string;
  replayPath?: string;
} {
  const out: { seed?: number; path?: string; replayPath?: string } = {};
  if (env.LIFECYCLE_SEED !== undefined && env.LIFECYCLE_SEED !== '') out.seed = Number(env.LIFECYCLE_SEED);
  if (env.LIFECYCLE_PATH !== undefined && env.LIFECYCLE_PATH !== '') out.path = env.LIFECYCLE_PATH;
  if (env.LIFECYCLE_REPLAY_PATH !== undefined && env.LIFECYCLE_REPLAY_PATH !== '')
    out.replayPath = env.LIFECYCLE_REPLAY_PATH;
  return out;
}
