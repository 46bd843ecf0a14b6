import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bootstrapSavepoint,
  broadcastEntries,
  keyedLists,
  keyedMaps,
  keyedTimers,
  keyedValues,
  openSnapshot,
  operatorList,
  parseBootstrapLines,
  readBootstrapFile,
} from '../../src/processor/index.js';
import { KeyGroupRuns } from '../../src/processor/key-group-runs.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { listState, mapState, valueState } from '../../src/state/descriptors.js';
import { tempDir } from '../cli/support.js';

/**
 * Bootstrap in bounded memory (issue 17): keyed entries beyond BootstrapOptions.memoryBytes go to
 * run files (KeyGroupRuns) and are merged back one key group at a time. A tiny budget forces many
 * runs; the savepoint must read back exactly as with everything in memory, with the merge rules
 * (last value wins, list elements appended, map entries merged) holding across runs.
 */
let root: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir: root, cleanup } = await tempDir('ss-processor-bootstrap-spill-')));
afterAll(async () => cleanup());

const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

describe('KeyGroupRuns', () => {
  it('spills runs past its budget and reads every key group back in order, records in the order added', async () => {
    const dir = join(root, 'runs');
    const live = new Set<string>();
    const runs = new KeyGroupRuns(dir, 16, 200, { add: (p) => live.add(p), delete: (p) => live.delete(p) });
    const want = new Map<number, string[]>();
    for (let i = 0; i < 500; i++) {
      const kg = (i * 7) % 16;
      const payload = `r${i}`;
      await runs.add(kg, i % 3, Buffer.from(payload));
      want.set(kg, [...(want.get(kg) ?? []), `${i % 3}:${payload}`]);
    }
    expect(runs.spilledRuns).toBeGreaterThan(5);
    expect(live).toEqual(new Set([dir]));
    expect(await exists(dir)).toBe(true);
    const got = new Map<number, string[]>();
    // Two calls, as bootstrap makes one per subtask.
    for (const [first, last] of [
      [0, 9],
      [10, 15],
    ]) {
      for await (const { keyGroup, records } of runs.read(first, last))
        got.set(
          keyGroup,
          records.map((r) => `${r.tag}:${r.payload.toString()}`),
        );
    }
    expect([...got.keys()]).toEqual([...want.keys()].sort((a, b) => a - b));
    expect(got).toEqual(want);
    await runs.close();
    expect(await exists(dir)).toBe(false);
    expect(live.size).toBe(0);
  });

  it('writes no file while everything fits', async () => {
    const dir = join(root, 'runs-in-memory');
    const runs = new KeyGroupRuns(dir, 4, 1 << 20);
    for (let i = 0; i < 100; i++) await runs.add(i % 4, 0, Buffer.from([i]));
    const seen: number[] = [];
    for await (const { keyGroup, records } of runs.read(0, 3)) seen.push(keyGroup, records.length);
    expect(seen).toEqual([0, 25, 1, 25, 2, 25, 3, 25]);
    expect(runs.spilledRuns).toBe(0);
    expect(await exists(dir)).toBe(false);
    await runs.close();
  });
});

/** What the reader sees of the bootstrapped operator, in a sorted normal form. */
async function contents(path: string): Promise<string[]> {
  const reader = await openSnapshot(path);
  try {
    const o = reader.operator<string>('op');
    const out: string[] = [];
    for await (const e of o.values('count')) out.push(JSON.stringify(['count', e.key, e.value]));
    for await (const e of o.lists('events')) out.push(JSON.stringify(['events', e.key, e.value]));
    for await (const e of o.mapEntries('attrs')) out.push(JSON.stringify(['attrs', e.key, e.userKey, e.value]));
    for await (const t of o.timers('fire')) out.push(JSON.stringify(['fire', t.key, t.namespace, t.timestamp]));
    return out.sort();
  } finally {
    await reader.close();
  }
}

