/**
 * A LevelDB checkpoint's upload to local storage, idle versus while a keyed loop processes records
 * (yielding to the event loop every 1,000 records), in the same run: the upload as it is now
 * (BlobStore.putFile: table files hard-linked, other files copied, on a worker thread) and as it
 * was (every file streamed through the main thread with putStream, 1 MiB chunks). Every checkpoint
 * is full (no reuse), so each uploads the whole state. Rounds alternate the four cases; medians.
 *   node dist/bench/upload-under-load.js [--quick] [--put-file-only] [stateMB]   (default 400 MB; quick 48 MB)
 * --put-file-only skips the streaming path (most of the run's time), to compare builds quickly.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { LevelDbKeyedStateBackend } from '../backends/leveldb/backend.js';
import { isIncrementalHandle } from '../backends/leveldb/incremental-snapshot.js';
import type { CheckpointStreamFactory } from '../src/backend/contract.js';
import { BlobCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import { bytesSerializer } from '../src/serializers/builtins.js';
import { valueState } from '../src/state/descriptors.js';
import { ForwardingBlobStore } from '../src/storage/forwarding-blob-store.js';
import { LocalBlobStore } from '../src/storage/local-blob-store.js';
import { median, parseBenchArgs, printTable, recordResults } from './lib/bench.js';
import { incompressibleValue, singleSubtask, xorshift, yieldToIo } from './lib/workload.js';

const { quick, args } = parseBenchArgs();
const stateMb = Number(args[0] ?? (quick ? 48 : 400));
const rounds = quick ? 2 : 3;
const putFileOnly = process.argv.includes('--put-file-only');
const VALUE_BYTES = 1000;
const RECORDS_PER_YIELD = 1000;
const keys = Math.round((stateMb * 1024 * 1024) / (VALUE_BYTES + 20));
const vd = valueState<Uint8Array>('v', { serializer: bytesSerializer });

/** The old path: a subclass that watches putStream gets no putFile, so files stream through it. */
class StreamingOnly extends ForwardingBlobStore {
  override putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    return super.putStream(name, data);
  }
}

const root = mkdtempSync(join(tmpdir(), 'ss-bench-upload-'));
const kb = await LevelDbKeyedStateBackend.create(singleSubtask('bench'), { workingDir: join(root, 'work') });
const state = kb.getState(vd);

console.log(`filling ${keys} keys x ${VALUE_BYTES} B (~${stateMb} MB)...`);
for (let i = 0; i < keys; i++) {
  kb.setCurrentKey(`key-${i}`);
  state.update(incompressibleValue(i, 0, VALUE_BYTES));
  if (i % RECORDS_PER_YIELD === 0) await yieldToIo();
}
await kb.flush();

/** The keyed loop: reads and updates random keys, yielding every RECORDS_PER_YIELD records. */
function startLoad(): { stop: () => Promise<number> } {
  let running = true;
  let processed = 0;
  const rnd = xorshift(7);
  const value = incompressibleValue(1, 1, VALUE_BYTES);
  const done = (async () => {
    while (running) {
      for (let j = 0; j < RECORDS_PER_YIELD; j++) {
        kb.setCurrentKey(`key-${Math.floor(rnd() * keys)}`);
        const v = state.value();
        value[0] = v === null ? 0 : v[0];
        state.update(value);
      }
      processed += RECORDS_PER_YIELD;
      await yieldToIo();
    }
  })();
  return {
    stop: async () => {
      running = false;
      await done;
      return processed;
    },
  };
}

type Path = 'putFile' | 'stream';
interface Sample {
  /** The whole asynchronous part (write-buffer flush, linking, uploads). */
  readonly ms: number;
  /** The uploads alone. */
  readonly uploadMs: number;
  /** Before the first upload: the write buffer's flush to LevelDB, linking the files, the meta stream. */
  readonly prepareMs: number;
  readonly bytes: number;
  readonly recordsPerSec: number;
  readonly loopDelayP99Ms: number;
}

