/**
 * The streamstate demo (`npm run demo`): a keyed counting job on the in-process pipeline harness.
 *
 *   source (8 replayable partitions) --keyBy--> count per key (parallelism 4) --> exactly-once sink
 *
 * It checkpoints every 10,000 records to a local directory (filesystem backend, default
 * ./demo-checkpoints/<job id>/), crashes midway, recovers from the latest completed checkpoint at
 * parallelism 3, runs to the end, and checks the committed output: per key the counts must be
 * exactly 1..n (no duplicates, no gaps) and equal to a run without failure. Exit code 1 on FAIL.
 *
 * Flags: --backend memory|filesystem  --records N  --keys N  --seed S  --checkpoint-dir DIR
 *        --checkpoint-every N  --parallelism P  --recover-parallelism P  --crash-at N
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { filesystem } from '../backends/filesystem/index.js';
import { memory } from '../backends/memory/index.js';
import type { StateBackend } from '../src/backend/contract.js';
import { CHECKPOINT_CHANNELS, type CheckpointEvent, type CheckpointStats } from '../src/checkpoint/checkpoint-stats.js';
import { StreamStateError } from '../src/errors.js';
import {
  checkCounts,
  countingInput,
  countingJob,
  runPipeline,
  type CountOutput,
  type PipelineResult,
} from '../src/testing/index.js';

export interface DemoOptions {
  readonly backend: 'memory' | 'filesystem';
  readonly records: number;
  readonly keys: number;
  readonly seed: number;
  /** filesystem backend only. */
  readonly checkpointDir: string;
  readonly checkpointEvery: number;
  readonly parallelism: number;
  readonly recoverParallelism: number;
  /** The keyed operator's n-th record crashes the job. Default: 53% of the way through the input. */
  readonly crashAt?: number;
}

export const DEFAULT_DEMO_OPTIONS: DemoOptions = {
  backend: 'filesystem',
  records: 200_000,
  keys: 1_000,
  seed: 1,
  checkpointDir: './demo-checkpoints',
  checkpointEvery: 10_000,
  parallelism: 4,
  recoverParallelism: 3,
};

export interface DemoReport {
  readonly pass: boolean;
  readonly crashed: PipelineResult<CountOutput>;
  readonly reference: PipelineResult<CountOutput>;
  /** The summary printed by the CLI. */
  readonly lines: readonly string[];
}

const PARTITIONS = 8;

