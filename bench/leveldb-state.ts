/**
 * State access of the leveldb backend against raw classic-level in the same run, on identical data.
 *
 * Fairness: the raw database holds exactly the backend's rows (same row keys and values, copied
 * from it) and is opened with the same block cache and memtable sizes; both are fully compacted
 * before the reads. Raw cases use prebuilt row keys (the best raw classic-level can do); ours pay
 * setCurrentKey (key-group hashing, key serialization) per operation, as a runtime does per record.
 * Writes are timed until they are in LevelDB: raw writes 1000 per awaited batch, ours include the
 * final flush of the write buffer. Our writes come in chunks of 1000 with a turn of the event loop
 * in between, as a runtime's input arrives (and as the raw baseline awaits each batch): that is
 * when the write buffer can hand layers to LevelDB's thread. One extra case times a single
 * synchronous burst of updates, the worst case, where nothing reaches LevelDB until the end. Map
 * puts that the buffer cannot tell new or overwriting are counted later (map-counts.ts): the
 * plain MapState put case pays that where the backend does it (when what it keeps outgrows its
 * bound), another case at the end of every round, as a checkpoint would. Each pair runs in alternating rounds (raw, ours, raw, ours, ...)
 * so that machine load hits both alike; figures are medians over the rounds, the ratio is the
 * median of the per-round ratios. The CPU-time ratio compares ops per second of process CPU time
 * (all threads, LevelDB's included), which other load on the machine disturbs less. Every case
 * feeds its results into a printed sink.
 *   node dist/bench/leveldb-state.js [--quick] [keys]      (LEVELDB_BENCH_ONLY=update: the operations
 *   whose name contains it, e.g. LEVELDB_BENCH_ONLY=MapState for the map cases)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import {
  DEFAULT_CACHE_SIZE,
  DEFAULT_MEMTABLE_BYTES,
  DEFAULT_WRITE_BUFFER_BYTES,
  type LevelDbKeyedStateBackend,
} from '../backends/leveldb/backend.js';
import { leveldb } from '../backends/leveldb/index.js';
import { countRowStateId, encodeRowKey } from '../backends/leveldb/row-keys.js';
import { keyGroupForKey } from '../src/keygroups/key-groups.js';
import { float64Serializer, stringSerializer } from '../src/serializers/builtins.js';
import { listState, mapState, valueState } from '../src/state/descriptors.js';
import { singleSubtask, yieldToIo } from './lib/workload.js';
import {
  consume,
  fmtOps,
  median,
  parseBenchArgs,
  printTable,
  recordResults,
  sink,
  type CaseResult,
} from './lib/bench.js';

const { quick, args } = parseBenchArgs();
const numKeys = Number(args[0] ?? (quick ? 100_000 : 500_000));
const ROUNDS = Number(process.env.LEVELDB_BENCH_ROUNDS ?? (quick ? 3 : 15));
const OPS_PER_ROUND = quick ? 20_000 : 60_000;
const BLOCK = 1000;
const MAP_ENTRIES = 10;
/** maxParallelism of singleSubtask(). */
const MAX_P = 128;
const root = mkdtempSync(join(tmpdir(), 'streamstate-bench-leveldb-'));
const cleanup = (): void => rmSync(root, { recursive: true, force: true });
process.on('exit', cleanup);

function shuffledKeys(n: number): string[] {
  const keys = Array.from({ length: n }, (_, i) => `key-${i}`);
  let seed = 42;
  for (let i = n - 1; i > 0; i--) {
    seed = (Math.imul(seed, 1103515245) + 12345) | 0;
    const j = (seed >>> 0) % (i + 1);
    [keys[i], keys[j]] = [keys[j], keys[i]];
  }
  return keys;
}

const keys = shuffledKeys(numKeys);
/** Row value of a float64: the codec's header byte (generation 0) + 8 bytes. */
const row64 = (v: number): Buffer => {
  const b = Buffer.allocUnsafe(9);
  b[0] = 0;
  b.writeDoubleBE(v, 1);
  return b;
};