describe('bootstrap larger than its memory budget', () => {
  const KEYS = 300;
  const count = valueState<number>('count', { serializer: int32Serializer });
  const events = listState<string>('events', { serializer: stringSerializer });
  const attrs = mapState<string, number>('attrs', {
    keySerializer: stringSerializer,
    valueSerializer: int32Serializer,
  });
  // Every key twice, far apart in the input, so the two land in different runs under a small budget.
  const twice = <T>(f: (i: number, pass: number) => T): T[] =>
    [0, 1].flatMap((pass) => Array.from({ length: KEYS }, (_, i) => f(i, pass)));
  const operators = () => [
    {
      operatorId: 'op',
      parallelism: 3,
      maxParallelism: 64,
      keySerializer: stringSerializer,
      keyed: [
        keyedValues(
          count,
          twice((i, pass) => ({ key: `k${i}`, value: pass === 0 ? -1 : i })),
        ),
        keyedLists(
          events,
          twice((i, pass) => ({ key: `k${i}`, value: [`e${i}-${pass}`] })),
        ),
        keyedMaps(
          attrs,
          twice((i, pass) => ({ key: `k${i}`, userKey: `u${pass}`, value: i + pass })),
        ),
        keyedTimers(
          'fire',
          twice((i, pass) => ({ key: `k${i}`, namespace: 'w', timestamp: 1000 + pass })),
        ),
      ],
    },
  ];

  it('reads back the same as in memory, merge rules holding across runs, and leaves no run files', async () => {
    const live = new Set<string>();
    const seen: string[] = [];
    const temporaryPaths = {
      add: (p: string) => void (live.add(p), seen.push(p)),
      delete: (p: string) => void live.delete(p),
    };
    await bootstrapSavepoint(join(root, 'small-budget'), operators(), {
      memoryBytes: 512,
      temporaryPaths,
      timestamp: 1,
    });
    await bootstrapSavepoint(join(root, 'in-memory'), operators(), { timestamp: 1 });
    const runDirs = seen.filter((p) => /streamstate-bootstrap-[0-9a-f]{12}$/.test(p));
    expect(runDirs).toHaveLength(1);
    expect(await exists(runDirs[0])).toBe(false);
    expect(live.size).toBe(0);
    const small = await contents(join(root, 'small-budget'));
    expect(small).toEqual(await contents(join(root, 'in-memory')));
    const want: string[] = [];
    for (let i = 0; i < KEYS; i++) {
      want.push(JSON.stringify(['count', `k${i}`, i]));
      want.push(JSON.stringify(['events', `k${i}`, [`e${i}-0`, `e${i}-1`]]));
      want.push(JSON.stringify(['attrs', `k${i}`, 'u0', i]), JSON.stringify(['attrs', `k${i}`, 'u1', i + 1]));
      want.push(JSON.stringify(['fire', `k${i}`, 'w', 1000]), JSON.stringify(['fire', `k${i}`, 'w', 1001]));
    }
    expect(small).toEqual(want.sort());
    expect((await readdir(root)).filter((n) => n.includes('streamstate-'))).toEqual([]);
  });
});

describe('bootstrap from a JSON-lines file without holding its records', () => {
  it('re-reads each state from the file and writes what the in-memory parse writes', async () => {
    const lines = [
      '{"type":"operator","id":"op","parallelism":2,"maxParallelism":32,"keySerializer":"string"}',
      '{"type":"state","operator":"op","name":"count","kind":"value","serializer":"int32"}',
      '{"type":"state","operator":"op","name":"events","kind":"list","serializer":"string"}',
      '{"type":"state","operator":"op","name":"attrs","kind":"map","userKeySerializer":"string","serializer":"int32"}',
      '{"type":"state","operator":"op","name":"fire","kind":"timers"}',
    ];
    // Records of the states interleaved, every key twice (merge rules across the file).
    for (let pass = 0; pass < 2; pass++)
      for (let i = 0; i < 150; i++) {
        lines.push(JSON.stringify({ operator: 'op', state: 'count', key: `k${i}`, value: pass === 0 ? -1 : i }));
        lines.push(JSON.stringify({ operator: 'op', state: 'events', key: `k${i}`, value: [`e${i}-${pass}`] }));
        lines.push(
          JSON.stringify({ operator: 'op', state: 'attrs', key: `k${i}`, userKey: `u${pass}`, value: i + pass }),
        );
        lines.push(
          JSON.stringify({ operator: 'op', state: 'fire', key: `k${i}`, namespace: 'w', timestamp: 1000 + pass }),
        );
      }
    const file = join(root, 'input.jsonl');
    await writeFile(file, `${lines.join('\n')}\n`);
    await bootstrapSavepoint(join(root, 'from-file'), await readBootstrapFile(file), {
      memoryBytes: 1024,
      timestamp: 1,
    });
    await bootstrapSavepoint(join(root, 'from-lines'), await parseBootstrapLines(lines, 'input.jsonl'), {
      timestamp: 1,
    });
    const fromFile = await contents(join(root, 'from-file'));
    expect(fromFile).toHaveLength(150 * 6);
    expect(fromFile).toContain(JSON.stringify(['events', 'k7', ['e7-0', 'e7-1']]));
    expect(fromFile).toContain(JSON.stringify(['count', 'k7', 7]));
    expect(fromFile).toEqual(await contents(join(root, 'from-lines')));
  });
});