export async function runDemo(opts: DemoOptions): Promise<DemoReport> {
  const started = performance.now();
  const input = countingInput({ records: opts.records, keys: opts.keys, partitions: PARTITIONS, seed: opts.seed });
  // Midway, and between two checkpoints, so part of an interval is replayed.
  const crashAt = opts.crashAt ?? Math.max(1, Math.floor(opts.records * 0.53));
  const checkpointDir = resolve(opts.checkpointDir);
  let backend: StateBackend;
  if (opts.backend === 'filesystem') {
    await mkdir(checkpointDir, { recursive: true });
    backend = filesystem({ checkpointDir });
  } else {
    backend = memory({ maxSnapshotBytes: 64 * 1024 * 1024 });
  }

  // The checkpoint statistics of run 1, heard on node:diagnostics_channel (no access to the runtime's coordinator needed).
  const ended: CheckpointStats[] = [];
  const onEnded = (message: unknown): void => {
    const e = message as CheckpointEvent;
    if (e.type === 'completed' || e.type === 'failed') ended.push(e.checkpoint);
  };
  subscribe(CHECKPOINT_CHANNELS.completed, onEnded);
  subscribe(CHECKPOINT_CHANNELS.failed, onEnded);
  let crashed: PipelineResult<CountOutput>;
  try {
    crashed = await runPipeline(countingJob(input, { parallelism: opts.parallelism }), {
      backend,
      checkpointEvery: opts.checkpointEvery,
      seed: opts.seed,
      crashAt,
      recoverWithParallelism: opts.recoverParallelism,
    });
  } finally {
    unsubscribe(CHECKPOINT_CHANNELS.completed, onEnded);
    unsubscribe(CHECKPOINT_CHANNELS.failed, onEnded);
  }
  // The reference: the same job and seed without a failure (in memory: only its output matters).
  const reference = await runPipeline(countingJob(input, { parallelism: opts.parallelism }), {
    backend: memory({ maxSnapshotBytes: 64 * 1024 * 1024 }),
    checkpointEvery: opts.checkpointEvery,
    seed: opts.seed,
  });

  const check = checkCounts(crashed.committed, input);
  const referenceCheck = checkCounts(reference.committed, input);
  const sameAsReference = sameOutput(crashed.committed, reference.committed);
  const pass = check.ok && referenceCheck.ok && sameAsReference && crashed.crashes === 1;

  const n = (x: number) => x.toLocaleString('en-US');
  const restore = crashed.restoredFrom[0];
  const ids = crashed.checkpointsCompleted.map((c) => c.checkpointId);
  const lines = [
    `streamstate demo: keyed counting, ${n(opts.records)} records over ${n(opts.keys)} keys in ${PARTITIONS} partitions (seed ${opts.seed})`,
    opts.backend === 'filesystem'
      ? `backend: filesystem, checkpoints every ${n(opts.checkpointEvery)} records to ${checkpointDir}/${crashed.jobId}/`
      : `backend: memory (checkpoints held in process memory), every ${n(opts.checkpointEvery)} records`,
    '',
    `run 1: parallelism ${opts.parallelism}, crash injected at record ${n(crashAt)}`,
    restore?.checkpointId != null
      ? `  restored from checkpoint ${restore.checkpointId} (${restore.location}) at parallelism ${restore.parallelism}`
      : `  no checkpoint had completed: restarted from scratch at parallelism ${restore?.parallelism ?? '?'}`,
    `  checkpoints completed: ${ids.length}${ids.length > 0 ? ` (ids ${ids[0]}..${ids[ids.length - 1]})` : ''}, aborted: ${crashed.checkpointsAborted.length}`,
    `  bytes written: ${formatBytes(crashed.bytesWritten)}`,
    ...statisticsLines(ended.filter((c) => c.jobId === crashed.jobId)),
    `  records processed: ${n(crashed.recordsProcessed)} (${n(opts.records)} input + ${n(crashed.recordsProcessed - opts.records)} replayed after the crash)`,
    `  committed: ${n(crashed.committed.length)} records in ${n(crashed.output.transactions().length)} transactions`,
    `run 2 (reference, no failure, memory backend): ${n(reference.committed.length)} records committed, ${reference.checkpointsCompleted.length} checkpoints`,
    '',
    `check: every key's committed counts are exactly 1..n: ${check.keysOk}/${check.keys} keys${check.ok ? '' : ' — ' + check.problems.slice(0, 3).join('; ')}`,
    `check: committed output equals the run without failure: ${sameAsReference ? 'yes' : 'NO'}`,
    ...(crashed.crashes === 1
      ? []
      : [`check: exactly one crash happened: NO (${crashed.crashes}; is --crash-at beyond the input?)`]),
    `result: ${pass ? 'PASS' : 'FAIL'}  (${((performance.now() - started) / 1000).toFixed(1)} s)`,
    // Every run is a new job, so its directory stays next to earlier runs' for inspection.
    ...(opts.backend === 'filesystem'
      ? [
          '',
          `kept: ${checkpointDir}/${crashed.jobId}/ (npx streamstate list ${checkpointDir}); each run adds a job directory there: rm -rf ${checkpointDir} removes them all`,
        ]
      : []),
  ];
  return { pass, crashed, reference, lines };
}