let nextId = 1;
async function checkpoint(path: Path, loaded: boolean): Promise<Sample> {
  const dir = join(root, `chk-${nextId}`);
  const local = new LocalBlobStore(dir);
  const storage = new BlobCheckpointStorage(path === 'putFile' ? local : new StreamingOnly(local), {
    inlineThreshold: 0,
  });
  const id = nextId++;
  const load = loaded ? startLoad() : null;
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const t0 = performance.now();
  // The upload window: from the first file upload's start to the last one's end.
  const inner = storage.checkpointStreams('bench', id);
  let first = Number.POSITIVE_INFINITY;
  let last = 0;
  const streams: CheckpointStreamFactory = {
    createOutputStream: (scope) => inner.createOutputStream(scope),
    discardFiles: (files) => inner.discardFiles(files),
    uploadFile: async (localPath, scope, name, opts) => {
      first = Math.min(first, performance.now());
      try {
        return await inner.uploadFile(localPath, scope, name, opts);
      } finally {
        last = performance.now();
      }
    },
  };
  const task = await kb.snapshot(id, { type: 'checkpoint', full: true, streams });
  const handle = await task.done;
  const ms = performance.now() - t0;
  const uploadMs = last - first;
  delay.disable();
  const processed = (await load?.stop()) ?? 0;
  if (handle === null || !isIncrementalHandle(handle)) throw new Error('expected an incremental handle');
  const bytes = [...handle.sharedFiles, ...handle.privateFiles].reduce((n, f) => n + f.handle.size, 0);
  await kb.notifyCheckpointAborted?.(id);
  rmSync(dir, { recursive: true, force: true });
  return {
    ms,
    uploadMs,
    prepareMs: first - t0,
    bytes,
    recordsPerSec: (processed / ms) * 1000,
    loopDelayP99Ms: delay.percentile(99) / 1e6,
  };
}

const allCases: Array<[Path, boolean]> = [
  ['putFile', false],
  ['putFile', true],
  ['stream', false],
  ['stream', true],
];
const cases = allCases.filter(([path]) => !putFileOnly || path === 'putFile');
const samples = new Map<string, Sample[]>(cases.map(([p, l]) => [`${p}/${l}`, []]));
for (let round = 0; round < rounds; round++) {
  // Alternate the order so that neither path always runs on a warmer cache.
  const order = round % 2 === 0 ? cases : [...cases].reverse();
  for (const [path, loaded] of order) {
    const s = await checkpoint(path, loaded);
    samples.get(`${path}/${loaded}`)!.push(s);
    console.log(
      `round ${round + 1}: ${path} ${loaded ? 'under load' : 'idle'}: upload ${s.uploadMs.toFixed(0)} ms of ${s.ms.toFixed(0)} ms, ${(s.bytes / 1e6).toFixed(0)} MB${loaded ? `, ${Math.round(s.recordsPerSec)} records/s` : ''}`,
    );
  }
}

const med = (path: Path, loaded: boolean, f: (s: Sample) => number): number =>
  median(samples.get(`${path}/${loaded}`)!.map(f));
const rows = (putFileOnly ? (['putFile'] as const) : (['putFile', 'stream'] as const)).map((path) => {
  const idle = med(path, false, (s) => s.uploadMs);
  const busy = med(path, true, (s) => s.uploadMs);
  const idleAll = med(path, false, (s) => s.ms);
  const busyAll = med(path, true, (s) => s.ms);
  return {
    upload: path === 'putFile' ? 'putFile (link/copy on a worker)' : 'putStream through the event loop (before)',
    MB: Math.round(med(path, false, (s) => s.bytes) / 1e6),
    'upload idle ms': Math.round(idle),
    'upload under load ms': Math.round(busy),
    'load / idle': `${(busy / idle).toFixed(2)}x`,
    'async part idle / under load ms': `${Math.round(idleAll)} / ${Math.round(busyAll)}`,
    'flush+link idle / under load ms': `${Math.round(med(path, false, (s) => s.prepareMs))} / ${Math.round(med(path, true, (s) => s.prepareMs))}`,
    'records/s during': Math.round(med(path, true, (s) => s.recordsPerSec)),
    'loop delay p99 ms': +med(path, true, (s) => s.loopDelayP99Ms).toFixed(1),
  };
});
console.log(
  `\nLevelDB checkpoint upload (full, ${stateMb} MB of state, local disk), medians of ${rounds} alternating rounds; load ${loadavg()[0].toFixed(1)}`,
);
printTable(rows);
// A partial run (--put-file-only) leaves the recorded results alone.
if (!putFileOnly)
  recordResults('upload-under-load', {
    stateMb,
    keys,
    valueBytes: VALUE_BYTES,
    rounds,
    recordsPerYield: RECORDS_PER_YIELD,
    rows,
    samples: Object.fromEntries(samples),
  });
await kb.close();
rmSync(root, { recursive: true, force: true });
