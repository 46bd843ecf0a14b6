import { afterEach, describe, expect, it } from 'vitest';
import type { CheckpointStreamFactory, OperatorBackendParams } from '../../src/backend/contract.js';
import type { OperatorStateHandle } from '../../src/backend/handles.js';
import { assignOperatorState } from '../../src/checkpoint/assignment.js';
import { memoryCheckpointStorage, type BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import type { OperatorSnapshot } from '../../src/checkpoint/metadata.js';
import { BlobStateFileReader } from '../../src/checkpoint/streams.js';
import { HeapOperatorStateBackend } from '../../src/operator/index.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import type { Serializer, SerializerSnapshot } from '../../src/serializers/serializer.js';
import { mapState } from '../../src/state/descriptors.js';
import { expectRejectsCode, expectThrowsCode } from '../support/errors.js';
import { GatedStreamFactory } from '../support/gated-streams.js';

const JOB = 'job-op';
let storage: BlobCheckpointStorage;
let nextId = 1;

afterEach(() => {
  nextId = 1;
});

function setup(inlineThreshold?: number): void {
  storage = memoryCheckpointStorage(inlineThreshold === undefined ? {} : { inlineThreshold });
}

function params(
  subtaskIndex = 0,
  parallelism = 1,
  handles?: readonly OperatorStateHandle[],
  files?: BlobStateFileReader,
): OperatorBackendParams {
  const base = { jobId: JOB, operatorId: 'op', subtaskIndex, parallelism };
  return handles === undefined ? base : { ...base, restore: { handles, files: files! } };
}

/** Snapshot through real checkpoint streams; returns the handle and a reader for the checkpoint's files. */
async function snapshot(
  backend: HeapOperatorStateBackend,
  wrap?: (s: CheckpointStreamFactory) => CheckpointStreamFactory,
): Promise<{ handle: OperatorStateHandle | null; files: BlobStateFileReader }> {
  const id = nextId++;
  const inner = storage.checkpointStreams(JOB, id);
  const task = await backend.snapshot(id, { type: 'checkpoint', streams: wrap ? wrap(inner) : inner });
  const handle = await task.done;
  return { handle, files: new BlobStateFileReader(storage.store, storage.checkpointPointer(JOB, id)) };
}

async function roundTrip(backend: HeapOperatorStateBackend): Promise<HeapOperatorStateBackend> {
  const { handle, files } = await snapshot(backend);
  await backend.close();
  return HeapOperatorStateBackend.create(params(0, 1, handle ? [handle] : [], files));
}

describe.each([
  ['inline streams', undefined],
  ['file streams', 0],
])('HeapOperatorStateBackend (%s)', (_label, threshold) => {
  it('registers list, union and broadcast states; getting one again gives the same state (item 59)', () => {
    setup(threshold);
    const b = new HeapOperatorStateBackend();
    const list = b.getListState<number>('list', int32Serializer);
    list.addAll([1, 2]);
    b.getUnionListState<string>('union', stringSerializer).add('u');
    b.getBroadcastState(
      mapState<string, number>('bc', { keySerializer: stringSerializer, valueSerializer: int32Serializer }),
    ).put('k', 1);
    expect(b.stateNames().sort()).toEqual(['bc', 'list', 'union']);
    expect(b.getListState<number>('list', int32Serializer).get()).toEqual([1, 2]);
    expect(b.getListState<number>('list', int32Serializer)).toBe(list);
    expect(
      b
        .getBroadcastState(
          mapState<string, number>('bc', { keySerializer: stringSerializer, valueSerializer: int32Serializer }),
        )
        .get('k'),
    ).toBe(1);
    expectThrowsCode(() => b.getUnionListState('list', int32Serializer), 'STATE_KIND_MISMATCH');
    expectThrowsCode(() => b.getListState('union', stringSerializer), 'STATE_KIND_MISMATCH');
    expectThrowsCode(() => b.getListState('bc'), 'STATE_KIND_MISMATCH');
    expectThrowsCode(() => b.getBroadcastState(mapState('list')), 'STATE_KIND_MISMATCH');
    expectThrowsCode(() => b.getListState('list', stringSerializer), 'SERIALIZER_INCOMPATIBLE');
  });

  it('a backend without states snapshots to null and writes nothing (item 60)', async () => {
    setup(threshold);
    const b = new HeapOperatorStateBackend();
    const { handle } = await snapshot(b);
    expect(handle).toBeNull();
    expect(await storage.listJobFiles(JOB)).toEqual([]);
  });

  it('broadcast-only: round trip, remove one, round trip, remove all, round trip (item 61)', async () => {
    setup(threshold);
    const desc = mapState<string, number>('bc', { keySerializer: stringSerializer, valueSerializer: int32Serializer });
    let b = new HeapOperatorStateBackend();
    b.getBroadcastState(desc).putAll([
      ['a', 1],
      ['b', 2],
      ['c', 3],
    ]);
    b = await roundTrip(b);
    expect([...b.getBroadcastState(desc).entries()]).toEqual([
      ['a', 1],
      ['b', 2],
      ['c', 3],
    ]);
    b.getBroadcastState(desc).remove('b');
    b = await roundTrip(b);
    expect([...b.getBroadcastState(desc).entries()]).toEqual([
      ['a', 1],
      ['c', 3],
    ]);
    b.getBroadcastState(desc).clear();
    b = await roundTrip(b);
    expect(b.stateNames()).toEqual(['bc']);
    expect(b.getBroadcastState(desc).size).toBe(0);
  });

  it('restores 2 list, 1 union and 3 broadcast states (one empty) exactly, in order (item 62)', async () => {
    setup(threshold);
    const b = new HeapOperatorStateBackend();
    b.getListState<number>('l1', int32Serializer).addAll([3, 1, 2]);
    b.getListState<{ n: number }>('l2').addAll([{ n: 1 }, { n: 2 }]);
    b.getUnionListState<string>('u').addAll(['x', 'y']);
    b.getBroadcastState(
      mapState<string, string>('b1', { keySerializer: stringSerializer, valueSerializer: stringSerializer }),
    ).put('k', 'v');
    b.getBroadcastState(mapState<{ id: number }, number[]>('b2')).put({ id: 7 }, [1, 2]);
    b.getBroadcastState(
      mapState<string, string>('b3', { keySerializer: stringSerializer, valueSerializer: stringSerializer }),
    );
    const r = await roundTrip(b);
    expect(r.stateNames().sort()).toEqual(['b1', 'b2', 'b3', 'l1', 'l2', 'u']);
    expect(r.getListState('l1', int32Serializer).get()).toEqual([3, 1, 2]);
    expect(r.getListState('l2').get()).toEqual([{ n: 1 }, { n: 2 }]);
    expect(r.getUnionListState('u').get()).toEqual(['x', 'y']);
    expect(
      r
        .getBroadcastState(
          mapState<string, string>('b1', { keySerializer: stringSerializer, valueSerializer: stringSerializer }),
        )
        .get('k'),
    ).toBe('v');
    const b2 = r.getBroadcastState(mapState<{ id: number }, number[]>('b2'));
    expect(b2.get({ id: 7 })).toEqual([1, 2]); // object keys match by value
    expect(
      r.getBroadcastState(mapState('b3', { keySerializer: stringSerializer, valueSerializer: stringSerializer })).size,
    ).toBe(0);
  });

  it('mutations during a blocked asynchronous snapshot do not leak into it (item 63)', async () => {
    setup(threshold);
    const b = new HeapOperatorStateBackend();
    const list = b.getListState<{ n: number }>('list');
    const item = { n: 1 };
    list.add(item);
    const other = b.getUnionListState<string>('other');
    other.add('keep');
    const bc = b.getBroadcastState(mapState<string, { v: number }>('bc', { keySerializer: stringSerializer }));
    const value = { v: 1 };
    bc.put('a', value);

    const id = nextId++;
    const gated = new GatedStreamFactory(storage.checkpointStreams(JOB, id));
    const task = await b.snapshot(id, { type: 'checkpoint', streams: gated });
    await gated.reached;
    item.n = 99; // in-place mutation of an element
    value.v = 99;
    list.add({ n: 2 });
    other.clear();
    bc.put('b', { v: 2 });
    b.getListState('late').add('new state');
    gated.gate.open();
    const handle = await task.done;
    const files = new BlobStateFileReader(storage.store, storage.checkpointPointer(JOB, id));
    const r = await HeapOperatorStateBackend.create(params(0, 1, [handle!], files));
    expect(r.stateNames().sort()).toEqual(['bc', 'list', 'other']);
    expect(r.getListState('list').get()).toEqual([{ n: 1 }]);
    expect(r.getUnionListState('other').get()).toEqual(['keep']);
    expect([
      ...r.getBroadcastState(mapState<string, { v: number }>('bc', { keySerializer: stringSerializer })).entries(),
    ]).toEqual([['a', { v: 1 }]]);
  });

  it('closing the backend during an asynchronous snapshot cancels it and removes its file (item 64)', async () => {
    setup(0);
    const b = new HeapOperatorStateBackend();
    b.getListState<string>('list').addAll(['a'.repeat(1000), 'b']);
    const id = nextId++;
    const gated = new GatedStreamFactory(storage.checkpointStreams(JOB, id));
    const task = await b.snapshot(id, { type: 'checkpoint', streams: gated });
    await gated.reached;
    await b.close();
    gated.gate.open();
    await expectRejectsCode(task.done, 'SNAPSHOT_CANCELLED');
    expect(gated.streams.every((s) => s.discarded)).toBe(true);
    expect(await storage.listJobFiles(JOB)).toEqual([]);
    await expectRejectsCode(
      b.snapshot(nextId++, { type: 'checkpoint', streams: storage.checkpointStreams(JOB, 9) }),
      'BACKEND_CLOSED',
    );
    expectThrowsCode(() => b.getListState('x'), 'BACKEND_CLOSED');
    await b.close(); // idempotent
  });
});

describe('HeapOperatorStateBackend restore', () => {
  it('carries restored states that are never registered into later snapshots', async () => {
    setup();
    const b = new HeapOperatorStateBackend();
    b.getListState<number>('kept', int32Serializer).addAll([1, 2]);
    b.getBroadcastState(
      mapState<string, number>('bc', { keySerializer: stringSerializer, valueSerializer: int32Serializer }),
    ).put('x', 5);
    const r1 = await roundTrip(b);
    r1.getUnionListState<string>('fresh', stringSerializer).add('f');
    const r2 = await roundTrip(r1); // 'kept' and 'bc' were never registered on r1
    expect(r2.stateNames().sort()).toEqual(['bc', 'fresh', 'kept']);
    expect(r2.getListState('kept', int32Serializer).get()).toEqual([1, 2]);
    expect(
      r2
        .getBroadcastState(mapState('bc', { keySerializer: stringSerializer, valueSerializer: int32Serializer }))
        .get('x'),
    ).toBe(5);
  });

  it('checks serializers and modes lazily, at registration', async () => {
    setup();
    const b = new HeapOperatorStateBackend();
    b.getListState<number>('list', int32Serializer).add(1);
    b.getUnionListState<number>('union', int32Serializer).add(2);
    const r = await roundTrip(b);
    const err = expectThrowsCode(() => r.getListState('list', stringSerializer), 'SERIALIZER_INCOMPATIBLE');
    expect(err.message).toContain('streamstate.int32@1');
    expectThrowsCode(() => r.getListState('union', int32Serializer), 'STATE_KIND_MISMATCH');
    expect(r.getUnionListState('union', int32Serializer).get()).toEqual([2]);
  });

  it('migrates with a serializer that can read the old version', async () => {
    setup();
    const v1: Serializer<number> = { ...int32Serializer, id: 'test.num', version: 1 };
    const b = new HeapOperatorStateBackend();
    b.getListState('list', v1).addAll([1, 2]);
    const r = await roundTrip(b);
    const v2: Serializer<number> = {
      id: 'test.num',
      version: 2,
      mapKey: 'identity',
      serialize: (n) => Buffer.from(String(n)),
      deserialize: (bytes) => Number(Buffer.from(bytes).toString()),
      copy: (n) => n,
      canMigrateFrom: (prev: SerializerSnapshot) => prev.version === 1,
      restoreReader: () => v1,
    };
    const list = r.getListState('list', v2);
    expect(list.get()).toEqual([1, 2]);
    const { handle } = await snapshot(r);
    expect(handle!.states[0].valueSerializer).toEqual({ id: 'test.num', version: 2 });
  });

  it('rejects null elements, keys and values', () => {
    const b = new HeapOperatorStateBackend();
    const list = b.getListState<string | null>('l');
    expectThrowsCode(() => list.add(null), 'NULL_NOT_ALLOWED');
    expectThrowsCode(() => list.update(['a', null]), 'NULL_NOT_ALLOWED');
    expect(list.get()).toEqual([]);
    const bc = b.getBroadcastState(mapState<string | null, string | null>('b'));
    expectThrowsCode(() => bc.put(null, 'v'), 'NULL_NOT_ALLOWED');
    expectThrowsCode(() => bc.put('k', null), 'NULL_NOT_ALLOWED');
  });

  it('rescales 2 -> 3 through assignOperatorState: split divided, union everywhere, broadcast copied', async () => {
    setup();
    const desc = mapState<string, number>('rules', {
      keySerializer: stringSerializer,
      valueSerializer: int32Serializer,
    });
    const handles: OperatorStateHandle[] = [];
    const files = new BlobStateFileReader(storage.store, storage.checkpointPointer(JOB, 1));
    for (let j = 0; j < 2; j++) {
      const b = new HeapOperatorStateBackend();
      b.getListState<number>('offsets', int32Serializer).addAll(j === 0 ? [0, 1, 2] : [3, 4]);
      b.getUnionListState<string>('seen', stringSerializer).add(`from-${j}`);
      b.getBroadcastState(desc).put('r', 42);
      const task = await b.snapshot(1, { type: 'checkpoint', streams: storage.checkpointStreams(JOB, 1) });
      handles.push((await task.done)!);
    }
    const snap: OperatorSnapshot = {
      operatorId: 'op',
      parallelism: 2,
      maxParallelism: 128,
      subtasks: handles.map((h, j) => ({ subtaskIndex: j, keyed: [], operator: [h] })),
    };
    const assigned = assignOperatorState(snap, 3);
    const restored = await Promise.all(
      assigned.map((hs, i) => HeapOperatorStateBackend.create(params(i, 3, hs, files))),
    );
    expect(restored.map((b) => b.getListState('offsets', int32Serializer).get())).toEqual([[0, 1], [2, 3], [4]]);
    for (const b of restored) {
      expect(b.getUnionListState('seen', stringSerializer).get()).toEqual(['from-0', 'from-1']);
      expect(b.getBroadcastState(desc).get('r')).toBe(42);
    }
  });

  it('refuses damaged offsets and foreign streams', async () => {
    setup();
    const b = new HeapOperatorStateBackend();
    b.getListState<number>('l', int32Serializer).add(1);
    const { handle, files } = await snapshot(b);
    const bad: OperatorStateHandle = { ...handle!, states: [{ ...handle!.states[0], offsets: [10_000] }] };
    await expectRejectsCode(HeapOperatorStateBackend.create(params(0, 1, [bad], files)), 'CORRUPT');
    const data = Buffer.from('XXXXX-not-operator-state');
    const foreign: OperatorStateHandle = {
      ...handle!,
      stream: {
        type: 'inline',
        data: data.toString('base64'),
        size: data.length,
        crc32: (await import('node:zlib')).crc32(data),
      },
    };
    await expectRejectsCode(HeapOperatorStateBackend.create(params(0, 1, [foreign], files)), 'BAD_MAGIC');
  });
});
