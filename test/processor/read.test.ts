import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import type { StateFileReader } from '../../src/backend/contract.js';
import type { FileStreamHandle, KeyGroupsStateHandle } from '../../src/backend/handles.js';
import { changelog } from '../../src/changelog/backend.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { isStreamStateError } from '../../src/errors.js';
import { keyGroupForKey } from '../../src/keygroups/key-groups.js';
import {
  bootstrapSavepoint,
  keyedValues,
  openSnapshot,
  SnapshotReader,
  UndecodedBytes,
} from '../../src/processor/index.js';
import { locateSnapshot } from '../../src/savepoint/locate.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import { valueState } from '../../src/state/descriptors.js';
import { cli, tempDir } from '../cli/support.js';
import { MAX_PARALLELISM, OPERATOR, writeJob } from '../savepoint/support/job.js';
import { jobModel, readerContents } from './support.js';

let root: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir: root, cleanup } = await tempDir('ss-processor-read-')));
afterAll(async () => cleanup());

describe('the canonical copy of a snapshot that must be restored to be read', () => {
  it('is registered as a temporary path while the reader is open (SIGINT cleanup) and removed on close', async () => {
    const dir = await writeJob(leveldb({ workingDir: join(root, 'work-ldb-temps') }), {
      root: join(root, 'ldb-temps'),
      parallelism: 2,
      format: 'native',
      data: { keys: 10 },
    });
    const live = new Set<string>();
    const temporaryPaths = { add: (p: string) => void live.add(p), delete: (p: string) => void live.delete(p) };
    const reader = await openSnapshot(dir, { temporaryPaths });
    let copies: string[];
    try {
      copies = [...live];
      expect(copies).toHaveLength(1);
      expect(copies[0]).toMatch(/streamstate-read-[0-9a-f]{12}$/);
      expect((await stat(copies[0])).isDirectory()).toBe(true);
      expect(await readerContents(reader, OPERATOR)).toEqual(jobModel(10, 2));
    } finally {
      await reader.close();
    }
    expect(live.size).toBe(0);
    await expect(stat(copies[0])).rejects.toMatchObject({ code: 'ENOENT' });
  }, 30_000);
});

describe('reading a job-written snapshot yields what the job wrote', () => {
  const sources = {
    'memory canonical': { backend: () => new HeapStateBackend({ name: 'memory' }), format: 'canonical' as const },
    'memory native (heap-v1)': { backend: () => new HeapStateBackend({ name: 'memory' }), format: 'native' as const },
    'leveldb native': { backend: () => leveldb({ workingDir: join(root, 'work-ldb') }), format: 'native' as const },
    'changelog(memory) native': {
      backend: () =>
        changelog({
          backend: new HeapStateBackend({ name: 'memory' }),
          storage: localCheckpointStorage(join(root, 'cl')),
        }),
      format: 'native' as const,
    },
  };
  it.each(Object.keys(sources) as (keyof typeof sources)[])(
    '%s',
    async (name) => {
      const s = sources[name];
      const dir = await writeJob(s.backend(), {
        root: join(root, name.replace(/\W+/g, '-')),
        parallelism: 3,
        format: s.format,
        data: { keys: 40 },
      });
      const reader = await openSnapshot(dir);
      try {
        expect(await readerContents(reader, OPERATOR)).toEqual(jobModel(40, 3));
        expect(reader.describe()[0].keyedStates.map((st) => `${st.name}:${st.kind}`)).toEqual([
          'attrs:map',
          'count:value',
          'events:list',
          'profile:value',
          'timers:timers',
          'total:reducing',
        ]);
      } finally {
        await reader.close();
      }
    },
    30_000,
  );
});

/** Records every ranged read. */
class CountingFiles implements StateFileReader {
  readonly ranges: [number, number][] = [];
  constructor(private readonly inner: StateFileReader) {}
  read(file: FileStreamHandle): Promise<Buffer> {
    this.ranges.push([0, file.size]);
    return this.inner.read(file);
  }
  readRange(file: FileStreamHandle, offset: number, length: number): Promise<Buffer> {
    this.ranges.push([offset, length]);
    return this.inner.readRange(file, offset, length);
  }
  download(file: FileStreamHandle, localPath: string): Promise<void> {
    return this.inner.download(file, localPath);
  }
  describe(file: FileStreamHandle): string {
    return this.inner.describe(file);
  }
}

