/**
 * Canonical savepoint throughput per backend, against a native full snapshot of the same state and
 * against serializing + writing the same entries raw (same stream factory, same run); restore
 * (read) throughput of the canonical savepoint; convert throughput memory -> leveldb.
 *   node dist/bench/savepoint-throughput.js [--quick] [sizeMB]      (default 64 MB; quick 8 MB)
 *   node dist/bench/savepoint-throughput.js --convert-only 1024       (the convert target: 1 GB memory -> leveldb)
 * Plain timing of whole operations (each the best of 2 runs); figures to bench/results/latest.json.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HeapStateBackend } from '../backends/heap/heap-state-backend.js';
import { leveldb } from '../backends/leveldb/index.js';
import type { KeyedStateBackend, RestoreSource, StateBackend } from '../src/backend/contract.js';
import type { KeyedStateHandle } from '../src/backend/handles.js';
import { backendByName, keySerializerOf } from '../src/cli/backends.js';
import { localCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import { ByteWriter } from '../src/format/bytes.js';
import { KeyGroupRange, keyGroupForKey } from '../src/keygroups/key-groups.js';
import { bytesSerializer, stringSerializer } from '../src/serializers/builtins.js';
import { convertSnapshot } from '../src/savepoint/convert.js';
import { streamBytes } from '../src/savepoint/inspect.js';
import { locateSnapshot } from '../src/savepoint/locate.js';
import { valueState } from '../src/state/descriptors.js';
import { parseBenchArgs, printTable, recordResults } from './lib/bench.js';

const { quick, args } = parseBenchArgs();
const sizeMb = args.length > 0 ? Number(args[0]) : quick ? 8 : 64;
const VALUE_BYTES = 200;
const MAXP = 128;
const JOB = 'bench';
const entries = Math.floor((sizeMb * 1024 * 1024) / (VALUE_BYTES + 12));
const vd = valueState<Uint8Array>('v', { serializer: bytesSerializer });
const root = mkdtempSync(join(tmpdir(), 'ss-bench-sp-'));
const storage = localCheckpointStorage(root, { inlineThreshold: 0 });

async function keyed(
  backend: StateBackend,
  restore?: RestoreSource<KeyedStateHandle>,
): Promise<KeyedStateBackend<string>> {
  return backend.createKeyedStateBackend({
    jobId: JOB,
    operatorId: 'op',
    subtaskIndex: 0,
    parallelism: 1,
    maxParallelism: MAXP,
    keyGroupRange: new KeyGroupRange(0, MAXP - 1),
    keySerializer: stringSerializer,
    ...(restore ? { restore } : {}),
  });
}

function valueFor(i: number, out: Buffer): Buffer {
  for (let j = 0; j < VALUE_BYTES; j += 4) out.writeUInt32BE((Math.imul(i + j, 2654435761) ^ j) >>> 0, j);
  return out;
}

async function fill(kb: KeyedStateBackend<string>): Promise<void> {
  const v = kb.getState(vd);
  const value = Buffer.alloc(VALUE_BYTES);
  for (let i = 0; i < entries; i++) {
    kb.setCurrentKey(`key-${i}`);
    v.update(valueFor(i, value));
  }
}

interface Timed {
  readonly ms: number;
  readonly bytes: number;
  readonly handle: KeyedStateHandle | null;
  readonly pointer: string;
}

async function snapshot(
  kb: KeyedStateBackend<string>,
  id: number,
  type: 'checkpoint' | 'savepoint',
  format: 'canonical' | 'native',
): Promise<Timed> {
  const { pointer, streams } = storage.createSavepointLocation(JOB);
  const t0 = performance.now();
  const task = await kb.snapshot(id, { type, format, full: true, streams });
  const handle = await task.done;
  const ms = performance.now() - t0;
  await storage.writeMetadata(pointer, {
    checkpointId: id,
    jobId: JOB,
    kind: 'savepoint',
    format,
    backend: 'memory',
    timestamp: Date.now(),
    operators: [
      {
        operatorId: 'op',
        parallelism: 1,
        maxParallelism: MAXP,
        subtasks: [{ subtaskIndex: 0, keyed: handle ? [handle] : [], operator: [] }],
      },
    ],
  });
  return { ms, bytes: streamBytes(handle), handle, pointer };
}

/** The same entries serialized and written raw (length-prefixed key group, key, value) through the same stream factory. */
async function rawWrite(): Promise<{ ms: number; bytes: number }> {
  const { streams } = storage.createSavepointLocation(JOB);
  const t0 = performance.now();
  const stream = streams.createOutputStream('exclusive');
  const w = new ByteWriter(2 * 1024 * 1024);
  const value = Buffer.alloc(VALUE_BYTES);
  for (let i = 0; i < entries; i++) {
    const key = `key-${i}`;
    w.u16(keyGroupForKey(key, stringSerializer, MAXP))
      .bytes(stringSerializer.serialize(key))
      .bytes(bytesSerializer.serialize(valueFor(i, value)));
    if (w.length >= 1024 * 1024) {
      await stream.write(w.toBuffer());
      w.reset();
    }
  }
  await stream.write(w.toBuffer());
  const h = await stream.closeAndGetHandle();
  return { ms: performance.now() - t0, bytes: h?.size ?? 0 };
}

