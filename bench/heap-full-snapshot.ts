/**
 * Full heap snapshot and restore against the raw limit, in the same run: the filesystem backend's
 * full checkpoint (no processing running) versus msgpackr-encoding the same entries and writing
 * them with fsync; its restore (open + register the state, which decodes every entry) versus
 * reading that file, decoding it and filling a Map. Garbage-collection time of each from
 * PerformanceObserver 'gc' entries. Rounds alternate backend / baseline; medians.
 *   node --expose-gc dist/bench/heap-full-snapshot.js [--quick] [--size=MB] [--rounds=N]
 * Default 100 MB of state (quick: 20 MB), 3 rounds; `--size=1000` is the 1 GB point.
 */
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance, PerformanceObserver } from 'node:perf_hooks';
import { Packr, Unpackr } from 'msgpackr';
import { filesystem } from '../backends/filesystem/index.js';
import type { KeyedStateBackend } from '../src/backend/contract.js';
import type { KeyedStateHandle } from '../src/backend/handles.js';
import { localCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import { BlobStateFileReader } from '../src/checkpoint/streams.js';
import { bytesSerializer } from '../src/serializers/builtins.js';
import { valueState } from '../src/state/descriptors.js';
import { median, printTable, recordResults } from './lib/bench.js';
import { incompressibleValue, singleSubtask } from './lib/workload.js';

const argv = process.argv.slice(2);
const option = (name: string): string | undefined =>
  argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const quick = argv.includes('--quick');
const sizeMb = Number(option('size') ?? (quick ? 20 : 100));
const rounds = Number(option('rounds') ?? (quick ? 2 : 3));
const VALUE_BYTES = 200;
const keys = Math.max(10_000, Math.round((sizeMb * 1e6) / VALUE_BYTES));
const names = Array.from({ length: keys }, (_, i) => `key-${i}`);
const vd = valueState<Uint8Array>('v', { serializer: bytesSerializer });

let gcMs = 0;
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) gcMs += e.duration;
}).observe({ entryTypes: ['gc'] });
const collect = (): void => (globalThis as { gc?: () => void }).gc?.();
const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 50));

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number; gcMs: number }> {
  collect();
  // GC entries reach the observer a little later: let the forced collection's arrive first.
  await settle();
  gcMs = 0;
  const t0 = performance.now();
  const value = await fn();
  const ms = performance.now() - t0;
  await settle();
  return { value, ms, gcMs };
}

const dir = mkdtempSync(join(tmpdir(), 'ss-bench-full-'));
const backend = filesystem({ checkpointDir: join(dir, 'chk'), inlineThreshold: 0 });
const storage = localCheckpointStorage(join(dir, 'chk'), { inlineThreshold: 0 });
const kb = await backend.createKeyedStateBackend(singleSubtask('bench'));
const values: Buffer[] = new Array(keys);
{
  const v = kb.getState(vd);
  for (let i = 0; i < keys; i++) {
    values[i] = incompressibleValue(i, 0, VALUE_BYTES);
    kb.setCurrentKey(names[i]);
    v.update(values[i]);
  }
}

/** The raw limit of writing: msgpackr-encode [key, value] per entry into 1 MiB chunks, write, fsync. */
function rawWrite(file: string): number {
  const packr = new Packr({ useRecords: false });
  const fd = openSync(file, 'w');
  const chunk = Buffer.allocUnsafe(1 << 20);
  let at = 0;
  let bytes = 0;
  for (let i = 0; i < keys; i++) {
    const b = packr.pack([names[i], values[i]]);
    if (at + b.length > chunk.length) {
      writeSync(fd, chunk, 0, at);
      bytes += at;
      at = 0;
    }
    chunk.set(b, at);
    at += b.length;
  }
  writeSync(fd, chunk, 0, at);
  bytes += at;
  fsyncSync(fd);
  closeSync(fd);
  return bytes;
}

/** The raw limit of restoring: read the file, decode every entry, fill a Map. */
function rawRead(file: string): number {
  const data = readFileSync(file);
  const unpackr = new Unpackr({ useRecords: false });
  const map = new Map<string, Uint8Array>();
  unpackr.unpackMultiple(data, (e: unknown) => {
    const [k, v] = e as [string, Uint8Array];
    map.set(k, v);
  });
  return map.size;
}

