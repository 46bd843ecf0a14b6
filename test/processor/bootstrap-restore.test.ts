import fc from 'fast-check';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import type { StateBackend } from '../../src/backend/contract.js';
import { changelog } from '../../src/changelog/backend.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import {
  bootstrapSavepoint,
  broadcastEntries,
  keyedLists,
  keyedMaps,
  keyedTimers,
  keyedValues,
  operatorList,
} from '../../src/processor/index.js';
import { int32Serializer, msgpackSerializer, stringSerializer } from '../../src/serializers/builtins.js';
import { tempDir } from '../cli/support.js';
import { descriptors, MAX_PARALLELISM, OPERATOR, readJob, type JobContents } from '../savepoint/support/job.js';

/**
 * bootstrap → restore: a savepoint bootstrapped from random inputs restores through the
 * CheckpointCoordinator into every backend, at another parallelism too, with exactly the input
 * as its logical contents (compared in readJob's normal form).
 */

interface Model {
  readonly keys: {
    key: string;
    count?: number;
    profile?: { name: string; tags: string[] };
    events: Array<[string, string[]]>;
    attrs: Array<[string, number]>;
    total?: number;
    timers: Array<[number, string]>;
  }[];
  readonly split: string[];
  readonly union: number[];
  readonly rules: Array<[string, number]>;
}

const name = fc.string({ minLength: 1, maxLength: 6 });
const modelArb: fc.Arbitrary<Model> = fc.record({
  keys: fc.uniqueArray(
    fc.record({
      key: fc.string({ maxLength: 8 }),
      count: fc.option(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), { nil: undefined }),
      profile: fc.option(fc.record({ name, tags: fc.array(name, { maxLength: 3 }) }), { nil: undefined }),
      events: fc.uniqueArray(
        fc.tuple(fc.constantFrom('', 'w1', 'w2'), fc.array(name, { minLength: 1, maxLength: 3 })),
        { selector: (e) => e[0], maxLength: 3 },
      ),
      attrs: fc.uniqueArray(fc.tuple(name, fc.integer()), { selector: (e) => e[0], maxLength: 3 }),
      total: fc.option(fc.integer(), { nil: undefined }),
      timers: fc.uniqueArray(fc.tuple(fc.integer({ min: 0, max: 10_000 }), fc.constantFrom('w1', 'w2')), {
        selector: (t) => `${t[0]}/${t[1]}`,
        maxLength: 2,
      }),
    }),
    { selector: (k) => k.key, maxLength: 25 },
  ),
  split: fc.array(name, { maxLength: 6 }),
  union: fc.uniqueArray(fc.integer({ min: 0, max: 1000 }), { maxLength: 4 }),
  rules: fc.uniqueArray(fc.tuple(name, fc.integer()), { selector: (e) => e[0], maxLength: 3 }),
});

function stable(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (x instanceof Map ? [...x].sort() : x));
}

/** What readJob returns for a job holding `m`. */
function expected(m: Model): JobContents {
  const keyed: string[] = [];
  const timers: string[] = [];
  for (const k of m.keys) {
    if (k.count !== undefined) keyed.push(stable(['count', k.key, '', k.count]));
    if (k.profile !== undefined) keyed.push(stable(['profile', k.key, '', k.profile]));
    for (const [ns, els] of k.events) keyed.push(stable(['events', k.key, ns, els]));
    if (k.attrs.length > 0)
      keyed.push(
        stable([
          'attrs',
          k.key,
          '',
          [...k.attrs].map(([a, v]) => [a, { v }]).sort(([a], [b]) => ((a as string) < (b as string) ? -1 : 1)),
        ]),
      );
    if (k.total !== undefined) keyed.push(stable(['total', k.key, '', k.total]));
    for (const [ts, ns] of k.timers) timers.push(stable([ts, k.key, ns]));
  }
  return {
    keyed: keyed.sort(),
    timers: timers.sort(),
    split: [...m.split].sort(),
    union: [...new Set(m.union.map(String))].sort(),
    broadcast: [stable([...m.rules].sort())],
  };
}

async function bootstrap(m: Model, dst: string, parallelism: number): Promise<void> {
  await bootstrapSavepoint(dst, [
    {
      operatorId: OPERATOR,
      parallelism,
      maxParallelism: MAX_PARALLELISM,
      keySerializer: stringSerializer,
      keyed: [
        keyedValues(
          descriptors.count,
          m.keys.flatMap((k) => (k.count === undefined ? [] : [{ key: k.key, value: k.count }])),
        ),
        keyedValues(
          descriptors.profile,
          m.keys.flatMap((k) => (k.profile === undefined ? [] : [{ key: k.key, value: k.profile }])),
        ),
        keyedLists(
          descriptors.events,
          m.keys.flatMap((k) => k.events.map(([namespace, value]) => ({ key: k.key, namespace, value }))),
        ),
        keyedMaps(
          descriptors.attrs,
          m.keys.flatMap((k) => k.attrs.map(([userKey, v]) => ({ key: k.key, userKey, value: { v } }))),
        ),
        keyedValues(
          descriptors.total,
          m.keys.flatMap((k) => (k.total === undefined ? [] : [{ key: k.key, value: k.total }])),
        ),
        keyedTimers(
          'timers',
          m.keys.flatMap((k) => k.timers.map(([timestamp, namespace]) => ({ key: k.key, namespace, timestamp }))),
        ),
      ],
      operatorState: [
        operatorList('offsets', stringSerializer, m.split),
        operatorList('sources', int32Serializer, m.union, 'union'),
        broadcastEntries('rules', stringSerializer, msgpackSerializer<number>(), m.rules),
      ],
    },
  ]);
}

describe('bootstrap → restore in every backend', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let n = 0;
  beforeAll(async () => ({ dir: root, cleanup } = await tempDir('ss-bootstrap-')));
  afterAll(async () => cleanup());

  const backends: Record<string, () => StateBackend> = {
    memory: () => new HeapStateBackend({ name: 'memory' }),
    filesystem: () => new HeapStateBackend({ name: 'filesystem' }),
    leveldb: () => leveldb({ workingDir: join(root, `work-${n++}`) }),
    'changelog(memory)': () =>
      changelog({
        backend: new HeapStateBackend({ name: 'memory' }),
        storage: localCheckpointStorage(join(root, `cl-${n++}`)),
      }),
    'changelog(leveldb)': () =>
      changelog({
        backend: leveldb({ workingDir: join(root, `work-${n++}`) }),
        storage: localCheckpointStorage(join(root, `cl-${n++}`)),
      }),
  };

  it.each(Object.keys(backends))(
    '%s restores exactly the bootstrapped input',
    async (backend) => {
      await fc.assert(
        fc.asyncProperty(
          modelArb,
          fc.integer({ min: 1, max: 4 }),
          fc.integer({ min: 1, max: 4 }),
          async (m, p, restoreP) => {
            const dst = join(root, `sp-${n++}`);
            await bootstrap(m, dst, p);
            expect(await readJob(backends[backend](), dst, { parallelism: restoreP })).toEqual(expected(m));
          },
        ),
        { numRuns: 6 },
      );
    },
    60_000,
  );
});