async function readBack(backend: () => StateBackend, t: Timed): Promise<number> {
  const { files } = await storage.resolve(t.pointer);
  const t0 = performance.now();
  const kb = await keyed(backend(), { handles: t.handle ? [t.handle] : [], files });
  kb.getState(vd); // registration decodes what the heap kept raw
  const n = await kb.numEntries();
  const ms = performance.now() - t0;
  await kb.close();
  if (n !== entries) throw new Error(`restored ${n} of ${entries} entries`);
  return ms;
}

async function best<T extends { ms: number }>(fn: () => Promise<T>): Promise<T> {
  const a = await fn();
  const b = await fn();
  return a.ms <= b.ms ? a : b;
}

const mbps = (bytes: number, ms: number): number => Math.round((bytes / 1024 / 1024 / (ms / 1000)) * 10) / 10;
const eps = (ms: number): number => Math.round(entries / (ms / 1000));

async function main(): Promise<void> {
  console.log(
    `state: ${entries} entries of ${VALUE_BYTES} B values (~${sizeMb} MB), one subtask, maxParallelism ${MAXP}`,
  );
  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown> = { sizeMb, entries, valueBytes: VALUE_BYTES };
  const raw = await best(rawWrite);
  rows.push({
    backend: '-',
    what: 'raw serialize+write',
    ms: Math.round(raw.ms),
    'MB/s': mbps(raw.bytes, raw.ms),
    'entries/s': eps(raw.ms),
    'x native': '-',
  });
  results.raw = { ms: raw.ms, bytes: raw.bytes };
  let heapNativePointer = '';
  // The native full snapshot of each backend: the heap's savepoint (heap-v1 stream), LevelDB's
  // native savepoint (every table file uploaded) and LevelDB's full checkpoint (incremental: false).
  const backends: Array<[string, () => StateBackend, 'savepoint' | 'checkpoint']> = [
    ['memory', () => new HeapStateBackend({ name: 'memory' }), 'savepoint'],
    ['leveldb', () => leveldb({ workingDir: join(root, 'work') }), 'savepoint'],
    ['leveldb-full', () => leveldb({ workingDir: join(root, 'work'), incremental: false }), 'checkpoint'],
  ];
  let id = 1;
  for (const [name, make, nativeType] of backends) {
    const kb = await keyed(make());
    await fill(kb);
    const native = await best(() => snapshot(kb, id++, nativeType, 'native'));
    const canonical = await best(() => snapshot(kb, id++, 'savepoint', 'canonical'));
    await kb.close();
    if (name === 'memory') heapNativePointer = native.pointer;
    const readMs = Math.min(await readBack(make, canonical), await readBack(make, canonical));
    const nativeReadMs = Math.min(await readBack(make, native), await readBack(make, native));
    const ratio = Math.round((canonical.ms / native.ms) * 100) / 100;
    rows.push({
      backend: name,
      what: `native ${nativeType} write (${native.handle?.type})`,
      ms: Math.round(native.ms),
      'MB/s': mbps(native.bytes, native.ms),
      'entries/s': eps(native.ms),
      'x native': 1,
    });
    rows.push({
      backend: name,
      what: 'canonical savepoint write',
      ms: Math.round(canonical.ms),
      'MB/s': mbps(canonical.bytes, canonical.ms),
      'entries/s': eps(canonical.ms),
      'x native': ratio,
    });
    rows.push({
      backend: name,
      what: 'native restore',
      ms: Math.round(nativeReadMs),
      'MB/s': mbps(native.bytes, nativeReadMs),
      'entries/s': eps(nativeReadMs),
      'x native': 1,
    });
    rows.push({
      backend: name,
      what: 'canonical restore',
      ms: Math.round(readMs),
      'MB/s': mbps(canonical.bytes, readMs),
      'entries/s': eps(readMs),
      'x native': Math.round((readMs / nativeReadMs) * 100) / 100,
    });
    results[name] = {
      native: { ms: native.ms, bytes: native.bytes, handle: native.handle?.type, restoreMs: nativeReadMs },
      canonical: { ms: canonical.ms, bytes: canonical.bytes, restoreMs: readMs },
      canonicalOverNative: ratio,
    };
  }
  await convertToLeveldb(heapNativePointer, rows, results);
  printTable(rows);
  recordResults('savepoint-throughput', results);
}

