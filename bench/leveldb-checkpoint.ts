/**
 * Checkpoint duration, synchronous pause and bytes written of the leveldb backend versus state
 * size: full (key-groups stream) versus native incremental, with 1% of the keys changed between
 * checkpoints; then restore time from the incremental checkpoint. Plain timing, results as JSON.
 *   node dist/bench/leveldb-checkpoint.js [--quick] [sizeMB ...]     (default 32 MB; e.g. 100 500 1000)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { leveldb, type LevelDbKeyedStateBackend } from '../backends/leveldb/index.js';
import type { KeyedStateBackend, RestoreSource, StateBackend } from '../src/backend/contract.js';
import { referencedFiles, type KeyedStateHandle } from '../src/backend/handles.js';
import { localCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import { bytesSerializer } from '../src/serializers/builtins.js';
import { valueState } from '../src/state/descriptors.js';
import { parseBenchArgs, printTable, recordResults } from './lib/bench.js';
import { singleSubtask } from './lib/workload.js';

const { quick, args } = parseBenchArgs();
const sizesMb = args.length > 0 ? args.map(Number) : [quick ? 8 : 32];
const VALUE_BYTES = 1000;
const JOB = 'bench';
const vd = valueState<Uint8Array>('v', { serializer: bytesSerializer });

interface Measured {
  readonly pauseMs: number;
  readonly totalMs: number;
  readonly bytes: number;
  readonly handle: KeyedStateHandle;
}

function keyed(backend: StateBackend, restore?: RestoreSource<KeyedStateHandle>): Promise<KeyedStateBackend<string>> {
  return backend.createKeyedStateBackend(singleSubtask(JOB, restore));
}

/**
 * Writes keys [from, to) with the given stride. Yields to the event loop every 1000 updates, as a
 * runtime does between input batches, so the write buffer drains in the background as it would
 * during a checkpoint interval (without yields, the whole change would wait for the snapshot's
 * synchronous part).
 */
async function fill(
  kb: KeyedStateBackend<string>,
  from: number,
  to: number,
  stride: number,
  round: number,
): Promise<void> {
  const v = kb.getState(vd);
  const value = Buffer.alloc(VALUE_BYTES);
  let n = 0;
  for (let i = from; i < to; i += stride) {
    // Incompressible-ish values so table files are about the state size.
    value.writeUInt32BE(i, 0);
    value.writeUInt32BE(round, 4);
    for (let j = 8; j < VALUE_BYTES; j += 4) value.writeUInt32BE((Math.imul(i + j, 2654435761) ^ round) >>> 0, j);
    kb.setCurrentKey(`key-${i}`);
    v.update(value);
    if (++n % 1000 === 0) await new Promise((r) => setImmediate(r));
  }
}

/** Bytes this checkpoint wrote: files not referenced by the previous checkpoint's handle. */
function newBytes(handle: KeyedStateHandle, previous: KeyedStateHandle | null): number {
  const before = new Set(previous ? referencedFiles(previous).map((f) => f.path) : []);
  let n = 0;
  for (const f of referencedFiles(handle)) if (!before.has(f.path)) n += f.size;
  return n;
}

async function measure(
  kb: KeyedStateBackend<string>,
  storage: ReturnType<typeof localCheckpointStorage>,
  id: number,
  previous: KeyedStateHandle | null,
): Promise<Measured> {
  const t0 = performance.now();
  const task = await kb.snapshot(id, { type: 'checkpoint', streams: storage.checkpointStreams(JOB, id) });
  const t1 = performance.now();
  const handle = await task.done;
  const t2 = performance.now();
  if (handle === null) throw new Error('empty snapshot');
  await kb.notifyCheckpointComplete(id);
  return { pauseMs: t1 - t0, totalMs: t2 - t0, bytes: newBytes(handle, previous), handle };
}

/** Temp roots still on disk: removed on exit and on Ctrl-C too. */
const roots = new Set<string>();
process.on('exit', () => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});
process.on('SIGINT', () => process.exit(130));

