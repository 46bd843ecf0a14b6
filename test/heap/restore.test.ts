import { describe, expect, it } from 'vitest';
import type { StateFileReader } from '../../src/backend/contract.js';
import type { KeyGroupsStateHandle } from '../../src/backend/handles.js';
import { KeyGroupRange, keyGroupForKey } from '../../src/keygroups/key-groups.js';
import { bytesSerializer, int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import { listState, mapState, valueState } from '../../src/state/descriptors.js';
import { HeapKeyedStateBackend } from '../../backends/heap/index.js';
import { BlobStateFileReader } from '../../src/checkpoint/streams.js';
import { MAX_P, Rig, collect, params, rejection, thrown } from './support.js';

/** A string serializer v2 that can read v1 bytes (a trivial "migration"). */
const upperV2: Serializer<string> = {
  ...stringSerializer,
  version: 2,
  canMigrateFrom: (prev) => prev.id === stringSerializer.id && prev.version === 1,
  restoreReader: () => ({ ...stringSerializer, deserialize: (b) => Buffer.from(b).toString('utf8').toUpperCase() }),
};

describe('heap restore', () => {
  it('restored state that is never registered is written through to the next snapshot (raw sections)', async () => {
    const rig = new Rig();
    const b = await rig.create();
    const v = b.getState(valueState<string>('v', { serializer: stringSerializer }));
    const m = b.getState(mapState<string, number>('m'));
    for (let i = 0; i < 40; i++) {
      b.setCurrentKey(`k${i}`);
      v.update(`v${i}`);
      m.put('a', i);
      m.put('b', i);
    }
    b.getTimerQueue('t').add({ timestamp: 3, key: 'k1', namespace: '' });
    const r1 = await rig.snapshotAndRestore(b);
    expect(r1.stateNames().sort()).toEqual(['m', 'v']);
    expect(await r1.numEntries()).toBe(40 + 80);
    const r2 = await rig.snapshotAndRestore(r1); // nothing registered in r1
    const v2 = r2.getState(valueState<string>('v', { serializer: stringSerializer }));
    const m2 = r2.getState(mapState<string, number>('m'));
    r2.setCurrentKey('k7');
    expect(v2.value()).toBe('v7');
    expect(await collect(m2.entries())).toEqual([
      ['a', 7],
      ['b', 7],
    ]);
    expect(r2.getTimerQueue('t').peek()).toEqual({ timestamp: 3, key: 'k1', namespace: '' });
    expect(await r2.numEntries()).toBe(120);
  });

  it('restores only its own key groups when handles of several subtasks are given (rescaling)', async () => {
    const rig = new Rig();
    const left = await rig.create({ keyGroupRange: new KeyGroupRange(0, 7) });
    const right = await rig.create({ keyGroupRange: new KeyGroupRange(8, 15) });
    const d = listState<number>('l');
    const all: string[] = [];
    for (let i = 0; i < 200; i++) {
      const key = `key-${i}`;
      const kg = keyGroupForKey(key, stringSerializer, MAX_P);
      const b = kg <= 7 ? left : right;
      b.setCurrentKey(key);
      b.getState(d).addAll([i, kg]);
      all.push(key);
    }
    const s1 = await rig.snapshot(left);
    const s2 = await rig.snapshot(right);
    // Both snapshots share one reader here, so write them under one id: restore from each id's reader.
    const hl = (await s1.task.done)!;
    const hr = (await s2.task.done)!;
    const target = new KeyGroupRange(4, 11);
    const fromLeft = await rig.restore(s1.id, [hl], { keyGroupRange: target });
    const fromRight = await rig.restore(s2.id, [hr], { keyGroupRange: target });
    // getKeys works before registration too (restored raw sections, built-in namespace serializer).
    expect((await collect(fromLeft.getKeys('l', ''))).length).toBeGreaterThan(0);
    const keys = [...(await collect(fromLeft.getKeys('l', ''))), ...(await collect(fromRight.getKeys('l', '')))].sort();
    fromLeft.getState(d);
    fromRight.getState(d);
    const registeredKeys = [
      ...(await collect(fromLeft.getKeys('l', ''))),
      ...(await collect(fromRight.getKeys('l', ''))),
    ].sort();
    expect(registeredKeys).toEqual(keys);
    const expected = all.filter((k) => target.contains(keyGroupForKey(k, stringSerializer, MAX_P))).sort();
    expect(keys).toEqual(expected);
    const k = expected[0];
    const owner = keyGroupForKey(k, stringSerializer, MAX_P) <= 7 ? fromLeft : fromRight;
    owner.setCurrentKey(k);
    expect(owner.getState(d).get()).toEqual([Number(k.slice(4)), keyGroupForKey(k, stringSerializer, MAX_P)]);
  });

  it('checks maxParallelism, key serializer and handle type before reading anything', async () => {
    const rig = new Rig();
    const b = await rig.create();
    b.setCurrentKey('a');
    b.getState(valueState<number>('v')).update(1);
    const { id, task } = await rig.snapshot(b);
    const h = (await task.done)!;
    expect(
      (await rejection(rig.restore(id, [h], { maxParallelism: 32, keyGroupRange: new KeyGroupRange(0, 31) }))).code,
    ).toBe('MAX_PARALLELISM_MISMATCH');
    expect((await rejection(rig.restore<number>(id, [h], { keySerializer: int32Serializer }))).code).toBe(
      'KEY_SERIALIZER_MISMATCH',
    );
    const foreign = { type: 'leveldb-incremental', keyGroupRange: { start: 0, end: 15 }, maxParallelism: MAX_P };
    const err = await rejection(rig.restore(id, [foreign]));
    expect(err.code).toBe('RESTORE_FAILED');
    expect(err.message).toContain('leveldb');
  });

  it('checks value serializers and kinds when a restored state is registered; migrates when the serializer can', async () => {
    const rig = new Rig();
    const b = await rig.create();
    b.setCurrentKey('a');
    b.getState(valueState<string>('v', { serializer: stringSerializer })).update('hello');
    b.getState(listState<string>('l', { serializer: stringSerializer })).add('x');
    const { id, task } = await rig.snapshot(b);
    const h = (await task.done)!;

    const r1 = await rig.restore(id, [h]);
    expect(thrown(() => r1.getState(valueState<number>('v', { serializer: int32Serializer }))).code).toBe(
      'SERIALIZER_INCOMPATIBLE',
    );
    expect(thrown(() => r1.getState(valueState<string>('l', { serializer: stringSerializer }))).code).toBe(
      'STATE_KIND_MISMATCH',
    );
    expect(
      thrown(() => r1.getState(valueState<string>('v', { serializer: stringSerializer, ttl: { ttlMs: 5 } }))).code,
    ).toBe('SERIALIZER_INCOMPATIBLE');

    const r2 = await rig.restore(id, [h]);
    const migrated = r2.getState(valueState<string>('v', { serializer: upperV2 }));
    r2.setCurrentKey('a');
    expect(migrated.value()).toBe('HELLO');
    // The next snapshot records the new serializer.
    const r3 = await rig.snapshotAndRestore(r2);
    const again = r3.getState(valueState<string>('v', { serializer: upperV2 }));
    r3.setCurrentKey('a');
    expect(again.value()).toBe('HELLO');
  });

  it('re-registering a live state: same kind returns the same handle, other kind or incompatible serializer throws', async () => {
    const rig = new Rig();
    const b = await rig.create();
    const s1 = b.getState(valueState<string>('v', { serializer: stringSerializer }));
    const s2 = b.getState(valueState<string>('v', { serializer: stringSerializer }));
    expect(s2).toBe(s1);
    expect(thrown(() => b.getState(listState<string>('v'))).code).toBe('STATE_KIND_MISMATCH');
    expect(thrown(() => b.getState(valueState<number>('v', { serializer: int32Serializer }))).code).toBe(
      'SERIALIZER_INCOMPATIBLE',
    );
  });

  it('an empty backend snapshots to a null handle; restoring from nothing works', async () => {
    const rig = new Rig();
    const b = await rig.create();
    b.getState(valueState<string>('v')); // registered but empty
    const { id, task } = await rig.snapshot(b);
    expect(await task.done).toBeNull();
    const r = await rig.restore(id, [null]);
    expect(await r.numEntries()).toBe(0);
    expect(await rig.storage.listJobFiles('job')).toEqual([]);
  });

  it('rejects keys outside the range and state access without a key', async () => {
    const rig = new Rig();
    const b = await rig.create({ keyGroupRange: new KeyGroupRange(0, 3) });
    const v = b.getState(valueState<string>('v'));
    expect(thrown(() => v.value()).code).toBe('NO_CURRENT_KEY');
    const outside = Array.from({ length: 100 }, (_, i) => `k${i}`).find(
      (k) => keyGroupForKey(k, stringSerializer, MAX_P) > 3,
    )!;
    const err = thrown(() => b.setCurrentKey(outside));
    expect(err.code).toBe('KEY_OUT_OF_RANGE');
    expect(err.message).toContain('[0, 3]');
  });

  it('object keys (bytes ids) round-trip through getKeys and snapshots', async () => {
    const rig = new Rig();
    const { msgpackSerializer } = await import('../../src/serializers/builtins.js');
    const keySer = msgpackSerializer<{ id: number; region: string }>();
    const ob = await rig.create({ keySerializer: keySer });
    const v = ob.getState(valueState<number>('v'));
    for (let i = 0; i < 20; i++) {
      ob.setCurrentKey({ id: i, region: 'eu' });
      v.update(i * 2);
    }
    const r = await rig.snapshotAndRestore(ob, { keySerializer: keySer });
    const keys = (await collect(r.getKeys('v', ''))) as { id: number; region: string }[];
    expect(keys.map((k) => k.id).sort((a, c) => a - c)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    r.setCurrentKey({ id: 7, region: 'eu' });
    expect(r.getState(valueState<number>('v')).value()).toBe(14);
  });

  it('restored bytes values share no bytes: writing one in place changes no other value, no carried state and not the checkpoint', async () => {
    const rig = new Rig();
    const b = await rig.create();
    const vd = valueState<Uint8Array>('v', { serializer: bytesSerializer });
    const ld = listState<Uint8Array>('l', { serializer: bytesSerializer });
    const md = mapState<string, Uint8Array>('m', { valueSerializer: bytesSerializer });
    const cd = valueState<Uint8Array>('carried', { serializer: bytesSerializer });
    const bytes = (i: number, n: number): Buffer => Buffer.alloc(n, i);
    const keys = Array.from({ length: 30 }, (_, i) => `k${i}`);
    keys.forEach((k, i) => {
      b.setCurrentKey(k);
      b.getState(vd).update(bytes(i, 40 + i * 50)); // up to 1.5 KB: small and large values
      b.getState(ld).addAll([bytes(i, 3), bytes(i + 100, 0), bytes(i + 1, 5)]);
      b.getState(md).put('a', bytes(i, 7));
      b.getState(cd).update(bytes(i, 9));
    });
    const { id, task } = await rig.snapshot(b);
    const handle = (await task.done)!;
    const r = await rig.restore(id, [handle]);
    const [v, l, m] = [r.getState(vd), r.getState(ld), r.getState(md)];
    for (const k of keys) {
      r.setCurrentKey(k);
      v.value()!.fill(0xff);
      for (const el of l.get()!) el.fill(0xff);
      m.get('a')!.fill(0xff);
    }
    keys.forEach((k, i) => {
      r.setCurrentKey(k);
      expect(Buffer.from(v.value()!)).toEqual(Buffer.alloc(40 + i * 50, 0xff));
    });
    // The state left unregistered is carried as raw sections: its bytes are untouched.
    const r2 = await rig.snapshotAndRestore(r);
    const c2 = r2.getState(cd);
    const v2 = r2.getState(vd);
    keys.forEach((k, i) => {
      r2.setCurrentKey(k);
      expect(Buffer.from(c2.value()!)).toEqual(bytes(i, 9));
      expect(Buffer.from(v2.value()!)).toEqual(Buffer.alloc(40 + i * 50, 0xff));
    });
    // The checkpoint restored from still holds what was written.
    const again = await rig.restore(id, [handle]);
    const [v3, l3, m3] = [again.getState(vd), again.getState(ld), again.getState(md)];
    keys.forEach((k, i) => {
      again.setCurrentKey(k);
      expect(Buffer.from(v3.value()!)).toEqual(bytes(i, 40 + i * 50));
      expect(l3.get()!.map((e) => Buffer.from(e))).toEqual([bytes(i, 3), bytes(i + 100, 0), bytes(i + 1, 5)]);
      expect(Buffer.from(m3.get('a')!)).toEqual(bytes(i, 7));
    });
  });

  it('reads adjacent blocks beyond 8 MiB with one ranged read (each read is an external allocation that can start a full collection)', async () => {
    const rig = new Rig();
    const b = await rig.create();
    const vd = valueState<Uint8Array>('v', { serializer: bytesSerializer });
    const n = 12 * 1024;
    for (let i = 0; i < n; i++) {
      b.setCurrentKey(`key-${i}`);
      b.getState(vd).update(Buffer.alloc(1024, i));
    }
    const { id, task } = await rig.snapshot(b);
    const handle = (await task.done) as KeyGroupsStateHandle;
    const blocks = [...handle.blocks].sort((x, y) => x.offset - y.offset);
    const first = blocks[0];
    const last = blocks[blocks.length - 1];
    expect(last.offset + last.length - first.offset).toBeGreaterThan(8 * 1024 * 1024);
    const inner = new BlobStateFileReader(rig.storage.store, rig.storage.checkpointPointer('job', id));
    const reads: Array<[number, number]> = [];
    const files: StateFileReader = {
      read: () => Promise.reject(new Error('whole-file read not expected')),
      readRange: (f, offset, length) => {
        reads.push([offset, length]);
        return inner.readRange(f, offset, length);
      },
      download: (f, p) => inner.download(f, p),
      describe: (f) => inner.describe(f),
    };
    const r = await HeapKeyedStateBackend.create(params({ restore: { handles: [handle], files } }));
    // header check + one read of every block (they are adjacent)
    expect(reads).toEqual([
      [0, 12],
      [first.offset, last.offset + last.length - first.offset],
    ]);
    const v = r.getState(vd);
    for (const i of [0, n / 2, n - 1]) {
      r.setCurrentKey(`key-${i}`);
      expect(Buffer.from(v.value()!)).toEqual(Buffer.alloc(1024, i));
    }
  });
});

describe('canonical savepoints from the heap backend', () => {
  it('write sorted sections (layout canonical-v1, states by name) that restore to the same contents', async () => {
    const {
      readAllKeyGroups,
      parseKeyGroupsStream,
      valueEntries: ve,
      mapEntries: me,
    } = await import('../../src/format/key-groups-stream.js');
    const rig = new Rig();
    const b = await rig.create();
    const z = b.getState(valueState<string>('z-value', { serializer: stringSerializer }));
    const a = b.getState(mapState<string, number>('a-map', { keySerializer: stringSerializer }));
    for (let i = 50; i > 0; i--) {
      b.setCurrentKey(`k${i}`);
      z.update(`v${i}`);
      a.put(`u${i % 7}`, i);
      a.put(`t${i % 5}`, -i);
    }
    b.getTimerQueue('m-timers').add({ timestamp: 9, key: 'k3', namespace: '' });
    const id = rig.newId();
    const task = await b.snapshot(id, { type: 'savepoint', format: 'canonical', streams: rig.streams(id) });
    const h = (await task.done)! as KeyGroupsStateHandle;
    expect(h.layout).toBe('canonical-v1');
    expect(h.states.map((s) => s.name)).toEqual(['a-map', 'm-timers', 'z-value']);
    const files = new (await import('../../src/checkpoint/streams.js')).BlobStateFileReader(
      rig.storage.store,
      rig.storage.checkpointPointer('job', id),
    );
    const bytes = await files.read(h.stream as never);
    expect(parseKeyGroupsStream(bytes).canonical).toBe(true);
    for (const kg of readAllKeyGroups(bytes)) {
      expect(kg.sections.map((s) => s.stateId)).toEqual([...kg.sections.map((s) => s.stateId)].sort());
      for (const s of kg.sections) {
        const kind = h.states[s.stateId].kind;
        if (kind === 'value') {
          const keys = [...ve(s)].map((e) => e.key);
          expect(keys).toEqual([...keys].sort(Buffer.compare));
        } else if (kind === 'map') {
          for (const e of me(s)) {
            const uks = e.entries.map(([uk]) => uk);
            expect(uks).toEqual([...uks].sort(Buffer.compare));
          }
        }
      }
    }
    const r = await rig.restore(id, [h]);
    r.setCurrentKey('k12');
    expect(r.getState(valueState<string>('z-value', { serializer: stringSerializer })).value()).toBe('v12');
    expect(
      (
        await collect(r.getState(mapState<string, number>('a-map', { keySerializer: stringSerializer })).entries())
      ).sort(),
    ).toEqual([
      ['t2', -12],
      ['u5', 12],
    ]);
    expect(r.getTimerQueue('m-timers').peek()).toEqual({ timestamp: 9, key: 'k3', namespace: '' });
  });
});
