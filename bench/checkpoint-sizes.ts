/**
 * Checkpoint duration (median, p99) and bytes written per checkpoint versus state size, for
 *   - full:                 heap filesystem preset, every checkpoint writes the whole state;
 *   - leveldb-incremental:  leveldb backend, uploads only new table files (+ the write-ahead log);
 *   - changelog:            changelog(filesystem), materialized once after the load, then log only
 *                           (the cost of later materializations is in changelog-checkpoint.ts);
 * under two change patterns between checkpoints:
 *   - fixed: the same number of changed keys per interval at every state size (target: changelog
 *            checkpoint duration within 2x across the whole size range);
 *   - rate:  1% of the keys change per interval (target: changelog bytes per checkpoint <= 2% of a
 *            full snapshot).
 * Write amplification = bytes written to checkpoint storage / bytes of the logical changes (keys +
 * values written by the job in that interval). Plain timing of whole checkpoints, JSON results.
 *   node dist/bench/checkpoint-sizes.js [--quick] [--variants=full,leveldb-incremental,changelog] [sizeMB ...]
 *   (default: every variant; sizes 10 32 100 320 1000, quick 10 40)
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { filesystem } from '../backends/filesystem/index.js';
import { leveldb, type LevelDbKeyedStateBackend } from '../backends/leveldb/index.js';
import type { StateBackend } from '../src/backend/contract.js';
import { changelog, type ChangelogKeyedStateBackend } from '../src/changelog/index.js';
import { localCheckpointStorage, type BlobCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import { bytesSerializer } from '../src/serializers/builtins.js';
import { valueState, type ValueStateDescriptor } from '../src/state/descriptors.js';
import { median, parseBenchArgs, percentile, printTable, recordResults } from './lib/bench.js';
import { Checkpointer, incompressibleValue, singleSubtask, xorshift, yieldToIo } from './lib/workload.js';

const { quick, args } = parseBenchArgs();
const sizesMb = args.length > 0 ? args.map(Number) : quick ? [10, 40] : [10, 32, 100, 320, 1000];
const VALUE_BYTES = 1000;
/** Changed keys per interval in the `fixed` pattern (about 1 MB of values), whatever the state size. */
const FIXED_CHANGES = 1000;
const CHANGE_RATE = 0.01;
/** Checkpoints per series: cheap series take MAX, expensive ones stop once past the time budget. */
const MAX_CHECKPOINTS = quick ? 20 : 50;
const MIN_CHECKPOINTS = quick ? 5 : 10;
const SERIES_BUDGET_MS = quick ? 2_000 : 60_000;
const JOB = 'bench-sizes';
const vd: ValueStateDescriptor<Uint8Array> = valueState<Uint8Array>('v', { serializer: bytesSerializer });

export type Variant = 'full' | 'leveldb-incremental' | 'changelog';
export type Pattern = 'fixed' | 'rate';
const allVariants: Variant[] = ['full', 'leveldb-incremental', 'changelog'];
/** `--variants=a,b` runs some of them (the full variant is needed for the "of full" columns). */
const variantsArg = process.argv.find((a) => a.startsWith('--variants='));
const variants: Variant[] =
  variantsArg === undefined
    ? allVariants
    : allVariants.filter((v) => variantsArg.slice('--variants='.length).split(',').includes(v));

export interface SeriesResult {
  readonly variant: Variant;
  readonly pattern: Pattern;
  readonly stateMB: number;
  readonly keys: number;
  readonly changesPerCheckpoint: number;
  readonly checkpoints: number;
  readonly medianMs: number;
  readonly p99Ms: number;
  readonly medianPauseMs: number;
  readonly meanBytesPerCheckpoint: number;
  readonly medianBytesPerCheckpoint: number;
  readonly logicalChangeBytes: number;
  readonly writeAmplification: number;
  readonly durationsMs: number[];
  readonly bytes: number[];
}

const valueFor = (i: number, round: number): Buffer => incompressibleValue(i, round, VALUE_BYTES);

interface Setup {
  readonly backend: StateBackend;
  readonly storage: BlobCheckpointStorage;
}