let id = 1;
async function checkpoint(): Promise<{ handle: KeyedStateHandle; id: number }> {
  const my = id++;
  const task = await kb.snapshot(my, { type: 'checkpoint', streams: storage.checkpointStreams('bench', my) });
  const handle = await task.done;
  if (handle === null) throw new Error('empty snapshot');
  return { handle, id: my };
}

async function restore(c: { handle: KeyedStateHandle; id: number }): Promise<KeyedStateBackend<string>> {
  const files = new BlobStateFileReader(storage.store, storage.checkpointPointer('bench', c.id));
  const r = await backend.createKeyedStateBackend(
    singleSubtask('bench', { handles: [c.handle], files, checkpointId: c.id }),
  );
  r.getState(vd); // registering decodes the restored entries
  return r;
}

const snap: number[] = [];
const snapGc: number[] = [];
const rawW: number[] = [];
const rawWGc: number[] = [];
const rest: number[] = [];
const restGc: number[] = [];
const rawR: number[] = [];
const rawRGc: number[] = [];
let snapshotBytes = 0;
let rawBytes = 0;
const rawFile = join(dir, 'raw.msgpack');
for (let r = 0; r < rounds; r++) {
  const s = await timed(checkpoint);
  snap.push(s.ms);
  snapGc.push(s.gcMs);
  const h = s.value.handle;
  snapshotBytes =
    'stream' in h && h.stream !== null && typeof h.stream === 'object' && 'size' in h.stream
      ? Number(h.stream.size)
      : 0;
  const w = await timed(async () => rawWrite(rawFile));
  rawW.push(w.ms);
  rawWGc.push(w.gcMs);
  rawBytes = w.value;
  const rr = await timed(() => restore(s.value));
  rest.push(rr.ms);
  restGc.push(rr.gcMs);
  await rr.value.close();
  const rb = await timed(async () => rawRead(rawFile));
  rawR.push(rb.ms);
  rawRGc.push(rb.gcMs);
  rmSync(join(dir, 'chk'), { recursive: true, force: true });
}
await kb.close();
rmSync(dir, { recursive: true, force: true });

const mbps = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000);
const rows = [
  {
    what: 'full snapshot (filesystem)',
    'state MB': sizeMb,
    'file MB': (snapshotBytes / 1e6).toFixed(0),
    'MB/s': mbps(snapshotBytes, median(snap)).toFixed(0),
    'raw MB/s': mbps(rawBytes, median(rawW)).toFixed(0),
    'of raw': `${((mbps(snapshotBytes, median(snap)) / mbps(rawBytes, median(rawW))) * 100).toFixed(0)}%`,
    'GC ms (share)': `${median(snapGc).toFixed(0)} (${((median(snapGc) / median(snap)) * 100).toFixed(0)}%)`,
    'raw GC ms': median(rawWGc).toFixed(0),
  },
  {
    what: 'restore (filesystem)',
    'state MB': sizeMb,
    'file MB': (snapshotBytes / 1e6).toFixed(0),
    'MB/s': mbps(snapshotBytes, median(rest)).toFixed(0),
    'raw MB/s': mbps(rawBytes, median(rawR)).toFixed(0),
    'of raw': `${((mbps(snapshotBytes, median(rest)) / mbps(rawBytes, median(rawR))) * 100).toFixed(0)}%`,
    'GC ms (share)': `${median(restGc).toFixed(0)} (${((median(restGc) / median(rest)) * 100).toFixed(0)}%)`,
    'raw GC ms': median(rawRGc).toFixed(0),
  },
];
printTable(rows);
recordResults(`heapFullSnapshot${sizeMb >= 1000 ? '1G' : ''}`, {
  quick,
  sizeMb,
  keys,
  valueBytes: VALUE_BYTES,
  rounds,
  rows,
  raw: { snap, snapGc, rawW, rawWGc, rest, restGc, rawR, rawRGc, snapshotBytes, rawBytes },
});