// ---- the backend, loaded through its API: per key a value, a one-element list, a 10-entry map
const kb = (await leveldb({ workingDir: join(root, 'backend'), cacheSize: DEFAULT_CACHE_SIZE }).createKeyedStateBackend(
  singleSubtask('bench'),
)) as LevelDbKeyedStateBackend<string>;
const value = kb.getState(valueState<number>('v', { serializer: float64Serializer }));
const list = kb.getState(listState<number>('l', { serializer: float64Serializer }));
const map = kb.getState(
  mapState<number, number>('m', { keySerializer: float64Serializer, valueSerializer: float64Serializer }),
);
for (let n = 0; n < numKeys; n++) {
  kb.setCurrentKey(keys[n]);
  value.update(1);
  list.update([1]);
  for (let j = 0; j < MAP_ENTRIES; j++) map.put(j, j);
  if (n % 10_000 === 0) await kb.flush(); // keep the write buffer from running far ahead of LevelDB
}
await kb.store.settleCounts(); // count rows exact, as at a checkpoint: the raw copy holds them too

// ---- raw classic-level: the same rows, same cache and memtable sizes
const raw = new ClassicLevel<Buffer, Buffer>(join(root, 'raw'), {
  keyEncoding: 'buffer',
  valueEncoding: 'buffer',
  cacheSize: DEFAULT_CACHE_SIZE,
  writeBufferSize: DEFAULT_MEMTABLE_BYTES,
});
await raw.open();
{
  const it = kb.db.iterator();
  for (;;) {
    const page = await it.nextv(10_000);
    if (page.length === 0) break;
    const b = raw.batch();
    for (const [k, v] of page) b.put(k, v);
    await b.write();
  }
  await it.close();
}
const idOf = (name: string): number => kb.catalog.get(name)?.stateId as number;
const empty = Buffer.alloc(0);
const kgs = keys.map((k) => keyGroupForKey(k, stringSerializer, MAX_P));
const kBytes = keys.map((k) => Buffer.from(k));
const vRows = keys.map((_, i) => encodeRowKey(kgs[i], idOf('v'), kBytes[i], empty));
const lRows = keys.map((_, i) => encodeRowKey(kgs[i], idOf('l'), kBytes[i], empty));
const mPrefix = keys.map((_, i) => encodeRowKey(kgs[i], idOf('m'), kBytes[i], empty));
const m3Rows = mPrefix.map((p) => Buffer.concat([p, float64Serializer.serialize(3)]));
const m5Rows = mPrefix.map((p) => Buffer.concat([p, float64Serializer.serialize(5)]));
const mEnds = mPrefix.map((p) => Buffer.concat([p, Buffer.from([0xff])]));
if (
  raw.getSync(vRows[0]) === undefined ||
  raw.getSync(encodeRowKey(kgs[0], countRowStateId(idOf('m')), kBytes[0], empty)) === undefined
) {
  throw new Error('the raw database does not hold the backend rows');
}
// Steady state: both fully compacted, no background work left from the load.
const everything = [Buffer.from([0]), Buffer.from([0xff, 0xff, 0xff])] as const;
await kb.db.compactRange(...everything);
await raw.compactRange(...everything);

let cursor = 0;
const next = (): number => (cursor = cursor + 1 === numKeys ? 0 : cursor + 1);

type Case = (ops: number) => void | Promise<void>;
interface Pair {
  readonly operation: string;
  readonly raw: string;
  readonly ours: string;
  readonly rawCase: Case;
  readonly oursCase: Case;
  /** Untimed preparation before every timed call of either case. */
  readonly setup?: () => void | Promise<void>;
  /** Operations per round (default OPS_PER_ROUND). */
  readonly ops?: number;
}

