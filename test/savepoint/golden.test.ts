import { cp, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import type { StateBackend } from '../../src/backend/contract.js';
import type { KeyGroupsStateHandle } from '../../src/backend/handles.js';
import { changelog } from '../../src/changelog/backend.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { readStreamHandle } from '../../src/checkpoint/streams.js';
import { keyGroupForKey } from '../../src/keygroups/key-groups.js';
import { murmur3 } from '../../src/keygroups/murmur3.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { cli, tempDir } from '../cli/support.js';
import { GOLDEN_DATA, GOLDEN_DIR, GOLDEN_PARALLELISM, GOLDEN_SAVEPOINTS, makeGolden } from '../fixtures/make-golden.js';
import { readJob, writeJob, type JobContents } from './support/job.js';

/**
 * Golden savepoints committed under test/fixtures/golden (written by test/fixtures/make-golden.ts
 * with an earlier build): they must keep verifying and restoring into every backend, and the
 * canonical bytes of today's backends must equal them. Regenerate on purpose only:
 * UPDATE_GOLDEN=1 npx vitest run test/savepoint/golden.test.ts
 */

const update = process.env.UPDATE_GOLDEN === '1';

describe.runIf(update)('regenerate golden savepoints', () => {
  it('writes test/fixtures/golden', async () => {
    await makeGolden();
  }, 60_000);
});

describe.skipIf(update)('golden savepoints', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  let expected: JobContents;
  const names = Object.keys(GOLDEN_SAVEPOINTS);

  const backends: Record<string, () => StateBackend> = {
    memory: () => new HeapStateBackend({ name: 'memory' }),
    leveldb: () => leveldb({ workingDir: join(root, 'work') }),
    'changelog(memory)': () =>
      changelog({
        backend: new HeapStateBackend({ name: 'memory' }),
        storage: localCheckpointStorage(join(root, 'cl')),
      }),
  };

  beforeAll(async () => {
    ({ dir: root, cleanup } = await tempDir('ss-golden-'));
    // Restores never write into a savepoint, but work on a copy all the same.
    await cp(GOLDEN_DIR, join(root, 'golden'), { recursive: true });
    expected = JSON.parse(await readFile(join(GOLDEN_DIR, 'expected-contents.json'), 'utf8')) as JobContents;
  });
  afterAll(async () => cleanup());

  const copyOf = (name: string): string => join(root, 'golden', name);

  it.each(names)('%s verifies', async (name) => {
    const r = await cli(['verify', copyOf(name)]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
  });

  const restores = names.flatMap((name) =>
    Object.keys(backends).flatMap((b) => [2, 3].map((p) => [name, b, p] as const)),
  );
  it.each(restores)('%s restores into %s at parallelism %i', async (name, backend, p) => {
    if (GOLDEN_SAVEPOINTS[name].format === 'native' && !name.startsWith(backend)) return; // native: own backend only
    expect(await readJob(backends[backend](), copyOf(name), { parallelism: p })).toEqual(expected);
  });

  async function keyedStreams(dir: string): Promise<Buffer[]> {
    const { metadata, files } = await localCheckpointStorage(join(dir, '..')).resolve(dir);
    const out: Buffer[] = [];
    for (const s of metadata.operators[0].subtasks)
      out.push(await readStreamHandle((s.keyed[0] as KeyGroupsStateHandle).stream, files));
    return out;
  }

  it('canonical data of different backends is byte-identical', async () => {
    const memory = await keyedStreams(copyOf('memory-canonical'));
    for (const other of ['leveldb-canonical', 'changelog-memory-canonical']) {
      const streams = await keyedStreams(copyOf(other));
      expect({ other, equal: streams.map((s, i) => s.equals(memory[i])) }).toEqual({ other, equal: [true, true] });
    }
  });

  it("today's backends write the golden canonical bytes", async () => {
    for (const [name, make] of [
      ['memory', backends.memory],
      ['leveldb', backends.leveldb],
    ] as const) {
      const dir = join(root, `fresh-${name}`);
      await mkdir(dir, { recursive: true });
      const sp = await writeJob(make(), {
        root: dir,
        parallelism: GOLDEN_PARALLELISM,
        format: 'canonical',
        data: GOLDEN_DATA,
        jobId: 'golden',
      });
      const fresh = await keyedStreams(sp);
      const golden = await keyedStreams(copyOf('memory-canonical'));
      expect({ name, equal: fresh.map((s, i) => s.equals(golden[i])) }).toEqual({ name, equal: [true, true] });
    }
  });
});

describe('key-group hash test vectors', () => {
  it('murmur3_32 (seed 0) matches the reference MurmurHash3_x86_32 values', () => {
    expect(murmur3(Buffer.alloc(0))).toBe(0);
    expect(murmur3(Buffer.from('hello'))).toBe(0x248bfa47);
    expect(murmur3(Buffer.from('The quick brown fox jumps over the lazy dog'))).toBe(0x2e4ff723);
  });

  it('keys map to the recorded key groups', async () => {
    const vectors = JSON.parse(await readFile(join(GOLDEN_DIR, 'key-group-vectors.json'), 'utf8')) as Array<{
      key: string | number;
      serializer: string;
      bytesHex: string;
      murmur3: number;
      maxParallelism: number;
      keyGroup: number;
    }>;
    expect(vectors.length).toBeGreaterThan(20);
    for (const v of vectors) {
      const ser = v.serializer === stringSerializer.id ? stringSerializer : int32Serializer;
      const bytes = (ser.serialize as (x: unknown) => Uint8Array)(v.key);
      expect(Buffer.from(bytes).toString('hex')).toBe(v.bytesHex);
      expect(murmur3(bytes)).toBe(v.murmur3);
      expect(keyGroupForKey(v.key as never, ser as never, v.maxParallelism)).toBe(v.keyGroup);
    }
  });
});