function setup(variant: Variant, dir: string): Setup {
  const storage = localCheckpointStorage(join(dir, 'checkpoints'), { inlineThreshold: 0 });
  if (variant === 'leveldb-incremental')
    return { backend: leveldb({ workingDir: join(dir, 'work'), incremental: true }), storage };
  const plain = filesystem({ checkpointDir: join(dir, 'checkpoints'), inlineThreshold: 0 });
  const fsStorage = plain.checkpointStorage as BlobCheckpointStorage;
  if (variant === 'full') return { backend: plain, storage: fsStorage };
  // Materialization only when requested (after the load); the log is what the checkpoints carry.
  return {
    backend: changelog({ backend: plain, materializationIntervalMs: Number.POSITIVE_INFINITY }),
    storage: fsStorage,
  };
}

async function series(variant: Variant, sizeMb: number): Promise<SeriesResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'streamstate-bench-sizes-'));
  const { backend, storage } = setup(variant, dir);
  const kb = await backend.createKeyedStateBackend<string>(singleSubtask(JOB));
  try {
    const keys = Math.max(1000, Math.round((sizeMb * 1024 * 1024) / VALUE_BYTES));
    const names = Array.from({ length: keys }, (_, i) => `key-${i}`);
    const v = kb.getState(vd);
    for (let i = 0; i < keys; i++) {
      kb.setCurrentKey(names[i]);
      v.update(valueFor(i, 0));
      if (i % 5000 === 4999) await yieldToIo();
    }
    if (variant === 'leveldb-incremental') {
      const lk = kb as LevelDbKeyedStateBackend<string>;
      await lk.flush();
      // Steady state: LevelDB finishes compacting the bulk load before anything is measured.
      await lk.db.compactRange(Buffer.from([0]), Buffer.from([0xff, 0xff, 0xff]));
    }
    if (variant === 'changelog') (kb as ChangelogKeyedStateBackend<string>).requestMaterialization();
    const cp = new Checkpointer(kb, storage, JOB);
    // Warm-up, not measured: the first checkpoint uploads the whole state in every variant.
    await cp.take();
    if (variant === 'changelog') {
      await (kb as ChangelogKeyedStateBackend<string>).awaitMaterialization();
      await cp.take(); // the first checkpoint on the finished materialization: truncates the load's log
    }
    const random = xorshift(sizeMb * 1000 + 17);
    const results: SeriesResult[] = [];
    let round = 1;
    for (const pattern of ['fixed', 'rate'] as const) {
      const changes = pattern === 'fixed' ? FIXED_CHANGES : Math.max(1, Math.round(keys * CHANGE_RATE));
      const durations: number[] = [];
      const pauses: number[] = [];
      const bytes: number[] = [];
      let logical = 0;
      let spent = 0;
      for (let n = 0; n < MAX_CHECKPOINTS && (n < MIN_CHECKPOINTS || spent < SERIES_BUDGET_MS); n++) {
        round++;
        for (let c = 0; c < changes; c++) {
          const i = Math.floor(random() * keys);
          kb.setCurrentKey(names[i]);
          v.update(valueFor(i, round));
          logical += names[i].length + VALUE_BYTES;
          // The job keeps running between checkpoints: background uploads get the event loop.
          if (c % 1000 === 999) await yieldToIo();
        }
        const r = await cp.take();
        durations.push(r.ms);
        pauses.push(r.pauseMs);
        bytes.push(r.bytes);
        spent += r.ms;
      }
      const meanBytes = bytes.reduce((s, x) => s + x, 0) / bytes.length;
      const logicalPerCp = logical / bytes.length;
      results.push({
        variant,
        pattern,
        stateMB: sizeMb,
        keys,
        changesPerCheckpoint: changes,
        checkpoints: durations.length,
        medianMs: +median(durations).toFixed(2),
        p99Ms: +percentile(durations, 99).toFixed(2),
        medianPauseMs: +median(pauses).toFixed(2),
        meanBytesPerCheckpoint: Math.round(meanBytes),
        medianBytesPerCheckpoint: Math.round(median(bytes)),
        logicalChangeBytes: Math.round(logicalPerCp),
        writeAmplification: +(meanBytes / logicalPerCp).toFixed(3),
        durationsMs: durations.map((d) => +d.toFixed(2)),
        bytes,
      });
    }
    return results;
  } finally {
    await kb.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

// JIT warm-up on a small state (discarded), so the first measured series is not the slow one.
for (const variant of variants) await series(variant, 2);

/** Raw baseline: the bytes of a full snapshot of this size written sequentially (1 MiB writes) + fsync. */
async function rawSequentialWrite(bytes: number): Promise<{ bytes: number; ms: number; MBps: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'streamstate-bench-raw-'));
  const block = randomBytes(1024 * 1024);
  try {
    const t = performance.now();
    const fh = await open(join(dir, 'raw.bin'), 'w');
    for (let written = 0; written < bytes; written += block.length)
      await fh.write(block, 0, Math.min(block.length, bytes - written));
    await fh.sync();
    await fh.close();
    const ms = performance.now() - t;
    return { bytes, ms: +ms.toFixed(1), MBps: Math.round(bytes / 1048576 / (ms / 1000)) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const all: SeriesResult[] = [];
const rawWrites: Array<{ stateMB: number; bytes: number; ms: number; MBps: number }> = [];
for (const mb of sizesMb) {
  for (const variant of variants) {
    const started = performance.now();
    const rs = await series(variant, mb);
    all.push(...rs);
    console.log(`${variant} ${mb} MB: ${((performance.now() - started) / 1000).toFixed(1)} s`);
    globalThis.gc?.();
  }
  const fullRun = all.find((r) => r.variant === 'full' && r.stateMB === mb && r.pattern === 'rate');
  if (fullRun !== undefined)
    rawWrites.push({ stateMB: mb, ...(await rawSequentialWrite(fullRun.meanBytesPerCheckpoint)) });
}

const fullBytes = (mb: number, pattern: Pattern): number =>
  all.find((r) => r.variant === 'full' && r.stateMB === mb && r.pattern === pattern)?.meanBytesPerCheckpoint ??
  Number.NaN;
printTable(
  all.map((r) => ({
    variant: r.variant,
    pattern: r.pattern === 'fixed' ? `fixed ${r.changesPerCheckpoint}` : `1% (${r.changesPerCheckpoint})`,
    stateMB: r.stateMB,
    n: r.checkpoints,
    medianMs: r.medianMs.toFixed(1),
    p99Ms: r.p99Ms.toFixed(1),
    'MB/cp': (r.meanBytesPerCheckpoint / 1048576).toFixed(2),
    'vs full': `${((100 * r.meanBytesPerCheckpoint) / fullBytes(r.stateMB, r.pattern)).toFixed(2)}%`,
    WA: r.writeAmplification.toFixed(2),
  })),
);
printTable(
  rawWrites.map((w) => {
    const full = all.find((r) => r.variant === 'full' && r.stateMB === w.stateMB && r.pattern === 'rate')!;
    const fullMBps = w.bytes / 1048576 / (full.medianMs / 1000);
    return {
      stateMB: w.stateMB,
      'full checkpoint MB/s': fullMBps.toFixed(0),
      'raw sequential write MB/s': w.MBps,
      ratio: `${((100 * fullMBps) / w.MBps).toFixed(0)}%`,
    };
  }),
);

// The two targets, evaluated on this run.
const cl = (p: Pattern) => all.filter((r) => r.variant === 'changelog' && r.pattern === p);
const fixedMs = cl('fixed').map((r) => r.medianMs);
const durationSpread = Math.max(...fixedMs) / Math.min(...fixedMs);
const worstBytesShare = Math.max(...cl('rate').map((r) => r.meanBytesPerCheckpoint / fullBytes(r.stateMB, 'rate')));
const targets = {
  changelogDurationSpread: +durationSpread.toFixed(3),
  changelogDurationWithin2x: durationSpread <= 2,
  changelogWorstBytesShareOfFull: +worstBytesShare.toFixed(5),
  changelogBytesWithin2Pct: worstBytesShare <= 0.02,
};
console.log(
  `changelog duration spread across ${sizesMb.join('/')} MB (fixed ${FIXED_CHANGES} changes): ${durationSpread.toFixed(2)}x (target <= 2x); ` +
    `worst bytes per checkpoint at 1% change: ${(100 * worstBytesShare).toFixed(2)}% of full (target <= 2%)`,
);
recordResults('checkpointSizes', {
  quick,
  valueBytes: VALUE_BYTES,
  fixedChanges: FIXED_CHANGES,
  changeRate: CHANGE_RATE,
  sizesMb,
  targets,
  rawWrites,
  series: all,
});
