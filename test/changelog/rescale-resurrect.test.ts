import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import { leveldb } from '../../backends/leveldb/index.js';
import type { StateBackend } from '../../src/backend/contract.js';
import { changelog } from '../../src/changelog/index.js';
import { localCheckpointStorage, type BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { subtaskForKey } from '../../src/keygroups/key-groups.js';
import { valueState } from '../../src/state/descriptors.js';
import { MAX_P, MiniJob } from './job.js';

/**
 * Lifecycle finding F2: changelog(leveldb), parallelism 1 → 2 → restore at 1 (or 3) resurrected a
 * cleared key. After 1 → 2 a changelog handle may nest the parallelism-1 materialization (all key
 * groups, key-0 included), clipped to its own range; the LevelDB restore opened such a database
 * whole as its base and cleared only outside the restoring subtask's range, so key-0's stale row
 * stayed (copying the owning handle's rows in only adds rows).
 */
const JOB = 'job-rescale-resurrect';
const value = valueState<string>('v', { serializer: stringSerializer });
const CLEARED = 'key-0';
// Only the cleared key (the finding's reproduction: wrong at parallelism 1), and a few more (wrong at 3).
const keySets = [['key-0'], ['key-0', 'key-1', 'key-2', 'key-3', 'key-4', 'key-5']];

const level = (root: string): StateBackend =>
  leveldb({ workingDir: join(root, `work-${Math.random().toString(16).slice(2)}`) });
const variants: { name: string; make: (root: string, storage: BlobCheckpointStorage) => StateBackend }[] = [
  {
    name: 'changelog(leveldb)',
    make: (root, storage) => changelog({ backend: level(root), storage, materializationIntervalMs: 0 }),
  },
  {
    name: 'changelog(filesystem)',
    make: (root, storage) =>
      changelog({
        backend: filesystem({ checkpointDir: join(root, 'cp'), inlineThreshold: 0 }),
        storage,
        materializationIntervalMs: 0,
      }),
  },
  { name: 'leveldb', make: (root) => level(root) },
];

const roots: string[] = [];
afterEach(async () => {
  for (const r of roots.splice(0)) await rm(r, { recursive: true, force: true });
});

/** Restores `pointer` at `parallelism` into fresh backends (another job id, no-claim) and reads every key. */
async function readAt(
  backend: StateBackend,
  storage: BlobCheckpointStorage,
  pointer: string,
  parallelism: number,
  keys: readonly string[],
): Promise<Map<string, string>> {
  const job = await MiniJob.start({
    jobId: `${JOB}-read-${parallelism}`,
    backend,
    storage,
    parallelism,
    pointer,
    restoreMode: 'no-claim',
  });
  try {
    const got = new Map<string, string>();
    for (const key of keys) {
      const b = job.backends[subtaskForKey(key, stringSerializer, MAX_P, parallelism)];
      b.setCurrentKey(key);
      const x = b.getState(value).value();
      if (x !== null && x !== undefined) got.set(key, x);
    }
    return got;
  } finally {
    await job.close();
  }
}

describe('a key cleared after rescaling 1 → 2 stays cleared on restore (lifecycle finding F2)', () => {
  const cases = variants.flatMap((v) => keySets.map((keys) => ({ ...v, keys, count: keys.length })));
  it.each(cases)(
    '$name, $count key(s): restored at parallelism 1, 2 and 3 the cleared key is absent',
    async ({ make, keys }) => {
      const root = await mkdtemp(join(tmpdir(), 'streamstate-rescale-resurrect-'));
      roots.push(root);
      const storage = localCheckpointStorage(join(root, 'cp'), { inlineThreshold: 0 });

      const first = await MiniJob.start({
        jobId: JOB,
        backend: make(root, storage),
        storage,
        parallelism: 1,
        numRetained: 1,
      });
      const expected = new Map<string, string>();
      for (const key of keys) {
        first.backends[0].setCurrentKey(key);
        first.backends[0].getState(value).update(`old-${key}`);
        expected.set(key, `old-${key}`);
      }
      const one = await first.checkpoint();
      await first.close();

      const second = await MiniJob.start({
        jobId: JOB,
        backend: make(root, storage),
        storage,
        parallelism: 2,
        numRetained: 1,
        pointer: one.info.pointer,
      });
      const owner = second.backends[subtaskForKey(CLEARED, stringSerializer, MAX_P, 2)];
      owner.setCurrentKey(CLEARED);
      owner.getState(value).clear();
      expected.delete(CLEARED);
      const two = await second.checkpoint();
      await second.close();

      for (const parallelism of [1, 2, 3]) {
        expect(
          await readAt(make(root, storage), storage, two.info.pointer, parallelism, keys),
          `restored at parallelism ${parallelism}`,
        ).toEqual(expected);
      }
    },
    20_000,
  );
});