/** Converts the heap native savepoint at `pointer` to leveldb savepoints, canonical and native. */
async function convertToLeveldb(
  pointer: string,
  rows: Record<string, string | number>[],
  results: Record<string, unknown>,
): Promise<void> {
  for (const format of ['canonical', 'native'] as const) {
    const src = await locateSnapshot(join(root, pointer));
    const dst = join(root, `converted-${format}`);
    const t0 = performance.now();
    const r = await convertSnapshot(src, dst, {
      target: 'leveldb',
      format,
      backendFor: backendByName,
      keySerializerOf,
    });
    const ms = performance.now() - t0;
    rows.push({
      backend: 'memory->leveldb',
      what: `convert (${format})`,
      ms: Math.round(ms),
      'MB/s': mbps(r.keyedBytes, ms),
      'entries/s': eps(ms),
      'x native': '-',
    });
    results[`convertMemoryToLeveldb_${format}`] = {
      ms,
      bytes: r.keyedBytes,
      secondsPerGB: Math.round(((ms / 1000) * 1024 * 1024 * 1024) / r.keyedBytes),
    };
    rmSync(dst, { recursive: true, force: true });
  }
}

/** Only the convert target at a large size: one memory backend, its native savepoint, both converts. */
async function convertOnly(): Promise<void> {
  console.log(`convert only: ${entries} entries of ${VALUE_BYTES} B values (~${sizeMb} MB)`);
  const kb = await keyed(new HeapStateBackend({ name: 'memory' }));
  await fill(kb);
  const native = await snapshot(kb, 1, 'savepoint', 'native');
  await kb.close();
  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown> = { sizeMb, entries, valueBytes: VALUE_BYTES, savepointBytes: native.bytes };
  await convertToLeveldb(native.pointer, rows, results);
  printTable(rows);
  recordResults('convertLarge', results);
}

(process.argv.includes('--convert-only') ? convertOnly() : main())
  .finally(() => rmSync(root, { recursive: true, force: true }))
  .catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
