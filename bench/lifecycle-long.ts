import fc from 'fast-check';
import { ALL_COMMAND_KINDS } from '../test/lifecycle/commands.js';
import { lifecycleProperty } from '../test/lifecycle/property.js';
import { LIFECYCLE_VARIANTS, variantByName } from '../test/lifecycle/variants.js';
import { emptyStats, type LifecycleStats, type LifecycleWorld } from '../test/lifecycle/world.js';

/**
 * The long form of the lifecycle model test (test/lifecycle): random interleavings of trigger,
 * snapshot, acknowledge, notifications, aborts, gc, crashes with restores at another parallelism
 * and a second instance, against every backend variant in turn, until the deadline. After every
 * step every retained checkpoint is restored and compared with the model.
 *
 *   npm run lifecycle-long -- --minutes 30 [--backend leveldb] [--max-commands 40] [--seed 123] [--exclude crash,secondInstance]
 *
 * Prints the interleavings run and restores checked; on a failure the backend, seed and path,
 * replayable with
 *   LIFECYCLE_BACKEND=<backend> LIFECYCLE_SEED=<seed> LIFECYCLE_PATH=<path> LIFECYCLE_REPLAY_PATH=<replayPath>
 *   LIFECYCLE_MAX_COMMANDS=<n> npx vitest run test/lifecycle/lifecycle.test.ts   (the exact line is printed)
 * Exit code 1 when anything failed.
 */
function opt(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const minutes = Number(opt('minutes') ?? 30);
const maxCommands = Number(opt('max-commands') ?? 40);
const variants = opt('backend') !== undefined ? [variantByName(opt('backend')!)] : LIFECYCLE_VARIANTS;
let seed = opt('seed') !== undefined ? Number(opt('seed')) : Date.now() ^ (process.pid << 8);
const excluded = new Set((opt('exclude') ?? '').split(',').filter((k) => k.length > 0));
const kinds = ALL_COMMAND_KINDS.filter((k) => !excluded.has(k));
const RUNS_PER_BATCH = 10;

async function main(): Promise<void> {
  const started = Date.now();
  const deadline = started + minutes * 60_000;
  const total: LifecycleStats = emptyStats();
  const perBackend = new Map<string, number>();
  const failures: string[] = [];
  let interleavings = 0;
  let batch = 0;
  // A run that never settles would let the process exit silently: keep it alive and report what hangs.
  let current: LifecycleWorld | null = null;
  let lastSteps = -1;
  const watchdog = setInterval(() => {
    if (current === null) return;
    if (current.stats.steps === lastSteps)
      console.log(
        `no progress for 60 s in ${current.variant.name}; recent steps:\n  ${current.recentHistory().join('\n  ')}`,
      );
    lastSteps = current.stats.steps;
  }, 60_000);
  while (Date.now() < deadline) {
    const variant = variants[batch++ % variants.length];
    const batchSeed = seed++;
    const details = await fc.check(
      lifecycleProperty(variant, {
        maxCommands,
        kinds,
        onWorld: (w) => void (current = w),
        onRun: (s) => {
          interleavings++;
          perBackend.set(variant.name, (perBackend.get(variant.name) ?? 0) + 1);
          for (const k of Object.keys(total) as (keyof LifecycleStats)[]) total[k] += s[k];
        },
      }),
      { numRuns: RUNS_PER_BATCH, seed: batchSeed },
    );
    if (details.failed) {
      // Commands replay only with the replayPath fast-check prints in the counterexample.
      const replayPath = /replayPath="([^"]*)"/.exec(fc.stringify(details.counterexample))?.[1];
      const line =
        `FAILED ${variant.name}: seed ${details.seed}, path ${details.counterexamplePath}\n` +
        `  replay: LIFECYCLE_BACKEND='${variant.name}' LIFECYCLE_SEED=${details.seed} LIFECYCLE_PATH='${details.counterexamplePath}' ` +
        `${replayPath !== undefined ? `LIFECYCLE_REPLAY_PATH='${replayPath}' ` : ''}` +
        `LIFECYCLE_MAX_COMMANDS=${maxCommands}${excluded.size > 0 ? ` LIFECYCLE_EXCLUDE=${[...excluded].join(',')}` : ''} npx vitest run test/lifecycle/lifecycle.test.ts\n` +
        `  counterexample: ${fc.stringify(details.counterexample)}\n` +
        `  ${String(details.errorInstance instanceof Error ? details.errorInstance.message : details.errorInstance)
          .split('\n')
          .join('\n  ')}`;
      failures.push(line);
      console.log(line);
    }
    if (batch % variants.length === 0) {
      console.log(
        `${new Date().toISOString()} interleavings ${interleavings}, steps ${total.steps}, restores checked ${total.restoresChecked}, failures ${failures.length}`,
      );
    }
  }
  clearInterval(watchdog);
  const seconds = Math.round((Date.now() - started) / 1000);
  console.log(
    `\nlifecycle-long: ${seconds} s, ${interleavings} interleavings (${[...perBackend].map(([b, n]) => `${b} ${n}`).join(', ')})`,
  );
  console.log(
    `steps ${total.steps}, restores checked ${total.restoresChecked} (+${total.restoresUnchanged} unchanged since their last restore), completed ${total.completed}, ` +
      `declined ${total.declined}, crashes ${total.crashes}, second instances ${total.secondInstances}, FENCED ${total.fencedErrors}, snapshots cancelled by an abort notice ${total.cancelledByAbort}`,
  );
  console.log(failures.length === 0 ? 'no failures' : `${failures.length} failure(s):\n${failures.join('\n')}`);
  if (failures.length > 0) process.exitCode = 1;
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