/** The list the growing-list case appends to holds this many elements when each round starts. */
const LONG_LIST = 20_000;
const LONG_LIST_OPS = 2000;
const hotKey = 'hot-list-key';
const hotRow = encodeRowKey(keyGroupForKey(hotKey, stringSerializer, MAX_P), idOf('l'), Buffer.from(hotKey), empty);
let hotSeq = 0;

const rawBatched =
  (put: (b: ReturnType<typeof raw.batch>, j: number, n: number) => void): Case =>
  async (ops) => {
    for (let s = 0; s < ops; s += BLOCK) {
      const b = raw.batch();
      for (let n = 0; n < BLOCK; n++) put(b, next(), n);
      await b.write();
    }
  };

/** Our write case: `op` per record, in chunks of BLOCK records with a turn of the event loop between them, then a flush. */
const chunked =
  (op: (j: number, n: number) => void): Case =>
  async (ops) => {
    for (let n = 0; n < ops; n++) {
      op(next(), n);
      if (n % BLOCK === BLOCK - 1) await yieldToIo();
    }
    await kb.flush();
  };

const pairs: Pair[] = [
  {
    operation: 'ValueState get',
    raw: 'raw getSync',
    ours: 'leveldb ValueState.value()',
    rawCase: (ops) => {
      for (let n = 0; n < ops; n++) consume(raw.getSync(vRows[next()])?.length);
    },
    oursCase: (ops) => {
      for (let n = 0; n < ops; n++) {
        kb.setCurrentKey(keys[next()]);
        consume(value.value());
      }
    },
  },
  {
    operation: 'ListState get',
    raw: 'raw getSync (list row)',
    ours: 'leveldb ListState.get()',
    rawCase: (ops) => {
      for (let n = 0; n < ops; n++) consume(raw.getSync(lRows[next()])?.length);
    },
    oursCase: (ops) => {
      for (let n = 0; n < ops; n++) {
        kb.setCurrentKey(keys[next()]);
        consume(list.get()?.length);
      }
    },
  },
  {
    operation: 'MapState get',
    raw: 'raw getSync (entry row)',
    ours: 'leveldb MapState.get()',
    rawCase: (ops) => {
      for (let n = 0; n < ops; n++) consume(raw.getSync(m5Rows[next()])?.length);
    },
    oursCase: (ops) => {
      for (let n = 0; n < ops; n++) {
        kb.setCurrentKey(keys[next()]);
        consume(map.get(5));
      }
    },
  },
  {
    operation: `MapState iterate (${MAP_ENTRIES} entries)`,
    raw: 'raw iterator.nextv over the entry prefix',
    ours: 'leveldb MapState.values()',
    rawCase: async (ops) => {
      for (let n = 0; n < ops; n++) {
        const j = next();
        const it = raw.iterator({ gte: mPrefix[j], lt: mEnds[j] });
        let s = 0;
        for (const [, v] of await it.nextv(100)) s += v.length;
        await it.close();
        consume(s);
      }
    },
    oursCase: async (ops) => {
      for (let n = 0; n < ops; n++) {
        kb.setCurrentKey(keys[next()]);
        let s = 0;
        for await (const v of map.values()) s += v;
        consume(s);
      }
    },
  },
  {
    operation: 'ValueState update',
    raw: `raw batched put (${BLOCK} per batch)`,
    ours: `leveldb ValueState.update() + flush (chunks of ${BLOCK})`,
    rawCase: rawBatched((b, j, n) => b.put(vRows[j], row64(n))),
    oursCase: chunked((j, n) => {
      kb.setCurrentKey(keys[j]);
      value.update(n);
    }),
  },
  {
    operation: 'ValueState update, one synchronous burst',
    raw: `raw batched put (${BLOCK} per batch)`,
    ours: 'leveldb ValueState.update() + flush (no yield)',
    rawCase: rawBatched((b, j, n) => b.put(vRows[j], row64(n))),
    oursCase: async (ops) => {
      for (let n = 0; n < ops; n++) {
        kb.setCurrentKey(keys[next()]);
        value.update(n);
      }
      await kb.flush();
    },
  },
  {
    operation: 'ListState add',
    raw: `raw getSync + append + batched put (${BLOCK} per batch)`,
    ours: `leveldb ListState.add() + flush (chunks of ${BLOCK})`,
    rawCase: async (ops) => {
      for (let s = 0; s < ops; s += BLOCK) {
        const b = raw.batch();
        for (let n = 0; n < BLOCK; n++) {
          const j = next();
          const cur = raw.getSync(lRows[j]) as Buffer;
          const add = Buffer.allocUnsafe(9);
          add[0] = 8; // varint length of one float64 element
          add.writeDoubleBE(n, 1);
          b.put(lRows[j], Buffer.concat([cur, add]));
        }
        await b.write();
      }
    },
    oursCase: chunked((j, n) => {
      kb.setCurrentKey(keys[j]);
      list.add(n);
    }),
  },
  {
    // The issue-13 case: appends must not grow with the list (before chunk rows, each add rewrote it).
    operation: `ListState add to one ${LONG_LIST}-element list`,
    raw: `raw batched put of one row per element (${BLOCK} per batch)`,
    ours: `leveldb ListState.add() + flush (chunks of ${BLOCK})`,
    ops: LONG_LIST_OPS,
    setup: async () => {
      kb.setCurrentKey(hotKey);
      list.update(Array.from({ length: LONG_LIST }, (_, i) => i));
      await kb.flush();
    },
    rawCase: async (ops) => {
      for (let s = 0; s < ops; s += BLOCK) {
        const b = raw.batch();
        for (let n = 0; n < BLOCK; n++) {
          const seq = Buffer.allocUnsafe(4);
          seq.writeUInt32BE(++hotSeq, 0);
          b.put(Buffer.concat([hotRow, seq]), row64(n));
        }
        await b.write();
      }
    },
    oursCase: chunked((_j, n) => {
      kb.setCurrentKey(hotKey);
      list.add(n);
    }),
  },
  {
    operation: 'MapState put',
    raw: `raw batched put (${BLOCK} per batch)`,
    ours: `leveldb MapState.put() + flush (chunks of ${BLOCK})`,
    rawCase: rawBatched((b, j, n) => b.put(m3Rows[j], row64(n))),
    oursCase: chunked((j, n) => {
      kb.setCurrentKey(keys[j]);
      map.put(3, n);
    }),
  },
  {
    // Blind puts are counted when a count is needed (at the latest at the next checkpoint, or once
    // what they keep outgrows 8x the write buffer): this case pays that at the end of every round.
    operation: 'MapState put, counted at the end of each round (as at a checkpoint)',
    raw: `raw batched put (${BLOCK} per batch)`,
    ours: `leveldb MapState.put() + settleCounts (chunks of ${BLOCK})`,
    rawCase: rawBatched((b, j, n) => b.put(m3Rows[j], row64(n))),
    oursCase: async (ops) => {
      await chunked((j, n) => {
        kb.setCurrentKey(keys[j]);
        map.put(3, n);
      })(ops);
      await kb.store.settleCounts();
    },
  },
  {
    // The same work our semantics need: isEmpty() is exact and synchronous, so a put must learn whether its entry is new.
    operation: 'MapState put, vs raw existence check + put',
    raw: `raw getSync + batched put (${BLOCK} per batch)`,
    ours: `leveldb MapState.put() + flush (chunks of ${BLOCK})`,
    rawCase: rawBatched((b, j, n) => {
      consume(raw.getSync(m3Rows[j])?.length);
      b.put(m3Rows[j], row64(n));
    }),
    oursCase: chunked((j, n) => {
      kb.setCurrentKey(keys[j]);
      map.put(3, n);
    }),
  },
];

