import { memory } from '../backends/memory/index.js';
import { memoryCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import { countingInput, countingJob, runPipeline, type CheckpointingModeOptions } from '../src/testing/index.js';
import { median, parseBenchArgs, printTable, recordResults } from './lib/bench.js';

/**
 * Why unaligned checkpoints exist, in numbers: checkpoint duration under backpressure. The
 * reference runtime runs the counting job with a slow sink (it reads on every SLOW_SINK-th
 * scheduling step), so every channel fills to its capacity N and the keyed operator and the
 * sources wait: a backlog of N records per channel. An aligned barrier queues behind that backlog;
 * an unaligned one overtakes it and stores it as channel state. For several N, aligned and
 * unaligned runs alternate (same input, same seed); per run the median duration of its
 * checkpoints (the coordinator's trigger-to-last-acknowledgement, from _metadata stats; the final
 * checkpoint at the end of the input is always aligned and left out), the same in scheduling steps
 * (the runtime's deterministic clock: how much of the backlog had to move first) and the
 * channel-state bytes written per checkpoint; medians over rounds. Aligned is the baseline of the
 * same run.
 *
 *   node dist/bench/unaligned.js [--quick]
 *
 * Part of `npm run bench` (suite `unaligned`); its rows are the report's "Unaligned checkpoints" section.
 */
const opts = parseBenchArgs();
const BACKLOGS = opts.quick ? [16, 64, 256] : [16, 64, 256, 1024, 4096];
const ROUNDS = opts.quick ? 2 : 5;
const RECORDS = opts.quick ? 4000 : 24_000;
const CHECKPOINTS = 6;
const SLOW_SINK = 8;
const MODES: Record<'aligned' | 'unaligned', CheckpointingModeOptions> = {
  aligned: {},
  unaligned: { unaligned: true },
};

interface RunFigures {
  readonly durationMs: number;
  /** Scheduling steps from the first barrier to completion: the runtime's deterministic clock. */
  readonly durationSteps: number;
  readonly channelBytes: number;
  readonly checkpoints: number;
  readonly wallMs: number;
}

const input = countingInput({ records: RECORDS, keys: 200, partitions: 4, seed: 17 });

async function runOnce(backlog: number, mode: CheckpointingModeOptions): Promise<RunFigures> {
  const storage = memoryCheckpointStorage({ maxSnapshotBytes: 256 * 1024 * 1024 });
  const firstBarrier = new Map<number, number>();
  const completedAt = new Map<number, number>();
  const t0 = performance.now();
  const result = await runPipeline(countingJob(input, { parallelism: 2, sourceParallelism: 2, jobId: 'bench' }), {
    backend: memory(),
    checkpointStorage: storage,
    checkpointEvery: Math.floor(RECORDS / CHECKPOINTS),
    channelCapacity: backlog,
    slowSink: SLOW_SINK,
    seed: 3,
    numRetainedCheckpoints: 100,
    checkpointingMode: mode,
    onEvent: (e) => {
      if (e.type === 'barrier' && !firstBarrier.has(e.checkpointId)) firstBarrier.set(e.checkpointId, e.step);
      else if (e.type === 'checkpoint-completed') completedAt.set(e.checkpointId, e.step);
    },
  });
  const wallMs = performance.now() - t0;
  const durations: number[] = [];
  const steps: number[] = [];
  const bytes: number[] = [];
  // The last one is the final, always aligned checkpoint at the end of the input.
  for (const c of result.checkpointsCompleted.slice(0, -1)) {
    const { metadata } = await storage.resolve(c.pointer);
    if (metadata.stats) durations.push(metadata.stats.durationMs);
    steps.push((completedAt.get(c.checkpointId) ?? 0) - (firstBarrier.get(c.checkpointId) ?? 0));
    let b = 0;
    for (const op of metadata.operators) for (const s of op.subtasks) if (s.channel) b += s.channel.stream.size;
    bytes.push(b);
  }
  return {
    durationMs: median(durations),
    durationSteps: median(steps),
    channelBytes: median(bytes),
    checkpoints: durations.length,
    wallMs,
  };
}

// Warm-up (JIT, first allocations), not measured.
await runOnce(BACKLOGS[0], MODES.aligned);
await runOnce(BACKLOGS[0], MODES.unaligned);

const rows: Array<Record<string, string | number>> = [];
const raw: Array<Record<string, unknown>> = [];
for (const backlog of BACKLOGS) {
  const figures: Record<'aligned' | 'unaligned', RunFigures[]> = { aligned: [], unaligned: [] };
  for (let round = 0; round < ROUNDS; round++) {
    // Alternate which mode goes first, so that both see the same machine state.
    const order = round % 2 === 0 ? (['aligned', 'unaligned'] as const) : (['unaligned', 'aligned'] as const);
    for (const mode of order) figures[mode].push(await runOnce(backlog, MODES[mode]));
  }
  const med = (mode: 'aligned' | 'unaligned', f: keyof RunFigures) => median(figures[mode].map((x) => x[f]));
  const aligned = med('aligned', 'durationMs');
  const unaligned = med('unaligned', 'durationMs');
  rows.push({
    'backlog N (records per channel)': backlog,
    'aligned checkpoint ms': aligned.toFixed(1),
    'unaligned checkpoint ms': unaligned.toFixed(1),
    'aligned / unaligned': unaligned > 0 ? (aligned / unaligned).toFixed(1) : 'n/a',
    'checkpoint steps aligned / unaligned': `${med('aligned', 'durationSteps')} / ${med('unaligned', 'durationSteps')}`,
    'channel state bytes per checkpoint (unaligned)': Math.round(med('unaligned', 'channelBytes')),
    'channel state bytes (aligned)': Math.round(med('aligned', 'channelBytes')),
    'job wall ms aligned / unaligned': `${med('aligned', 'wallMs').toFixed(0)} / ${med('unaligned', 'wallMs').toFixed(0)}`,
  });
  raw.push({ backlog, aligned: figures.aligned, unaligned: figures.unaligned });
}

printTable(rows);
recordResults('unaligned', {
  quick: opts.quick,
  records: RECORDS,
  slowSink: SLOW_SINK,
  rounds: ROUNDS,
  rows,
  raw,
});