/** Flink-style summary of the checkpoint statistics: durations and sizes, medians and maxima. */
function statisticsLines(stats: readonly CheckpointStats[]): string[] {
  const done = stats.filter((c) => c.status === 'completed' && c.kind === 'checkpoint');
  if (done.length === 0) return [`  checkpoint statistics: none completed (${stats.length} failed)`];
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] ?? 0;
  const max = (xs: number[]): number => Math.max(0, ...xs);
  const ms = (x: number): string => `${x.toFixed(1)} ms`;
  const subtasks = done.flatMap((c) => c.subtasks);
  const aligning = subtasks.filter((s) => s.operatorId === 'keyed');
  const reasons = [...new Set(stats.filter((c) => c.status === 'failed').map((c) => c.failureReason))];
  return [
    `  checkpoint statistics: ${done.length} completed, ${stats.length - done.length} failed${reasons.length > 0 ? ` (${reasons.join(', ')})` : ''}; ` +
      `end-to-end median ${ms(median(done.map((c) => c.durationMs ?? 0)))}, max ${ms(max(done.map((c) => c.durationMs ?? 0)))}`,
    `    per checkpoint: written median ${formatBytes(median(done.map((c) => c.bytesWritten)))} of full size ${formatBytes(median(done.map((c) => c.fullSize)))}, ` +
      `reused ${formatBytes(median(done.map((c) => c.bytesReused)))}, files ${median(done.map((c) => c.fileCount))}`,
    `    per subtask: sync median ${ms(median(subtasks.map((s) => s.syncDurationMs ?? 0)))}, async median ${ms(median(subtasks.map((s) => s.asyncDurationMs ?? 0)))}, ` +
      // Only the keyed subtasks align (one input channel per source subtask); sources and forward-fed sinks report 0.
      `alignment median ${ms(median(aligning.map((s) => s.alignmentDurationMs ?? 0)))}, max ${ms(max(aligning.map((s) => s.alignmentDurationMs ?? 0)))} (keyed subtasks)` +
      `${subtasks.some((s) => s.syncDurationMs !== undefined) ? '' : ' (the runtime reports no durations)'}`,
  ];
}

function sameOutput(a: readonly CountOutput[], b: readonly CountOutput[]): boolean {
  if (a.length !== b.length) return false;
  const canon = (xs: readonly CountOutput[]) => xs.map((o) => `${o.key}\u0000${o.count}\u0000${o.sum}`).sort();
  const x = canon(a);
  const y = canon(b);
  return x.every((v, i) => v === y[i]);
}

function formatBytes(b: number): string {
  if (b < 1024) return `${b} B`;
  if (b < 1024 * 1024) return `${(b / 1024).toFixed(1)} KiB`;
  return `${(b / 1024 / 1024).toFixed(1)} MiB`;
}

export const USAGE =
  'usage: npm run demo -- [--backend memory|filesystem] [--records N] [--keys N] [--seed S] [--checkpoint-dir DIR] ' +
  '[--checkpoint-every N] [--parallelism P] [--recover-parallelism P] [--crash-at N]';

export function parseDemoArgs(argv: readonly string[]): DemoOptions {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      backend: { type: 'string' },
      records: { type: 'string' },
      keys: { type: 'string' },
      seed: { type: 'string' },
      'checkpoint-dir': { type: 'string' },
      'checkpoint-every': { type: 'string' },
      parallelism: { type: 'string' },
      'recover-parallelism': { type: 'string' },
      'crash-at': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) throw new StreamStateError('INVALID_ARGUMENT', USAGE);
  const int = (flag: string, v: string | undefined, fallback: number, min: number): number => {
    if (v === undefined) return fallback;
    const x = Number(v.replace(/_/g, ''));
    if (!Number.isSafeInteger(x) || x < min)
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `--${flag} must be an integer >= ${min}, got ${JSON.stringify(v)}.`,
      );
    return x;
  };
  const backend = values.backend ?? DEFAULT_DEMO_OPTIONS.backend;
  if (backend !== 'memory' && backend !== 'filesystem') {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `--backend must be memory or filesystem, got ${JSON.stringify(backend)}.`,
    );
  }
  const d = DEFAULT_DEMO_OPTIONS;
  const records = int('records', values.records, d.records, 1);
  const crashAt = values['crash-at'] === undefined ? undefined : int('crash-at', values['crash-at'], 1, 1);
  return {
    backend,
    records,
    keys: int('keys', values.keys, d.keys, 1),
    seed: int('seed', values.seed, d.seed, 0),
    checkpointDir: values['checkpoint-dir'] ?? d.checkpointDir,
    checkpointEvery: int('checkpoint-every', values['checkpoint-every'], d.checkpointEvery, 1),
    parallelism: int('parallelism', values.parallelism, d.parallelism, 1),
    recoverParallelism: int('recover-parallelism', values['recover-parallelism'], d.recoverParallelism, 1),
    ...(crashAt === undefined ? {} : { crashAt }),
  };
}

async function main(): Promise<void> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    console.log(USAGE);
    return;
  }
  let opts: DemoOptions;
  try {
    opts = parseDemoArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  const report = await runDemo(opts);
  for (const line of report.lines) console.log(line);
  process.exitCode = report.pass ? 0 : 1;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exitCode = 1;
  });
}