/** Iterations are cheaper per op than point reads by about their entry count: fewer ops per round. */
const opsFor = (p: Pair): number =>
  p.ops ?? (p.operation.startsWith('MapState iterate') ? OPS_PER_ROUND / MAP_ENTRIES : OPS_PER_ROUND);

/** Ops per second of wall time, and per second of process CPU time (all threads: less sensitive to other load on the machine). */
async function timed(c: Case, ops: number, setup?: () => void | Promise<void>): Promise<{ wall: number; cpu: number }> {
  await setup?.();
  const cpu0 = process.cpuUsage();
  const t = performance.now();
  await c(ops);
  const wallMs = performance.now() - t;
  const cpu = process.cpuUsage(cpu0);
  return { wall: (ops / wallMs) * 1000, cpu: (ops / ((cpu.user + cpu.system) / 1000)) * 1000 };
}

const results: CaseResult[] = [];
const rows: Record<string, string>[] = [];
const suite = `leveldb state access, ${numKeys} keys`;
/** LEVELDB_BENCH_ONLY=<text>: run only the operations whose name contains it (profiling). */
const only = process.env.LEVELDB_BENCH_ONLY;
for (const p of pairs.filter((x) => only === undefined || x.operation.includes(only))) {
  const ops = opsFor(p);
  // One warm-up round each, not counted.
  await timed(p.rawCase, ops / 4, p.setup);
  await timed(p.oursCase, ops / 4, p.setup);
  const rawRates: number[] = [];
  const ourRates: number[] = [];
  const ratios: number[] = [];
  const cpuRatios: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    // Alternate which goes first, so neither always follows the other's background work.
    let a: { wall: number; cpu: number };
    let b: { wall: number; cpu: number };
    if (r % 2 === 0) {
      a = await timed(p.rawCase, ops, p.setup);
      b = await timed(p.oursCase, ops, p.setup);
    } else {
      b = await timed(p.oursCase, ops, p.setup);
      a = await timed(p.rawCase, ops, p.setup);
    }
    rawRates.push(a.wall);
    ourRates.push(b.wall);
    ratios.push(b.wall / a.wall);
    cpuRatios.push(b.cpu / a.cpu);
  }
  const spread = (xs: number[]): number => ((Math.max(...xs) - Math.min(...xs)) / 2 / median(xs)) * 100;
  results.push({ suite, name: p.raw, opsPerSec: median(rawRates), marginPct: spread(rawRates), samples: ROUNDS });
  results.push({ suite, name: p.ours, opsPerSec: median(ourRates), marginPct: spread(ourRates), samples: ROUNDS });
  const row = {
    operation: p.operation,
    'leveldb ops/s': fmtOps(median(ourRates)),
    'raw classic-level ops/s': fmtOps(median(rawRates)),
    ratio: `${(median(ratios) * 100).toFixed(0)}%`,
    'ratio range': `${(Math.min(...ratios) * 100).toFixed(0)}–${(Math.max(...ratios) * 100).toFixed(0)}%`,
    'CPU-time ratio': `${(median(cpuRatios) * 100).toFixed(0)}%`,
    baseline: p.raw,
  };
  rows.push(row);
  console.log(
    `${row.operation}: ${row['leveldb ops/s']} vs ${row['raw classic-level ops/s']} (${row.ratio}; CPU time ${row['CPU-time ratio']})`,
  );
}
printTable(rows);
const setup = {
  numKeys,
  rounds: ROUNDS,
  opsPerRound: OPS_PER_ROUND,
  cacheSizeBytes: DEFAULT_CACHE_SIZE,
  memtableBytes: DEFAULT_MEMTABLE_BYTES,
  writeBufferBytes: DEFAULT_WRITE_BUFFER_BYTES,
  rowsPerKey: `1 value + 1 list + ${MAP_ENTRIES} map entries + 1 map count row`,
};
console.log(`setup: ${JSON.stringify(setup)}`);
recordResults('stateAccessLeveldb', { ...setup, quick, results, ratios: rows });
await kb.close();
await raw.close();
cleanup();
console.log(`(sink ${sink.value})`);
