/**
 * The synchronous pause of a heap snapshot (from snapshot() to the resolution of its promise) versus
 * state size, plus the asynchronous part's duration and bytes, on the filesystem preset.
 * Baselines from the same run: copying the same number of entries into a new Map (what a
 * copy-in-the-pause design would cost) and writing the same number of bytes raw to a file.
 *   node dist/bench/snapshot-pause.js [--quick] [sizes,comma,separated]
 */
import { mkdtempSync, rmSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { KeyGroupRange, float64Serializer, stringSerializer, valueState } from '../src/index.js';
import { filesystem } from '../backends/filesystem/index.js';
import { median, parseBenchArgs, printTable, recordResults } from './lib/bench.js';

const { quick, args } = parseBenchArgs();
const sizes = args[0] ? args[0].split(',').map(Number) : quick ? [100_000, 300_000] : [100_000, 1_000_000, 3_000_000];
const snapshotsPerSize = quick ? 3 : 5;
const rows: Array<Record<string, string | number>> = [];
const raw: unknown[] = [];

for (const n of sizes) {
  const dir = mkdtempSync(join(tmpdir(), 'ss-bench-pause-'));
  const backend = filesystem({ checkpointDir: dir });
  const storage = backend.checkpointStorage!;
  const kb = await backend.createKeyedStateBackend({
    jobId: 'bench',
    operatorId: 'op',
    subtaskIndex: 0,
    parallelism: 1,
    maxParallelism: 128,
    keyGroupRange: new KeyGroupRange(0, 127),
    keySerializer: stringSerializer,
  });
  const v = kb.getState(valueState<number>('count', { serializer: float64Serializer }));
  const keys = Array.from({ length: n }, (_, i) => `key-${i}`);
  for (const k of keys) {
    kb.setCurrentKey(k);
    v.update(1);
  }

  const pauses: number[] = [];
  const asyncMs: number[] = [];
  let bytes = 0;
  for (let s = 1; s <= snapshotsPerSize; s++) {
    // touch 1% of the keys between snapshots, like a running job
    for (let j = 0; j < n / 100; j++) {
      kb.setCurrentKey(keys[(j * 97 + s) % n]);
      v.update(s);
    }
    const t0 = performance.now();
    const task = await kb.snapshot(s, { type: 'checkpoint', streams: storage.checkpointStreams('bench', s) });
    const t1 = performance.now();
    // keep writing while the async part runs, as the runtime would
    for (let j = 0; j < 1000; j++) {
      kb.setCurrentKey(keys[j]);
      v.update(-s);
    }
    const handle = await task.done;
    const t2 = performance.now();
    pauses.push(t1 - t0);
    asyncMs.push(t2 - t1);
    bytes =
      handle && 'stream' in handle && handle.stream && typeof handle.stream === 'object' && 'size' in handle.stream
        ? Number(handle.stream.size)
        : 0;
  }
  await kb.close();

  // baselines in the same run
  const copyStart = performance.now();
  const copy = new Map<string, number>();
  for (const k of keys) copy.set(k, 1);
  const copyMs = performance.now() - copyStart;
  const rawFile = join(dir, 'raw.bin');
  const buf = Buffer.alloc(Math.max(bytes, 1), 7);
  const w0 = performance.now();
  writeFileSync(rawFile, buf);
  const fd = openSync(rawFile, 'r+');
  fsyncSync(fd);
  closeSync(fd);
  const rawWriteMs = performance.now() - w0;
  rmSync(dir, { recursive: true, force: true });

  const row = {
    entries: n,
    'pause median ms': median(pauses).toFixed(3),
    'pause max ms': Math.max(...pauses).toFixed(3),
    'async median ms': median(asyncMs).toFixed(0),
    'snapshot MB': (bytes / 1e6).toFixed(1),
    'async MB/s': (bytes / 1e6 / (median(asyncMs) / 1000)).toFixed(0),
    'raw write MB/s': (bytes / 1e6 / (rawWriteMs / 1000)).toFixed(0),
    'Map copy ms (baseline)': copyMs.toFixed(0),
  };
  rows.push(row);
  raw.push({ n, pauses, asyncMs, bytes, copyMs, rawWriteMs, copySize: copy.size });
}
printTable(rows);
recordResults('snapshotPauseHeap', { quick, rows, raw });
