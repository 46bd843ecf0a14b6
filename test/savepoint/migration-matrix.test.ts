import { cp, mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import type { StateBackend } from '../../src/backend/contract.js';
import { changelog } from '../../src/changelog/backend.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { tempDir } from '../cli/support.js';
import { readJob, writeJob, type JobContents } from './support/job.js';

/**
 * Cross-backend migration: a canonical savepoint from any backend restores into any other, also at
 * another parallelism, with identical logical contents (values, list order, maps, namespaces,
 * timers, operator state). Native savepoints restore into their own backend at any parallelism,
 * also after the directory was moved.
 */

let root: string;
let cleanup: () => Promise<void>;

const BACKENDS: Record<string, () => StateBackend> = {
  memory: () => new HeapStateBackend({ name: 'memory' }),
  filesystem: () => new HeapStateBackend({ name: 'filesystem' }),
  leveldb: () => leveldb({ workingDir: join(root, 'work') }),
  'changelog(memory)': () =>
    changelog({
      backend: new HeapStateBackend({ name: 'memory' }),
      storage: localCheckpointStorage(join(root, 'changelog')),
      materializationIntervalMs: 0,
    }),
  'changelog(leveldb)': () =>
    changelog({
      backend: leveldb({ workingDir: join(root, 'work') }),
      storage: localCheckpointStorage(join(root, 'changelog')),
    }),
};
const NAMES = Object.keys(BACKENDS);
/** [written at, restored at] */
const RESCALES: Array<[number, number]> = [
  [2, 2],
  [2, 3],
  [4, 1],
];
const KEYS = { keys: 40 };

const canonical = new Map<string, string>();
const native = new Map<string, string>();
const expected = new Map<number, JobContents>();

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-matrix-'));
  for (const name of NAMES) {
    for (const p of new Set(RESCALES.map(([from]) => from))) {
      const dir = join(root, `${name}-p${p}`);
      await mkdir(dir, { recursive: true });
      canonical.set(
        `${name}/${p}`,
        await writeJob(BACKENDS[name](), { root: dir, parallelism: p, format: 'canonical', data: KEYS }),
      );
      native.set(
        `${name}/${p}`,
        await writeJob(BACKENDS[name](), { root: dir, parallelism: p, format: 'native', data: KEYS }),
      );
    }
  }
  // The reference: the heap backend's own view of what it wrote.
  for (const p of new Set(RESCALES.map(([from]) => from)))
    expected.set(p, await readJob(BACKENDS.memory(), native.get(`memory/${p}`)!, { parallelism: p }));
}, 120_000);

afterAll(async () => cleanup());

describe('canonical savepoints: every backend x every backend x parallelism changes', () => {
  const cases = NAMES.flatMap((from) => NAMES.flatMap((to) => RESCALES.map(([p, q]) => [from, to, p, q] as const)));
  it.each(cases)('%s -> %s, parallelism %i -> %i', async (from, to, p, q) => {
    const got = await readJob(BACKENDS[to](), canonical.get(`${from}/${p}`)!, { parallelism: q });
    const want = expected.get(p)!;
    expect(got.keyed.length).toBeGreaterThan(150);
    expect(got.timers).toHaveLength(KEYS.keys);
    expect(got).toEqual(want);
  });
});

describe('native savepoints restore into their own backend at any parallelism, after being moved', () => {
  const cases = NAMES.flatMap((name) => RESCALES.map(([p, q]) => [name, p, q] as const));
  it.each(cases)('%s native, parallelism %i -> %i', async (name, p, q) => {
    const original = native.get(`${name}/${p}`)!;
    const moved = join(root, 'moved', `${name.replace(/[()]/g, '_')}-${p}-${q}`);
    await mkdir(join(moved, '..'), { recursive: true });
    await cp(original, moved, { recursive: true });
    expect(await readJob(BACKENDS[name](), moved, { parallelism: q })).toEqual(expected.get(p));
  });

  it('a moved savepoint no longer needs its old location', async () => {
    const original = native.get('leveldb/2')!;
    const moved = join(root, 'relocated-leveldb');
    await rename(original, moved);
    expect(await readJob(BACKENDS.leveldb(), moved, { parallelism: 3 })).toEqual(expected.get(2));
    await rename(moved, original);
  });
});
