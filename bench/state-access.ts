/**
 * State access throughput of the heap backends against a raw Map, in the same run.
 * Each operation includes setCurrentKey (key-group hashing), as a runtime would do per record.
 *   node dist/bench/state-access.js [--quick] [keys]
 */
import { KeyGroupRange, float64Serializer, listState, mapState, stringSerializer, valueState } from '../src/index.js';
import type { KeyedStateBackend, StateBackend } from '../src/index.js';
import { memory } from '../backends/memory/index.js';
import { consume, fmtOps, parseBenchArgs, printTable, recordResults, runCases, sink } from './lib/bench.js';

const { quick, args } = parseBenchArgs();
const numKeys = Number(args[0] ?? (quick ? 200_000 : 1_000_000));

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

async function keyedBackend(backend: StateBackend): Promise<KeyedStateBackend<string>> {
  return backend.createKeyedStateBackend({
    jobId: 'bench',
    operatorId: 'op',
    subtaskIndex: 0,
    parallelism: 1,
    maxParallelism: 128,
    keyGroupRange: new KeyGroupRange(0, 127),
    keySerializer: stringSerializer,
  });
}

const keys = shuffledKeys(numKeys);
let i = 0;
const next = (): string => keys[(i = i + 1 === numKeys ? 0 : i + 1)];

// ---- raw baselines
const rawValue = new Map<string, number>();
const rawList = new Map<string, number[]>();
const rawMap = new Map<string, Map<number, number>>();
for (const k of keys) {
  rawValue.set(k, 1);
  rawList.set(k, [1]);
  rawMap.set(k, new Map(Array.from({ length: 10 }, (_, j) => [j, j])));
}

// ---- heap backend (memory preset; the filesystem preset shares the same keyed backend)
const kb = await keyedBackend(memory());
const value = kb.getState(valueState<number>('v', { serializer: float64Serializer }));
const list = kb.getState(listState<number>('l', { serializer: float64Serializer }));
const map = kb.getState(
  mapState<number, number>('m', { keySerializer: float64Serializer, valueSerializer: float64Serializer }),
);
for (const k of keys) {
  kb.setCurrentKey(k);
  value.update(1);
  list.add(1);
  for (let j = 0; j < 10; j++) map.put(j, j);
}
// keep lists from growing without bound across samples
const trimList = (arr: number[] | undefined) => {
  if (arr && arr.length > 64) arr.length = 1;
};

const results = await runCases(
  `state access, ${numKeys} keys`,
  [
    [
      'raw Map get+set',
      () => {
        const k = next();
        rawValue.set(k, (rawValue.get(k) ?? 0) + 1);
      },
    ],
    [
      'heap ValueState get+update',
      () => {
        kb.setCurrentKey(next());
        value.update((value.value() ?? 0) + 1);
      },
    ],
    [
      'raw Map list push',
      () => {
        const a = rawList.get(next());
        a?.push(1);
        trimList(a);
      },
    ],
    [
      'heap ListState add',
      () => {
        kb.setCurrentKey(next());
        list.add(1);
        if ((list.get()?.length ?? 0) > 64) list.update([1]);
      },
    ],
    [
      'raw Map list get',
      () => {
        consume(rawList.get(next())?.length);
      },
    ],
    [
      'heap ListState get',
      () => {
        kb.setCurrentKey(next());
        consume(list.get()?.length);
      },
    ],
    [
      'raw Map map put',
      () => {
        rawMap.get(next())?.set(3, 7);
      },
    ],
    [
      'heap MapState put',
      () => {
        kb.setCurrentKey(next());
        map.put(3, 7);
      },
    ],
    [
      'raw Map map get',
      () => {
        consume(rawMap.get(next())?.get(5));
      },
    ],
    [
      'heap MapState get',
      () => {
        kb.setCurrentKey(next());
        consume(map.get(5));
      },
    ],
    [
      'raw Map map iterate (10 entries)',
      () => {
        let s = 0;
        for (const v of rawMap.get(next())?.values() ?? []) s += v;
        consume(s);
      },
    ],
    [
      // MapState iteration is async-only (entries/keys/values return AsyncIterables): the honest
      // baseline is a raw Map read the same way, one await per entry.
      'raw Map map iterate, for await (10 entries)',
      async () => {
        let s = 0;
        for await (const v of rawMap.get(next())?.values() ?? []) s += v;
        consume(s);
      },
    ],
    [
      'heap MapState iterate (10 entries)',
      async () => {
        kb.setCurrentKey(next());
        let s = 0;
        for await (const v of map.values()) s += v;
        consume(s);
      },
    ],
  ],
  { quick },
);

const pairs: Array<[string, string]> = [
  ['heap ValueState get+update', 'raw Map get+set'],
  ['heap ListState add', 'raw Map list push'],
  ['heap ListState get', 'raw Map list get'],
  ['heap MapState put', 'raw Map map put'],
  ['heap MapState get', 'raw Map map get'],
  ['heap MapState iterate (10 entries)', 'raw Map map iterate (10 entries)'],
  ['heap MapState iterate (10 entries)', 'raw Map map iterate, for await (10 entries)'],
];
const byName = new Map(results.map((r) => [r.name, r]));
const rows = pairs.map(([ours, raw]) => {
  const a = byName.get(ours)!;
  const b = byName.get(raw)!;
  return {
    operation: ours.replace('heap ', '') + (raw.includes('for await') ? ', vs for await' : ''),
    'heap ops/s': fmtOps(a.opsPerSec),
    'raw ops/s': fmtOps(b.opsPerSec),
    ratio: `${((a.opsPerSec / b.opsPerSec) * 100).toFixed(0)}%`,
  };
});
printTable(rows);
recordResults('stateAccessHeap', { numKeys, quick, results, ratios: rows });
await kb.close();
console.log(`(sink ${sink.value})`);
