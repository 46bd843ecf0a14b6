/**
 * What users feel while a checkpoint runs: records/s and event-loop delay of a keyed processing
 * loop (a read and an update per record, yielding to the event loop every 1,000 records, as a
 * runtime does between input batches) with no checkpoint in flight versus during a checkpoint's
 * asynchronous part, for every backend and for changelog materialization; checkpoint duration and
 * garbage-collection time alongside. Rounds alternate idle / during on the same state, medians.
 *   node dist/bench/processing-during-checkpoint.js [--quick] [--size=MB] [--rounds=N] [--backends=a,b] [--batch=1000]
 *     [--cpu-share=0.15] [--max-slice-ms=4]   (heap snapshot slicing; max-slice-ms=Infinity: unsliced)
 * backends: memory, filesystem, leveldb, changelog-checkpoint, changelog-materialization.
 * Default 100 MB of state (quick: 20 MB), 3 rounds; `--size=1000` is the issue's 1 GB point.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks';
import { HeapStateBackend } from '../backends/heap/index.js';
import type { SnapshotSlicing } from '../backends/heap/index.js';
import { leveldb } from '../backends/leveldb/index.js';
import type { KeyedStateBackend, SnapshotOptions, StateBackend } from '../src/backend/contract.js';
import { presetStorage, withCheckpointStorage } from '../src/backend/preset.js';
import { changelog, type ChangelogKeyedStateBackend } from '../src/changelog/index.js';
import { localCheckpointStorage, memoryCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import { bytesSerializer } from '../src/serializers/builtins.js';
import { valueState } from '../src/state/descriptors.js';
import { median, printTable, recordResults } from './lib/bench.js';
import { incompressibleValue, singleSubtask, yieldToIo } from './lib/workload.js';

const argv = process.argv.slice(2);
const option = (name: string): string | undefined =>
  argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const quick = argv.includes('--quick');
const sizeMb = Number(option('size') ?? (quick ? 20 : 100));
const rounds = Number(option('rounds') ?? (quick ? 2 : 3));
const ALL = ['memory', 'filesystem', 'leveldb', 'changelog-checkpoint', 'changelog-materialization'] as const;
type Variant = (typeof ALL)[number];
const slicing: SnapshotSlicing = {
  ...(option('cpu-share') !== undefined ? { cpuShare: Number(option('cpu-share')) } : {}),
  ...(option('max-slice-ms') !== undefined ? { maxSliceMs: Number(option('max-slice-ms')) } : {}),
};
const variants = (option('backends')?.split(',') ?? [...ALL]) as Variant[];
for (const v of variants) if (!ALL.includes(v)) throw new Error(`unknown backend ${v}; one of ${ALL.join(', ')}`);

const VALUE_BYTES = 200;
/** Records between two turns of the event loop (a runtime's input batch); the issue's figures use 1,000. */
const BATCH = Number(option('batch') ?? 1000);
if (!Number.isInteger(BATCH) || BATCH < 1)
  throw new Error(`--batch must be a positive integer, got ${option('batch')}`);
/** Length of an idle measuring window (ms); a checkpoint's window is its asynchronous part. */
const IDLE_MS = quick ? 1000 : 2500;
const keys = Math.max(10_000, Math.round((sizeMb * 1e6) / VALUE_BYTES));
const names = Array.from({ length: keys }, (_, i) => `key-${i}`);
const vd = valueState<Uint8Array>('v', { serializer: bytesSerializer });
/** Values the processing loop writes: a small set, so the loop measures state access, not allocation. */
const updates = Array.from({ length: 1024 }, (_, i) => incompressibleValue(i, 1, VALUE_BYTES));

/** Collects the duration of every garbage collection while `active`. */
let gcMs = 0;
let gcActive = false;
new PerformanceObserver((list) => {
  if (gcActive) for (const e of list.getEntries()) gcMs += e.duration;
}).observe({ entryTypes: ['gc'] });

interface Window {
  readonly records: number;
  readonly ms: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly gcMs: number;
}

