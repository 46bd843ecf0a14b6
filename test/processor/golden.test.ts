import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
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
  UndecodedBytes,
} from '../../src/processor/index.js';
import {
  float64Serializer,
  int64Serializer,
  msgpackSerializer,
  stringSerializer,
} from '../../src/serializers/builtins.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import { listState, mapState, valueState } from '../../src/state/descriptors.js';
import { cli, tempDir } from '../cli/support.js';

/**
 * A savepoint someone hands you (docs/FORMAT.md, "Self-describing snapshots"): committed under
 * test/processor/fixtures/handed-over with built-in, msgpack, TTL and custom serializers. Today's
 * dump and reader must decode it to the committed expectation without any of its code. Regenerate
 * only on purpose: UPDATE_GOLDEN=1 npx vitest run test/processor/golden.test.ts
 */

const FIXTURES = new URL('./fixtures/', import.meta.url).pathname;
const SAVEPOINT = join(FIXTURES, 'handed-over');
const EXPECTED = join(FIXTURES, 'handed-over.dump.jsonl');
const update = process.env.UPDATE_GOLDEN === '1';

const pointSerializer: Serializer<{ x: number; y: number }> = {
  id: 'myapp.point',
  version: 3,
  mapKey: 'bytes',
  serialize: (p) => Buffer.from([p.x & 0xff, p.y & 0xff]),
  deserialize: (b) => ({ x: b[0], y: b[1] }),
  copy: (p) => ({ ...p }),
};

async function generate(): Promise<void> {
  await rm(SAVEPOINT, { recursive: true, force: true });
  await mkdir(FIXTURES, { recursive: true });
  await bootstrapSavepoint(
    SAVEPOINT,
    [
      {
        operatorId: 'shop',
        parallelism: 2,
        maxParallelism: 32,
        keySerializer: stringSerializer,
        keyed: [
          keyedValues(valueState<bigint>('visits', { serializer: int64Serializer }), [
            { key: 'ann', value: 12n },
            { key: 'bob', value: 2n ** 40n },
          ]),
          keyedValues(valueState<unknown>('profile'), [
            {
              key: 'ann',
              value: { name: 'Ann', tags: new Set(['a', 'b']), since: new Date(Date.UTC(2025, 0, 2)), big: 2n ** 70n },
            },
          ]),
          keyedLists(listState<unknown>('cart'), [
            { key: 'bob', namespace: 'w1', value: [{ sku: 'x1', n: 2 }, [1, 'two']] },
          ]),
          keyedMaps(
            mapState<string, number>('prices', { keySerializer: stringSerializer, valueSerializer: float64Serializer }),
            [
              { key: 'ann', userKey: 'eur', value: 1.5 },
              { key: 'ann', userKey: 'usd', value: null },
            ],
          ),
          keyedValues(valueState<string>('session', { serializer: stringSerializer, ttl: { ttlMs: 60_000 } }), [
            { key: 'bob', value: 's-1' },
          ]),
          keyedValues(valueState('where', { serializer: pointSerializer }), [{ key: 'ann', value: { x: 7, y: 9 } }]),
          keyedTimers('timers', [{ key: 'ann', namespace: 'w1', timestamp: 1_767_225_600_000 }]),
        ],
        operatorState: [
          operatorList('offsets', stringSerializer, ['p0:10', 'p1:20']),
          broadcastEntries('rules', stringSerializer, msgpackSerializer<unknown>(), [['limit', { max: 3 }]]),
        ],
      },
    ],
    { jobId: 'handed-over', timestamp: Date.UTC(2026, 0, 1) },
  );
  const d = await cli(['dump', SAVEPOINT, '--operator', 'shop']);
  if (d.code !== 0) throw new Error(d.stderr);
  await writeFile(
    EXPECTED,
    `${d.stdout
      .split('\n')
      .filter((l) => l.length > 0)
      .sort()
      .join('\n')}\n`,
  );
}

describe.runIf(update)('regenerate', () => {
  it('writes the handed-over savepoint and its dump', generate);
});

describe.skipIf(update)('a handed-over savepoint decodes without its code', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let copy: string;
  beforeAll(async () => {
    ({ dir: root, cleanup } = await tempDir('ss-processor-golden-'));
    copy = join(root, 'handed-over');
    await cp(SAVEPOINT, copy, { recursive: true });
  });
  afterAll(async () => cleanup());

  it('dump prints the committed expectation', async () => {
    const d = await cli(['dump', copy, '--operator', 'shop']);
    expect(d.stderr).toBe('');
    expect(d.code).toBe(0);
    const got = d.stdout
      .split('\n')
      .filter((l) => l.length > 0)
      .sort();
    expect(got).toEqual((await readFile(EXPECTED, 'utf8')).split('\n').filter((l) => l.length > 0));
    expect(got.some((l) => l.includes('"$serializer":"myapp.point"'))).toBe(true);
  });

  it('the reader decodes built-in, msgpack and TTL values and keeps custom ones as bytes with their id', async () => {
    const reader = await openSnapshot(copy);
    try {
      const shop = reader.operator<string>('shop');
      const all = async <T>(it: AsyncIterable<T>): Promise<T[]> => {
        const out: T[] = [];
        for await (const x of it) out.push(x);
        return out;
      };
      expect((await all(shop.values('visits'))).map((e) => [e.key, e.value]).sort()).toEqual([
        ['ann', 12n],
        ['bob', 2n ** 40n],
      ]);
      const [profile] = await all(shop.values('profile'));
      expect(profile.value).toEqual({
        name: 'Ann',
        tags: new Set(['a', 'b']),
        since: new Date(Date.UTC(2025, 0, 2)),
        big: 2n ** 70n,
      });
      const [session] = await all(shop.values('session'));
      expect(session).toEqual({ key: 'bob', namespace: '', value: 's-1', lastAccess: Date.UTC(2026, 0, 1) });
      const [where] = await all(shop.values('where'));
      expect(where.value).toBeInstanceOf(UndecodedBytes);
      expect((where.value as UndecodedBytes).serializer).toEqual({ id: 'myapp.point', version: 3 });
      const [typed] = await all(shop.values('where', { serializer: pointSerializer }));
      expect(typed.value).toEqual({ x: 7, y: 9 });
      expect((await all(shop.mapEntries('prices'))).map((e) => [e.userKey, e.value])).toEqual([
        ['eur', 1.5],
        ['usd', null],
      ]);
      expect((await all(shop.broadcastState('rules'))).map((e) => [e.key, e.value])).toEqual([['limit', { max: 3 }]]);
    } finally {
      await reader.close();
    }
  });
});