const rows: Record<string, string | number>[] = [];
const records: unknown[] = [];
for (const mb of sizesMb) {
  const numKeys = Math.round((mb * 1024 * 1024) / VALUE_BYTES);
  for (const incremental of [false, true]) {
    const root = mkdtempSync(join(tmpdir(), 'streamstate-bench-chk-'));
    roots.add(root);
    let kb: KeyedStateBackend<string> | null = null;
    try {
      const storage = localCheckpointStorage(join(root, 'checkpoints'), { inlineThreshold: 0 });
      const backend = leveldb({ workingDir: join(root, 'work'), incremental });
      kb = await keyed(backend);
      const tFill = performance.now();
      await fill(kb, 0, numKeys, 1, 0);
      await (kb as LevelDbKeyedStateBackend<string>).flush();
      const fillMs = performance.now() - tFill;
      // Steady state: let LevelDB finish compacting the bulk load before measuring (not timed).
      await (kb as LevelDbKeyedStateBackend<string>).db.compactRange(Buffer.from([0]), Buffer.from([0xff, 0xff, 0xff]));
      const first = await measure(kb, storage, 1, null);
      await fill(kb, 0, numKeys, 100, 1); // 1% of the keys change
      const second = await measure(kb, storage, 2, first.handle);
      let restoreMs = NaN;
      // Restore from the second checkpoint (through the storage's reader, as a job restart would).
      {
        const pointer = storage.checkpointPointer(JOB, 2);
        await storage.writeMetadata(pointer, {
          checkpointId: 2,
          jobId: JOB,
          kind: 'checkpoint',
          format: 'native',
          backend: 'leveldb',
          timestamp: Date.now(),
          operators: [
            {
              operatorId: 'op',
              parallelism: 1,
              maxParallelism: 128,
              subtasks: [{ subtaskIndex: 0, keyed: [second.handle], operator: [] }],
            },
          ],
        });
        const resolved = await storage.resolve(pointer);
        const t = performance.now();
        const r = await keyed(backend, {
          handles: [second.handle],
          files: resolved.files,
          mode: 'claim',
          checkpointId: 2,
        });
        restoreMs = performance.now() - t;
        await r.close();
      }
      await kb.close();
      const mode = incremental ? 'incremental' : 'full';
      const rec = { stateMb: mb, numKeys, mode, fillMs, first, second: { ...second, handle: undefined }, restoreMs };
      records.push({ ...rec, first: { ...first, handle: undefined } });
      rows.push(
        {
          state: `${mb} MB`,
          mode,
          checkpoint: 'first',
          'sync pause ms': first.pauseMs.toFixed(1),
          'total ms': first.totalMs.toFixed(0),
          'MB written': (first.bytes / 1048576).toFixed(2),
          'restore ms': '',
        },
        {
          state: `${mb} MB`,
          mode,
          checkpoint: 'after 1% change',
          'sync pause ms': second.pauseMs.toFixed(1),
          'total ms': second.totalMs.toFixed(0),
          'MB written': (second.bytes / 1048576).toFixed(2),
          'restore ms': restoreMs.toFixed(0),
        },
      );
    } finally {
      await kb?.close().catch(() => undefined);
      rmSync(root, { recursive: true, force: true });
      roots.delete(root);
    }
  }
}
printTable(rows);
// The target: an incremental checkpoint after a 1% change writes at most 5% of the bytes of a full one.
const summary = sizesMb.map((mb) => {
  const of = (mode: string) =>
    records.find(
      (r) => (r as { stateMb: number; mode: string }).stateMb === mb && (r as { mode: string }).mode === mode,
    ) as { second: { bytes: number; pauseMs: number } } | undefined;
  const full = of('full');
  const inc = of('incremental');
  const pct = full && inc ? (inc.second.bytes / full.second.bytes) * 100 : NaN;
  return {
    stateMb: mb,
    incrementalVsFullBytesPct: Number(pct.toFixed(2)),
    incrementalPauseMs: inc ? Number(inc.second.pauseMs.toFixed(1)) : NaN,
  };
});
for (const s of summary)
  console.log(
    `${s.stateMb} MB: incremental after 1% change wrote ${s.incrementalVsFullBytesPct}% of a full checkpoint's bytes; sync pause ${s.incrementalPauseMs} ms`,
  );
recordResults('leveldbCheckpoint', { quick, valueBytes: VALUE_BYTES, runs: records, summary });
