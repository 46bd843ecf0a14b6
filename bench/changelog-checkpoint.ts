/**
 * Checkpoint duration (median, p99) and bytes written per checkpoint versus state size at a fixed
 * 1% change rate: changelog(filesystem) versus the full heap snapshots of filesystem, same run,
 * same data. Changelog runs twice: without materialization (pure log) and materializing every
 * 10th checkpoint (its bytes amortized over all checkpoints). Plain timing, results as JSON.
 *   node dist/bench/changelog-checkpoint.js [--quick] [sizeMB ...]     (default 4 16; e.g. 10 100 1000)
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { filesystem } from '../backends/filesystem/index.js';
import type { KeyedStateBackend, StateBackend } from '../src/backend/contract.js';
import { referencedFiles } from '../src/backend/handles.js';
import { changelog, type ChangelogKeyedStateBackend } from '../src/changelog/index.js';
import { KeyGroupRange } from '../src/keygroups/key-groups.js';
import { bytesSerializer, stringSerializer } from '../src/serializers/builtins.js';
import { valueState } from '../src/state/descriptors.js';
import { median, parseBenchArgs, percentile, printTable, recordResults } from './lib/bench.js';

const { quick, args } = parseBenchArgs();
const sizesMb = args.length > 0 ? args.map(Number) : quick ? [2] : [4, 16];
const VALUE_BYTES = 100;
const CHANGE_RATE = 0.01;
const CHECKPOINTS = quick ? 12 : 30;
const JOB = 'bench-changelog';
const vd = valueState<Uint8Array>('v', { serializer: bytesSerializer });

type Variant = 'full' | 'changelog' | 'changelog+mat/10';

async function run(variant: Variant, sizeMb: number): Promise<Record<string, string | number>> {
  const dir = mkdtempSync(join(tmpdir(), 'streamstate-bench-cl-'));
  try {
    const plain = filesystem({ checkpointDir: dir, inlineThreshold: 0 });
    const backend: StateBackend = variant === 'full' ? plain : changelog({ backend: plain, materializationIntervalMs: Number.POSITIVE_INFINITY });
    const storage = plain.checkpointStorage!;
    const b: KeyedStateBackend<string> = await backend.createKeyedStateBackend({
      jobId: JOB,
      operatorId: 'op',
      subtaskIndex: 0,
      parallelism: 1,
      maxParallelism: 128,
      keyGroupRange: new KeyGroupRange(0, 127),
      keySerializer: stringSerializer,
    });
    const keys = Math.max(100, Math.floor((sizeMb * 1024 * 1024) / (VALUE_BYTES + 16)));
    const v = b.getState(vd);
    const payload = randomBytes(VALUE_BYTES);
    for (let i = 0; i < keys; i++) {
      b.setCurrentKey(`key-${i}`);
      v.update(payload);
    }
    const seen = new Set<string>();
    const durations: number[] = [];
    const bytes: number[] = [];
    for (let cp = 1; cp <= CHECKPOINTS + 1; cp++) {
      // 1% of the keys change between checkpoints.
      const changes = Math.max(1, Math.floor(keys * CHANGE_RATE));
      for (let i = 0; i < changes; i++) {
        b.setCurrentKey(`key-${Math.floor(Math.random() * keys)}`);
        v.update(randomBytes(VALUE_BYTES));
      }
      if (variant === 'changelog+mat/10' && cp % 10 === 0) (b as ChangelogKeyedStateBackend<string>).requestMaterialization();
      const started = performance.now();
      const task = await b.snapshot(cp, { type: 'checkpoint', streams: storage.checkpointStreams(JOB, cp) });
      const handle = await task.done;
      const ms = performance.now() - started;
      if (variant !== 'full') await (b as ChangelogKeyedStateBackend<string>).awaitMaterialization();
      await b.notifyCheckpointComplete(cp);
      let written = 0;
      for (const f of referencedFiles(handle)) {
        const id = f.path.replace(/^\.\.\//, '').replace(/^chk-\d+\//, '');
        if (seen.has(`${cp}:${f.path}`) || seen.has(id)) continue;
        seen.add(id);
        written += f.size;
      }
      // Warm-up: the changelog's first checkpoint holds the initial load in its log. (A
      // materialization's files are counted in the first checkpoint that references them.)
      if (cp === 1) continue;
      durations.push(ms);
      bytes.push(written);
    }
    await b.close();
    const meanBytes = bytes.reduce((s, x) => s + x, 0) / bytes.length;
    return {
      variant,
      stateMB: sizeMb,
      keys,
      medianMs: +median(durations).toFixed(2),
      p99Ms: +percentile(durations, 99).toFixed(2),
      meanBytesPerCp: Math.round(meanBytes),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const rows: Record<string, string | number>[] = [];
for (const mb of sizesMb) {
  const full = await run('full', mb);
  const cl = await run('changelog', mb);
  const clm = await run('changelog+mat/10', mb);
  const base = Number(full.meanBytesPerCp);
  for (const r of [full, cl, clm]) {
    rows.push({ ...r, fullSnapshotBytes: base, bytesVsFull: `${((100 * Number(r.meanBytesPerCp)) / base).toFixed(2)}%`, msVsFull: `${(Number(r.medianMs) / Number(full.medianMs)).toFixed(3)}x` });
  }
}
printTable(rows);
recordResults('changelog-checkpoint', { changeRate: CHANGE_RATE, valueBytes: VALUE_BYTES, checkpoints: CHECKPOINTS, rows });
