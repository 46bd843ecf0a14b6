/**
 * Does a changelog checkpoint cost follow the rate of change rather than the state size? (Issue 4
 * target: checkpoint duration within 2x across 10 MB ... 1 GB at a fixed change rate.)
 *
 * One changelog(filesystem) job per state size, all loaded and materialized up front and alive in
 * the same process, then checkpointed round-robin: each round changes the same number of keys in
 * every job and checkpoints them one after another, in a rotating order. Machine load, GC of the
 * whole heap and disk cache state therefore hit every size alike, which a size-by-size sweep
 * (checkpoint-sizes.ts) cannot promise on a shared machine. Reports the median and p90 per size
 * and the spread (largest median / smallest median).
 *   node dist/bench/changelog-scaling.js [--quick] [sizeMB ...]   (default 10 32 100 320 1000; quick 10 40)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { filesystem } from '../backends/filesystem/index.js';
import { changelog, type ChangelogKeyedStateBackend } from '../src/changelog/index.js';
import type { BlobCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import { bytesSerializer } from '../src/serializers/builtins.js';
import { valueState } from '../src/state/descriptors.js';
import { median, parseBenchArgs, percentile, printTable, recordResults } from './lib/bench.js';
import { Checkpointer, incompressibleValue, singleSubtask, xorshift, yieldToIo } from './lib/workload.js';

const { quick, args } = parseBenchArgs();
const sizesMb = args.length > 0 ? args.map(Number) : quick ? [10, 40] : [10, 32, 100, 320, 1000];
const VALUE_BYTES = 1000;
/** Keys changed per interval in every job (about 1 MB of values), as in checkpoint-sizes.ts. */
const CHANGES = 1000;
const ROUNDS = quick ? 10 : 40;
const JOB = 'bench-scaling';
const vd = valueState<Uint8Array>('v', { serializer: bytesSerializer });

interface Job {
  readonly sizeMb: number;
  readonly keys: number;
  readonly names: string[];
  readonly dir: string;
  readonly kb: ChangelogKeyedStateBackend<string>;
  readonly cp: Checkpointer;
  readonly random: () => number;
  readonly durations: number[];
  readonly bytes: number[];
}

async function openJob(sizeMb: number): Promise<Job> {
  const dir = mkdtempSync(join(tmpdir(), 'streamstate-bench-scaling-'));
  const plain = filesystem({ checkpointDir: join(dir, 'checkpoints'), inlineThreshold: 0 });
  const backend = changelog({ backend: plain, materializationIntervalMs: Number.POSITIVE_INFINITY });
  const kb = await backend.createKeyedStateBackend(singleSubtask(JOB));
  const keys = Math.max(CHANGES, Math.round((sizeMb * 1024 * 1024) / VALUE_BYTES));
  const names = Array.from({ length: keys }, (_, i) => `key-${i}`);
  const v = kb.getState(vd);
  for (let i = 0; i < keys; i++) {
    kb.setCurrentKey(names[i]);
    v.update(incompressibleValue(i, 0, VALUE_BYTES));
    if (i % 5000 === 4999) await yieldToIo();
  }
  const cp = new Checkpointer(kb, plain.checkpointStorage as BlobCheckpointStorage, JOB);
  // Not measured: materialize the load, then one checkpoint on it (truncates the load's log).
  kb.requestMaterialization();
  await cp.take();
  await kb.awaitMaterialization();
  await cp.take();
  return { sizeMb, keys, names, dir, kb, cp, random: xorshift(sizeMb * 1000 + 17), durations: [], bytes: [] };
}

async function change(job: Job, round: number): Promise<void> {
  const v = job.kb.getState(vd);
  for (let c = 0; c < CHANGES; c++) {
    const i = Math.floor(job.random() * job.keys);
    job.kb.setCurrentKey(job.names[i]);
    v.update(incompressibleValue(i, round, VALUE_BYTES));
    if (c % 1000 === 999) await yieldToIo();
  }
}

const jobs: Job[] = [];
for (const mb of sizesMb) {
  const t = performance.now();
  jobs.push(await openJob(mb));
  console.log(`loaded and materialized ${mb} MB in ${((performance.now() - t) / 1000).toFixed(1)} s`);
}
globalThis.gc?.();

// One unmeasured round warms up the JIT for every job.
for (let round = 0; round <= ROUNDS; round++) {
  for (let j = 0; j < jobs.length; j++) {
    const job = jobs[(j + round) % jobs.length];
    await change(job, round + 1);
    const r = await job.cp.take();
    if (round === 0) continue;
    job.durations.push(r.ms);
    job.bytes.push(r.bytes);
  }
}

const rows = jobs.map((job) => ({
  stateMB: job.sizeMb,
  keys: job.keys,
  checkpoints: job.durations.length,
  medianMs: +median(job.durations).toFixed(2),
  p90Ms: +percentile(job.durations, 90).toFixed(2),
  maxMs: +Math.max(...job.durations).toFixed(2),
  medianBytes: Math.round(median(job.bytes)),
}));
const medians = rows.map((r) => r.medianMs);
const spread = Math.max(...medians) / Math.min(...medians);
printTable(rows.map((r) => ({ ...r, medianMB: (r.medianBytes / 1048576).toFixed(2) })));
console.log(
  `changelog checkpoint duration spread across ${sizesMb.join('/')} MB (${CHANGES} changed keys per interval): ${spread.toFixed(2)}x (target <= 2x)`,
);
recordResults('changelogScaling', {
  quick,
  valueBytes: VALUE_BYTES,
  changesPerCheckpoint: CHANGES,
  rounds: ROUNDS,
  sizesMb,
  rows,
  spread: +spread.toFixed(3),
  within2x: spread <= 2,
  durationsMs: Object.fromEntries(jobs.map((j) => [j.sizeMb, j.durations.map((d) => +d.toFixed(2))])),
});

for (const job of jobs) {
  await job.kb.close();
  rmSync(job.dir, { recursive: true, force: true });
}
