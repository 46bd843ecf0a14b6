/**
 * State access of the leveldb backend against raw classic-level in the same run.
 * Ours include setCurrentKey (key-group hashing, key serialization) as a runtime does per record;
 * raw cases use prebuilt key buffers (the best raw can do). Writes run in blocks of 1000 so raw can
 * batch them (one awaited batch per block); figures are per operation.
 *   node dist/bench/leveldb-state.js [--quick] [keys]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { leveldb, type LevelDbKeyedStateBackend } from '../backends/leveldb/index.js';
import { KeyGroupRange } from '../src/keygroups/key-groups.js';
import { float64Serializer, stringSerializer } from '../src/serializers/builtins.js';
import { listState, mapState, valueState } from '../src/state/descriptors.js';
import { consume, fmtOps, parseBenchArgs, printTable, recordResults, runCases, sink } from './lib/bench.js';

const { quick, args } = parseBenchArgs();
const numKeys = Number(args[0] ?? (quick ? 100_000 : 500_000));
const BLOCK = 1000;
const root = mkdtempSync(join(tmpdir(), 'streamstate-bench-leveldb-'));

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
const keyBufs = keys.map((k) => Buffer.from(k));
let i = 0;
const nextIndex = (): number => (i = i + 1 === numKeys ? 0 : i + 1);
const f64 = (v: number): Buffer => {
  const b = Buffer.allocUnsafe(8);
  b.writeDoubleBE(v, 0);
  return b;
};

// ---- raw classic-level: value rows `v/<key>`, list rows `l/<key>`, map rows `m/<key>/<j>`
const raw = new ClassicLevel<Buffer, Buffer>(join(root, 'raw'), { keyEncoding: 'buffer', valueEncoding: 'buffer' });
await raw.open();
const rawKey = (prefix: string, k: Buffer, suffix = ''): Buffer => Buffer.concat([Buffer.from(prefix), k, Buffer.from(suffix)]);
const vKeys = keyBufs.map((k) => rawKey('v/', k));
const lKeys = keyBufs.map((k) => rawKey('l/', k));
const mPrefix = keyBufs.map((k) => rawKey('m/', k, '/'));
for (let s = 0; s < numKeys; s += 10_000) {
  const b = raw.batch();
  for (let j = s; j < Math.min(numKeys, s + 10_000); j++) {
    b.put(vKeys[j], f64(1));
    b.put(lKeys[j], f64(1));
    for (let e = 0; e < 10; e++) b.put(Buffer.concat([mPrefix[j], Buffer.from([e])]), f64(e));
  }
  await b.write();
}

// ---- leveldb backend
const kb = (await leveldb({ workingDir: join(root, 'backend') }).createKeyedStateBackend({
  jobId: 'bench',
  operatorId: 'op',
  subtaskIndex: 0,
  parallelism: 1,
  maxParallelism: 128,
  keyGroupRange: new KeyGroupRange(0, 127),
  keySerializer: stringSerializer,
})) as LevelDbKeyedStateBackend<string>;
const value = kb.getState(valueState<number>('v', { serializer: float64Serializer }));
const list = kb.getState(listState<number>('l', { serializer: float64Serializer }));
const map = kb.getState(mapState<number, number>('m', { keySerializer: float64Serializer, valueSerializer: float64Serializer }));
for (const k of keys) {
  kb.setCurrentKey(k);
  value.update(1);
  list.add(1);
  for (let j = 0; j < 10; j++) map.put(j, j);
}
// Everything to disk first: reads then exercise LevelDB, not the write buffer.
await kb.flush();

const results = await runCases(
  `leveldb state access, ${numKeys} keys`,
  [
    ['raw getSync', () => { consume(raw.getSync(vKeys[nextIndex()])?.length); }],
    ['leveldb ValueState get', () => { kb.setCurrentKey(keys[nextIndex()]); consume(value.value()); }],
    [`raw batched put (x${BLOCK})`, async () => { const b = raw.batch(); for (let n = 0; n < BLOCK; n++) b.put(vKeys[nextIndex()], f64(n)); await b.write(); }],
    [`leveldb ValueState update (x${BLOCK})`, async () => { for (let n = 0; n < BLOCK; n++) { kb.setCurrentKey(keys[nextIndex()]); value.update(n); } await Promise.resolve(); }],
    ['raw list get', () => { consume(raw.getSync(lKeys[nextIndex()])?.length); }],
    ['leveldb ListState get', () => { kb.setCurrentKey(keys[nextIndex()]); consume(list.get()?.length); }],
    [`raw list append (get+put, x${BLOCK})`, async () => {
      const b = raw.batch();
      for (let n = 0; n < BLOCK; n++) {
        const j = nextIndex();
        const cur = raw.getSync(lKeys[j]);
        b.put(lKeys[j], cur !== undefined && cur.length < 512 ? Buffer.concat([cur, f64(n)]) : f64(n));
      }
      await b.write();
    }],
    [`leveldb ListState add (x${BLOCK})`, async () => {
      for (let n = 0; n < BLOCK; n++) { kb.setCurrentKey(keys[nextIndex()]); if ((list.get()?.length ?? 0) > 64) list.update([n]); else list.add(n); }
      await Promise.resolve();
    }],
    [`raw map put (x${BLOCK})`, async () => { const b = raw.batch(); for (let n = 0; n < BLOCK; n++) b.put(Buffer.concat([mPrefix[nextIndex()], Buffer.from([3])]), f64(7)); await b.write(); }],
    [`leveldb MapState put (x${BLOCK})`, async () => { for (let n = 0; n < BLOCK; n++) { kb.setCurrentKey(keys[nextIndex()]); map.put(3, 7); } await Promise.resolve(); }],
    ['raw map get', () => { consume(raw.getSync(Buffer.concat([mPrefix[nextIndex()], Buffer.from([5])]))?.length); }],
    ['leveldb MapState get', () => { kb.setCurrentKey(keys[nextIndex()]); consume(map.get(5)); }],
    ['raw map iterate (10 entries)', async () => {
      const p = mPrefix[nextIndex()];
      const it = raw.iterator({ gte: p, lt: Buffer.concat([p, Buffer.from([0xff])]) });
      let s = 0;
      for (const [, v] of await it.nextv(100)) s += v.readDoubleBE(0);
      await it.close();
      consume(s);
    }],
    ['leveldb MapState iterate (10 entries)', async () => { kb.setCurrentKey(keys[nextIndex()]); let s = 0; for await (const v of map.values()) s += v; consume(s); }],
  ],
  { quick },
);

const perOp = (r: { name: string; opsPerSec: number }): number => (r.name.includes(`x${BLOCK}`) ? r.opsPerSec * BLOCK : r.opsPerSec);
const pairs: Array<[string, string, string]> = [
  ['ValueState get', 'leveldb ValueState get', 'raw getSync'],
  ['ValueState update', `leveldb ValueState update (x${BLOCK})`, `raw batched put (x${BLOCK})`],
  ['ListState get', 'leveldb ListState get', 'raw list get'],
  ['ListState add', `leveldb ListState add (x${BLOCK})`, `raw list append (get+put, x${BLOCK})`],
  ['MapState put', `leveldb MapState put (x${BLOCK})`, `raw map put (x${BLOCK})`],
  ['MapState get', 'leveldb MapState get', 'raw map get'],
  ['MapState iterate (10 entries)', 'leveldb MapState iterate (10 entries)', 'raw map iterate (10 entries)'],
];
const byName = new Map(results.map((r) => [r.name, r]));
const rows = pairs.map(([op, ours, base]) => {
  const a = perOp(byName.get(ours)!);
  const b = perOp(byName.get(base)!);
  return { operation: op, 'leveldb ops/s': fmtOps(a), 'raw classic-level ops/s': fmtOps(b), ratio: `${((a / b) * 100).toFixed(0)}%` };
});
printTable(rows);
recordResults('stateAccessLeveldb', { numKeys, quick, results, ratios: rows });
await kb.close();
await raw.close();
rmSync(root, { recursive: true, force: true });
console.log(`(sink ${sink.value})`);