describe('readKey', () => {
  it("reads only the block of the key's key group and returns every record of the key", async () => {
    const dir = await writeJob(new HeapStateBackend({ name: 'memory' }), {
      root: join(root, 'rangedkey'),
      parallelism: 2,
      format: 'canonical',
      data: { keys: 200 },
    });
    const located = await locateSnapshot(dir);
    const files = new CountingFiles(located.snapshot.files);
    const reader = SnapshotReader.of({ ...located.snapshot, files });
    const key = 'key-6';
    const { keyGroup, records } = await reader
      .operator<string>(OPERATOR, { keySerializer: stringSerializer })
      .readKey(key);
    expect(keyGroup).toBe(keyGroupForKey(key, stringSerializer, MAX_PARALLELISM));
    const block = located.snapshot.metadata.operators[0].subtasks
      .flatMap((s) => s.keyed as KeyGroupsStateHandle[])
      .flatMap((h) => h.blocks)
      .find((b) => b.keyGroup === keyGroup)!;
    // The 12-byte header check, then exactly the key group's block: nothing else of the file.
    expect(files.ranges).toEqual([
      [0, 12],
      [block.offset, block.length],
    ]);
    const got = records.map((r) => JSON.stringify(r)).sort();
    expect(got).toEqual(
      [
        { state: 'attrs', kind: 'map', namespace: '', userKey: 'z0-6', value: { v: 60 } },
        { state: 'attrs', kind: 'map', namespace: '', userKey: 'z1-6', value: { v: 61 } },
        { state: 'attrs', kind: 'map', namespace: '', userKey: 'z2-6', value: { v: 62 } },
        { state: 'count', kind: 'value', namespace: '', value: 6 },
        { state: 'events', kind: 'list', namespace: 'w1', value: ['e6-c', 'e6-a', 'e6-b'] },
        { state: 'events', kind: 'list', namespace: 'w2', value: ['late-6'] },
        { state: 'profile', kind: 'value', namespace: '', value: { name: 'n6', tags: ['t1', 'x'] } },
        { state: 'timers', kind: 'timers', namespace: 'w1', timestamp: 1006 },
        { state: 'total', kind: 'reducing', namespace: '', value: 7 },
      ]
        .map((r) => JSON.stringify(r))
        .sort(),
    );
    const none = await reader.operator<string>(OPERATOR).readKey('no-such-key');
    expect(none.records).toEqual([]);
    await located.close();
  });
});

/** A serializer only the job has: points as two int16. */
const pointSerializer: Serializer<{ x: number; y: number }> = {
  id: 'myapp.point',
  version: 3,
  mapKey: 'bytes',
  serialize: (p) => Buffer.from([(p.x >> 8) & 0xff, p.x & 0xff, (p.y >> 8) & 0xff, p.y & 0xff]),
  deserialize: (b) => ({ x: (b[0] << 8) | b[1], y: (b[2] << 8) | b[3] }),
  copy: (p) => ({ ...p }),
};

describe('a savepoint someone hands you', () => {
  it('custom serializers degrade to bytes with their id; passing the serializer decodes them', async () => {
    const dir = join(root, 'custom');
    const where = valueState('where', { serializer: pointSerializer });
    await bootstrapSavepoint(dir, [
      {
        operatorId: 'geo',
        parallelism: 1,
        keySerializer: stringSerializer,
        keyed: [keyedValues(where, [{ key: 'a', value: { x: 1, y: 258 } }])],
      },
    ]);
    const reader = await openSnapshot(dir);
    try {
      const [raw] = await collect(reader.operator('geo').values('where'));
      expect(raw.key).toBe('a');
      expect(raw.value).toBeInstanceOf(UndecodedBytes);
      expect((raw.value as UndecodedBytes).serializerId).toBe('myapp.point');
      expect([...(raw.value as UndecodedBytes).bytes]).toEqual([0, 1, 1, 2]);
      expect(JSON.stringify(raw.value)).toBe('{"$serializer":"myapp.point","$base64":"AAEBAg=="}');
      const [typed] = await collect(reader.operator('geo').values('where', { serializer: pointSerializer }));
      expect(typed.value).toEqual({ x: 1, y: 258 });
      // A serializer that cannot read the recorded one is refused, not guessed.
      await expect(
        collect(
          reader.operator('geo').values('where', { serializer: stringSerializer as unknown as Serializer<unknown> }),
        ),
      ).rejects.toMatchObject({ code: 'SERIALIZER_INCOMPATIBLE' });
    } finally {
      await reader.close();
    }
    // The CLI on the same savepoint: dump prints the bytes with the serializer's id, verify checks their framing.
    const d = await cli(['dump', dir, '--operator', 'geo']);
    expect(d.code).toBe(0);
    expect(JSON.parse(d.stdout)).toEqual({
      state: 'where',
      kind: 'value',
      keyGroup: expect.any(Number) as number,
      key: 'a',
      namespace: '',
      value: { $serializer: 'myapp.point', $base64: 'AAEBAg==' },
    });
    const v = await cli(['verify', dir]);
    expect(v.code).toBe(0);
    expect(v.stdout).toContain('1 records with custom serializers');
  });

  it('unknown operators and states are typed errors', async () => {
    const dir = await writeJob(new HeapStateBackend({ name: 'memory' }), {
      root: join(root, 'unknown'),
      parallelism: 1,
      format: 'canonical',
      data: { keys: 3 },
    });
    const reader = await openSnapshot(dir);
    try {
      expect(catchCode(() => reader.operator('nope'))).toBe('UNKNOWN_OPERATOR');
      await expect(collect(reader.operator(OPERATOR).values('nope'))).rejects.toMatchObject({
        code: 'STATE_NOT_REGISTERED',
      });
      await expect(collect(reader.operator(OPERATOR).values('events'))).rejects.toMatchObject({
        code: 'STATE_KIND_MISMATCH',
      });
      await expect(collect(reader.operator(OPERATOR).broadcastState('offsets'))).rejects.toMatchObject({
        code: 'STATE_KIND_MISMATCH',
      });
    } finally {
      await reader.close();
    }
    await expect(openSnapshot(join(root, 'missing'))).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });
});

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

function catchCode(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return isStreamStateError(err) ? err.code : 'untyped';
  }
  return undefined;
}