describe('bootstrap streams operator state', () => {
  it('writes elements from a generator past the 1 MiB write size and reads every one back, in order', async () => {
    const N = 40_000; // ~1.6 MiB of split elements over 3 subtasks, so each stream is flushed more than once
    const element = (i: number): string => `element-${String(i).padStart(8, '0')}-${'x'.repeat(24)}`;
    async function* elements(): AsyncGenerator<string> {
      for (let i = 0; i < N; i++) yield element(i);
    }
    async function* rules(): AsyncGenerator<readonly [string, number]> {
      for (let i = 0; i < 3; i++) yield [`rule-${i}`, i];
    }
    const dst = join(root, 'operator-state');
    await bootstrapSavepoint(dst, [
      {
        operatorId: 'src',
        parallelism: 3,
        maxParallelism: 8,
        operatorState: [
          operatorList('offsets', stringSerializer, elements()),
          operatorList('empty', stringSerializer, []),
          broadcastEntries('rules', stringSerializer, int32Serializer, rules()),
        ],
      },
    ]);
    const reader = await openSnapshot(dst);
    try {
      const op = reader.operator('src');
      const got: string[] = [];
      for await (const e of op.operatorListState('offsets')) got.push(e.value as string);
      // Round-robin over 3 subtasks, read subtask by subtask: compare as sets of the same size.
      expect(got).toHaveLength(N);
      expect([...got].sort()).toEqual(Array.from({ length: N }, (_, i) => element(i)));
      const rulesRead: [unknown, unknown][] = [];
      for await (const e of op.broadcastState('rules')) rulesRead.push([e.key, e.value]);
      expect(rulesRead).toEqual([
        ['rule-0', 0],
        ['rule-1', 1],
        ['rule-2', 2],
      ]);
      expect(reader.describe()[0].operatorStates.map((s) => s.name)).toEqual(['offsets', 'rules']);
    } finally {
      await reader.close();
    }
  });
});

describe('parseBootstrapLines', () => {
  const lines = [
    '{"type":"operator","id":"op","parallelism":2,"maxParallelism":32,"keySerializer":"string"}',
    '{"type":"state","operator":"op","name":"count","kind":"value","serializer":"int32"}',
    '{"type":"state","operator":"op","name":"events","kind":"list","serializer":"string"}',
    '{"type":"state","operator":"op","name":"attrs","kind":"map","userKeySerializer":"string","serializer":"int32"}',
    '{"type":"state","operator":"op","name":"fire","kind":"timers"}',
    ...Array.from({ length: 50 }, (_, i) => JSON.stringify({ operator: 'op', state: 'count', key: `k${i}`, value: i })),
    ...Array.from({ length: 50 }, (_, i) =>
      JSON.stringify({ operator: 'op', state: 'events', key: `k${i}`, value: [`e${i}`] }),
    ),
  ];

  it('reads lines that can be iterated again once per state instead of holding the records; a generator is held', async () => {
    // Counts the passes read to their end.
    let passes = 0;
    const reiterable: Iterable<string> = {
      [Symbol.iterator]: () => {
        const it = lines[Symbol.iterator]();
        return {
          next: () => {
            const r = it.next();
            if (r.done === true) passes++;
            return r;
          },
        };
      },
    };
    const fromArray = await parseBootstrapLines(reiterable, 'input.jsonl');
    expect(passes).toBe(1); // the check
    await bootstrapSavepoint(join(root, 'lines-array'), fromArray, { timestamp: 1 });
    expect(passes).toBe(5); // and one pass per state (4)
    function* once(): Generator<string> {
      yield* lines;
    }
    await bootstrapSavepoint(join(root, 'lines-generator'), await parseBootstrapLines(once(), 'input.jsonl'), {
      timestamp: 1,
    });
    const got = await contents(join(root, 'lines-array'));
    expect(got).toHaveLength(100);
    expect(got).toContain(JSON.stringify(['count', 'k7', 7]));
    expect(got).toEqual(await contents(join(root, 'lines-generator')));
  });

  it('still names the line of a bad record of a re-iterable input, before anything is written', async () => {
    const bad = [...lines, JSON.stringify({ operator: 'op', state: 'count', key: 'k', value: 'x' })];
    await expect(parseBootstrapLines(bad, 'input.jsonl')).rejects.toMatchObject({
      code: 'INVALID_INPUT',
      line: bad.length,
    });
  });
});