/**
 * Runs the processing loop until `until` resolves (or for `ms` when it is a number), measuring
 * records/s, event-loop delay (perf_hooks histogram at 1 ms resolution) and GC time.
 */
async function runLoop(kb: KeyedStateBackend<string>, until: Promise<unknown> | number, seed: number): Promise<Window> {
  const v = kb.getState(vd);
  let finished = false;
  if (typeof until !== 'number')
    until.then(
      () => (finished = true),
      () => (finished = true),
    );
  const h = monitorEventLoopDelay({ resolution: 1 });
  gcMs = 0;
  gcActive = true;
  h.enable();
  const t0 = performance.now();
  const stopAt = typeof until === 'number' ? t0 + until : Number.POSITIVE_INFINITY;
  let records = 0;
  let x = seed >>> 0 || 1;
  while (!finished && performance.now() < stopAt) {
    for (let j = 0; j < BATCH; j++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      const k = (x >>> 0) % keys;
      kb.setCurrentKey(names[k]);
      const old = v.value();
      v.update(updates[(k + (old === null ? 0 : old[0])) & 1023]);
    }
    records += BATCH;
    await yieldToIo();
  }
  const ms = performance.now() - t0;
  h.disable();
  gcActive = false;
  return { records, ms, p50: h.percentile(50) / 1e6, p99: h.percentile(99) / 1e6, max: h.max / 1e6, gcMs };
}

interface Setup {
  readonly backend: StateBackend;
  readonly dir: string;
  /** Starts one measured snapshot; resolves with the synchronous part done. */
  readonly snapshot: (kb: KeyedStateBackend<string>, id: number) => Promise<{ readonly done: Promise<unknown> }>;
}

/** The filesystem preset, with the slicing options of the command line. */
const heapOnDisk = (dir: string): StateBackend =>
  withCheckpointStorage(
    new HeapStateBackend({ name: 'filesystem', snapshotSlicing: slicing }),
    localCheckpointStorage(dir),
  );

function setup(variant: Variant): Setup {
  const dir = mkdtempSync(join(tmpdir(), 'ss-bench-pdc-'));
  const plain = (
    kb: KeyedStateBackend<string>,
    id: number,
    backend: StateBackend,
  ): Promise<{ readonly done: Promise<unknown> }> => {
    const options: SnapshotOptions = {
      type: 'checkpoint',
      streams: presetStorage(backend)!.checkpointStreams('bench', id),
    };
    return kb.snapshot(id, options);
  };
  switch (variant) {
    case 'memory': {
      const backend = withCheckpointStorage(
        new HeapStateBackend({ name: 'memory', snapshotSlicing: slicing }),
        memoryCheckpointStorage({ maxSnapshotBytes: 2 ** 32, name: `pdc-${Date.now()}` }),
      );
      return { backend, dir, snapshot: (kb, id) => plain(kb, id, backend) };
    }
    case 'filesystem': {
      const backend = heapOnDisk(dir);
      return { backend, dir, snapshot: (kb, id) => plain(kb, id, backend) };
    }
    case 'leveldb': {
      const backend = leveldb({ checkpointDir: join(dir, 'chk'), workingDir: join(dir, 'local') });
      return { backend, dir, snapshot: (kb, id) => plain(kb, id, backend) };
    }
    default: {
      const backend = changelog({ backend: heapOnDisk(dir), materializationIntervalMs: Number.POSITIVE_INFINITY });
      const materialize = variant === 'changelog-materialization';
      return {
        backend,
        dir,
        snapshot: (kb, id) => {
          if (materialize) (kb as ChangelogKeyedStateBackend<string>).requestMaterialization();
          return plain(kb, id, backend);
        },
      };
    }
  }
}

async function fill(kb: KeyedStateBackend<string>): Promise<void> {
  const v = kb.getState(vd);
  for (let i = 0; i < keys; i++) {
    kb.setCurrentKey(names[i]);
    v.update(incompressibleValue(i, 0, VALUE_BYTES));
    if (i % BATCH === BATCH - 1) await yieldToIo();
  }
}

