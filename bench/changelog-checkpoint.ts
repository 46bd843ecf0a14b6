/**
 * What the changelog's materialization interval trades: checkpoint bytes against recovery time.
 * changelog(filesystem), 1% of the keys changed per checkpoint interval, same data in every run.
 *  - interval: materializing every M checkpoints (M = 1, 5, 10, 20, never): checkpoint duration
 *    (median, p99), bytes written per checkpoint with the materializations amortized, write
 *    amplification (bytes written / bytes of logical changes);
 *  - recovery: restore time (open + replay of the log) from a checkpoint K intervals after the last
 *    materialization, K = 0 ... 40: the recovery cost a materialization interval of ~K bounds.
 * Plain timing of whole operations; results to bench/results/latest.json.
 *   node dist/bench/changelog-checkpoint.js [--quick] [sizeMB]     (default 100 MB; quick 10 MB)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { filesystem } from '../backends/filesystem/index.js';
import type { KeyedBackendParams, RestoreSource } from '../src/backend/contract.js';
import { referencedFiles, type KeyedStateHandle } from '../src/backend/handles.js';
import { changelog, type ChangelogKeyedStateBackend } from '../src/changelog/index.js';
import type { BlobCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import { bytesSerializer } from '../src/serializers/builtins.js';
import { valueState } from '../src/state/descriptors.js';
import { consume, median, parseBenchArgs, percentile, printTable, recordResults, sink } from './lib/bench.js';
import { incompressibleValue, singleSubtask, yieldToIo } from './lib/workload.js';

const { quick, args } = parseBenchArgs();
const sizeMb = args.length > 0 ? Number(args[0]) : quick ? 10 : 100;
const VALUE_BYTES = 1000;
const CHANGE_RATE = 0.01;
const INTERVALS: number[] = quick ? [1, 5, 10, Number.POSITIVE_INFINITY] : [1, 5, 10, 20, Number.POSITIVE_INFINITY];
const CHECKPOINTS = quick ? 20 : 40;
const RECOVERY_POINTS: number[] = quick ? [0, 5, 10, 20] : [0, 5, 10, 20, 40];
const JOB = 'bench-changelog';
const vd = valueState<Uint8Array>('v', { serializer: bytesSerializer });
const keys = Math.max(1000, Math.round((sizeMb * 1024 * 1024) / VALUE_BYTES));
const names = Array.from({ length: keys }, (_, i) => `key-${i}`);
const changes = Math.max(1, Math.round(keys * CHANGE_RATE));

const valueFor = (i: number, round: number): Buffer => incompressibleValue(i, round, VALUE_BYTES);
const params = (restore?: RestoreSource<KeyedStateHandle>): KeyedBackendParams<string> => singleSubtask(JOB, restore);

interface Job {
  readonly dir: string;
  readonly storage: BlobCheckpointStorage;
  readonly kb: ChangelogKeyedStateBackend<string>;
  readonly backend: ReturnType<typeof changelog>;
  nextId: number;
  round: number;
  previousFiles: Set<string>;
  logical: number;
}

async function openJob(): Promise<Job> {
  const dir = mkdtempSync(join(tmpdir(), 'streamstate-bench-cl-'));
  const plain = filesystem({ checkpointDir: dir, inlineThreshold: 0 });
  const backend = changelog({ backend: plain, materializationIntervalMs: Number.POSITIVE_INFINITY });
  const kb = await backend.createKeyedStateBackend(params());
  const v = kb.getState(vd);
  for (let i = 0; i < keys; i++) {
    kb.setCurrentKey(names[i]);
    v.update(valueFor(i, 0));
    if (i % 5000 === 4999) await yieldToIo();
  }
  const job: Job = {
    dir,
    storage: plain.checkpointStorage as BlobCheckpointStorage,
    kb,
    backend,
    nextId: 1,
    round: 0,
    previousFiles: new Set(),
    logical: 0,
  };
  // Warm-up (not measured): materialize the loaded state, then one checkpoint on it.
  kb.requestMaterialization();
  await checkpoint(job);
  await kb.awaitMaterialization();
  await checkpoint(job);
  return job;
}

function change(job: Job): Promise<void> {
  job.round++;
  const v = job.kb.getState(vd);
  return (async () => {
    for (let c = 0; c < changes; c++) {
      const i = (Math.imul(c + 1, 2654435761) + Math.imul(job.round, 40503)) >>> 0;
      const k = i % keys;
      job.kb.setCurrentKey(names[k]);
      v.update(valueFor(k, job.round));
      job.logical += names[k].length + VALUE_BYTES;
      if (c % 1000 === 999) await yieldToIo();
    }
  })();
}

interface Taken {
  readonly id: number;
  readonly ms: number;
  readonly bytes: number;
  readonly handle: KeyedStateHandle;
}

async function checkpoint(job: Job): Promise<Taken> {
  const id = job.nextId++;
  const t0 = performance.now();
  const task = await job.kb.snapshot(id, { type: 'checkpoint', streams: job.storage.checkpointStreams(JOB, id) });
  const handle = await task.done;
  const ms = performance.now() - t0;
  if (handle === null) throw new Error(`checkpoint ${id} produced no handle`);
  // A materialization started by this checkpoint finishes in the background; its files are
  // counted in the first checkpoint that references them.
  await job.kb.awaitMaterialization();
  await job.kb.notifyCheckpointComplete(id);
  const pointer = job.storage.checkpointPointer(JOB, id);
  const files = new Set<string>();
  let bytes = 0;
  for (const f of referencedFiles(handle)) {
    const key = posix.normalize(`${pointer}/${f.path}`);
    files.add(key);
    if (!job.previousFiles.has(key)) bytes += f.size;
  }
  job.previousFiles = files;
  return { id, ms, bytes, handle };
}

async function closeJob(job: Job): Promise<void> {
  await job.kb.close();
  rmSync(job.dir, { recursive: true, force: true });
}

// ---- materialization interval: bytes and duration per checkpoint
const intervalRows: Array<Record<string, string | number>> = [];
const intervalResults: unknown[] = [];
for (const every of INTERVALS) {
  const job = await openJob();
  const durations: number[] = [];
  const bytes: number[] = [];
  const logicalBefore = job.logical;
  for (let n = 1; n <= CHECKPOINTS; n++) {
    await change(job);
    if (Number.isFinite(every) && n % every === 0) job.kb.requestMaterialization();
    const t = await checkpoint(job);
    durations.push(t.ms);
    bytes.push(t.bytes);
  }
  const meanBytes = bytes.reduce((s, x) => s + x, 0) / bytes.length;
  const logicalPerCp = (job.logical - logicalBefore) / CHECKPOINTS;
  const label = Number.isFinite(every) ? String(every) : 'never';
  intervalResults.push({
    materializeEvery: label,
    checkpoints: CHECKPOINTS,
    medianMs: +median(durations).toFixed(2),
    p99Ms: +percentile(durations, 99).toFixed(2),
    meanBytesPerCheckpoint: Math.round(meanBytes),
    logicalChangeBytes: Math.round(logicalPerCp),
    writeAmplification: +(meanBytes / logicalPerCp).toFixed(3),
  });
  intervalRows.push({
    'materialize every': label,
    'median ms': median(durations).toFixed(1),
    'p99 ms': percentile(durations, 99).toFixed(1),
    'MB/cp (amortized)': (meanBytes / 1048576).toFixed(2),
    'write amplification': (meanBytes / logicalPerCp).toFixed(2),
  });
  await closeJob(job);
}

// ---- recovery time versus log length since the last materialization
const recoveryResults: Array<{ intervalsSinceMaterialization: number; restoreMs: number; logMB: number }> = [];
{
  const job = await openJob();
  const saved = new Map<number, Taken>();
  const maxK = Math.max(...RECOVERY_POINTS);
  const logBytes = new Map<number, number>();
  let sinceMaterialization = 0;
  for (let k = 0; k <= maxK; k++) {
    if (k > 0) await change(job);
    const t = await checkpoint(job);
    if (k > 0) sinceMaterialization += t.bytes;
    if (RECOVERY_POINTS.includes(k)) {
      saved.set(k, t);
      logBytes.set(k, sinceMaterialization);
    }
  }
  for (const k of RECOVERY_POINTS) {
    const t = saved.get(k)!;
    const pointer = job.storage.checkpointPointer(JOB, t.id);
    await job.storage.writeMetadata(pointer, {
      checkpointId: t.id,
      jobId: JOB,
      kind: 'checkpoint',
      format: 'native',
      backend: job.backend.name,
      timestamp: Date.now(),
      operators: [
        {
          operatorId: 'op',
          parallelism: 1,
          maxParallelism: 128,
          subtasks: [{ subtaskIndex: 0, keyed: [t.handle], operator: [] }],
        },
      ],
    });
    const samples: number[] = [];
    for (let s = 0; s < (quick ? 2 : 3); s++) {
      const { files } = await job.storage.resolve(pointer);
      const started = performance.now();
      const restored = await job.backend.createKeyedStateBackend(
        params({ handles: [t.handle], files, mode: 'no-claim', checkpointId: t.id }),
      );
      const v = restored.getState(vd); // registration replays the log into the restored state
      restored.setCurrentKey(names[keys - 1]);
      consume(v.value()?.length);
      samples.push(performance.now() - started);
      await restored.close();
    }
    recoveryResults.push({
      intervalsSinceMaterialization: k,
      restoreMs: +median(samples).toFixed(1),
      logMB: +((logBytes.get(k) ?? 0) / 1048576).toFixed(2),
    });
  }
  await closeJob(job);
}

console.log(
  `changelog(filesystem), ${sizeMb} MB (${keys} keys x ${VALUE_BYTES} B), ${changes} changed keys per checkpoint, ${CHECKPOINTS} checkpoints`,
);
printTable(intervalRows);
printTable(
  recoveryResults.map((r) => ({
    'intervals of log since materialization': r.intervalsSinceMaterialization,
    'log MB': r.logMB.toFixed(1),
    'restore ms': r.restoreMs.toFixed(0),
  })),
);
recordResults('changelog-checkpoint', {
  quick,
  stateMB: sizeMb,
  keys,
  valueBytes: VALUE_BYTES,
  changeRate: CHANGE_RATE,
  changesPerCheckpoint: changes,
  intervals: intervalResults,
  recovery: recoveryResults,
});
console.log(`(sink ${sink.value})`);