const rows: Array<Record<string, string | number>> = [];
const raw: Record<string, unknown> = {};
for (const variant of variants) {
  const s = setup(variant);
  const kb = await s.backend.createKeyedStateBackend(singleSubtask('bench', undefined));
  const fillStart = performance.now();
  await fill(kb);
  const fillMs = performance.now() - fillStart;
  let id = 1;
  // Warm-up: one checkpoint (a changelog's first one materializes), not measured.
  if (variant.startsWith('changelog')) (kb as ChangelogKeyedStateBackend<string>).requestMaterialization();
  await (await s.snapshot(kb, id)).done;
  if (variant.startsWith('changelog')) await (kb as ChangelogKeyedStateBackend<string>).awaitMaterialization();
  // As a runtime does once every subtask acknowledged: a changelog truncates what its base covers,
  // so the next checkpoint uploads only the changes since (without it, the whole history each time).
  await kb.notifyCheckpointComplete(id++);
  const retention = presetStorage(s.backend)!;
  const idle: Window[] = [];
  const during: Window[] = [];
  const durations: number[] = [];
  const pauses: number[] = [];
  for (let r = 0; r < rounds; r++) {
    idle.push(await runLoop(kb, IDLE_MS, 17 + r));
    const t0 = performance.now();
    const { done } = await s.snapshot(kb, id++);
    const t1 = performance.now();
    let ended = 0;
    const timed = done.then(() => (ended = performance.now()));
    during.push(await runLoop(kb, timed, 91 + r));
    await timed;
    if (variant === 'changelog-materialization')
      await (kb as ChangelogKeyedStateBackend<string>).awaitMaterialization();
    await kb.notifyCheckpointComplete(id - 1);
    // And, as one with numRetained 1, deletes the checkpoint before it (its exclusive files; a
    // memory store reuses their pages for the next checkpoint).
    await retention.discardCheckpointDirectory('bench', id - 2);
    pauses.push(t1 - t0);
    durations.push(ended - t0);
  }
  await kb.close();
  // A changelog's background uploads may still be ending: removing the directory is best effort.
  await yieldToIo();
  try {
    rmSync(s.dir, { recursive: true, force: true, maxRetries: 5 });
  } catch {
    // left in tmpdir
  }
  const rate = (w: Window): number => w.records / (w.ms / 1000);
  const idleRate = median(idle.map(rate));
  const duringRate = median(during.map(rate));
  const row = {
    backend: variant,
    'state MB': sizeMb,
    'records/s idle': Math.round(idleRate),
    'records/s during': Math.round(duringRate),
    'during/idle': `${((duringRate / idleRate) * 100).toFixed(0)}%`,
    'delay p50/p99/max idle ms': `${median(idle.map((w) => w.p50)).toFixed(1)}/${median(idle.map((w) => w.p99)).toFixed(1)}/${median(idle.map((w) => w.max)).toFixed(1)}`,
    'delay p50/p99/max during ms': `${median(during.map((w) => w.p50)).toFixed(1)}/${median(during.map((w) => w.p99)).toFixed(1)}/${median(during.map((w) => w.max)).toFixed(1)}`,
    'GC share idle/during': `${(median(idle.map((w) => w.gcMs / w.ms)) * 100) | 0}%/${(median(during.map((w) => w.gcMs / w.ms)) * 100) | 0}%`,
    'checkpoint s': (median(durations) / 1000).toFixed(2),
    'pause ms': median(pauses).toFixed(1),
  };
  console.log(JSON.stringify(row));
  rows.push(row);
  raw[variant] = { keys, fillMs, idle, during, durations, pauses };
}
printTable(rows);
// Another batch size is a separate measurement: it does not replace the issue's figures.
recordResults(`processingDuringCheckpoint${sizeMb >= 1000 ? '1G' : ''}${BATCH === 1000 ? '' : `Batch${BATCH}`}`, {
  quick,
  sizeMb,
  batch: BATCH,
  slicing,
  keys,
  valueBytes: VALUE_BYTES,
  rounds,
  rows,
  raw,
});
