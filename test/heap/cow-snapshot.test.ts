import { describe, expect, it } from 'vitest';
import { bytesSerializer } from '../../src/serializers/builtins.js';
import { aggregatingState, listState, mapState, reducingState, valueState } from '../../src/state/descriptors.js';
import { GatedStreamFactory } from '../support/gated-streams.js';
import type { HeapKeyedStateBackend } from '../../backends/heap/index.js';
import { collect, Rig, rejection } from './support.js';

const KEYS = Array.from({ length: 60 }, (_, i) => `k${i}`);
interface Acc {
  sum: number;
  n: number;
}
const d = {
  value: valueState<{ n: number; tags: string[] }>('value'),
  list: listState<string>('list'),
  map: mapState<string, number>('map'),
  reducing: reducingState<number[]>('reducing', (a, b) => {
    a.push(...b); // a mutating reduce function: copy-on-write must protect the snapshot
    return a;
  }),
  aggregating: aggregatingState<number, Acc, number>('aggregating', {
    createAccumulator: () => ({ sum: 0, n: 0 }),
    add: (v, acc) => {
      acc.sum += v; // mutable accumulator
      acc.n++;
      return acc;
    },
    getResult: (acc) => acc.sum * 1000 + acc.n,
    merge: (a, b) => ({ sum: a.sum + b.sum, n: a.n + b.n }),
  }),
};

function fill(b: HeapKeyedStateBackend<string>): void {
  const s = {
    value: b.getState(d.value),
    list: b.getState(d.list),
    map: b.getState(d.map),
    reducing: b.getState(d.reducing),
    aggregating: b.getState(d.aggregating),
  };
  const timers = b.getTimerQueue('t');
  KEYS.forEach((k, i) => {
    b.setCurrentKey(k);
    s.value.update({ n: i, tags: ['a'] });
    s.list.addAll([`${k}-1`, `${k}-2`]);
    s.map.putAll([
      ['x', i],
      ['y', -i - 1],
    ]);
    s.reducing.add([i]);
    s.aggregating.add(i);
    s.list.setCurrentNamespace('w1');
    s.list.add('in-w1');
    s.list.setCurrentNamespace('');
    timers.add({ timestamp: i, key: k, namespace: '' });
  });
}

/** Everything visible through the state API, as plain data. */
async function dump(b: HeapKeyedStateBackend<string>): Promise<unknown> {
  const s = {
    value: b.getState(d.value),
    list: b.getState(d.list),
    map: b.getState(d.map),
    reducing: b.getState(d.reducing),
    aggregating: b.getState(d.aggregating),
  };
  const out: Record<string, unknown> = {};
  for (const k of [...KEYS, 'new-key']) {
    b.setCurrentKey(k);
    s.list.setCurrentNamespace('w1');
    const w1 = s.list.get();
    s.list.setCurrentNamespace('');
    out[k] = {
      value: structuredClone(s.value.value()),
      list: s.list.get() && [...s.list.get()!],
      w1: w1 && [...w1],
      map: (await collect(s.map.entries())).sort(),
      reducing: s.reducing.get() && [...s.reducing.get()!],
      aggregating: s.aggregating.get(),
    };
  }
  out.timers = [...b.getTimerQueue('t')].map((t) => `${t.timestamp}:${t.key}`);
  out.entries = await b.numEntries();
  return out;
}

function mutate(b: HeapKeyedStateBackend<string>, round: number): void {
  const s = {
    value: b.getState(d.value),
    list: b.getState(d.list),
    map: b.getState(d.map),
    reducing: b.getState(d.reducing),
    aggregating: b.getState(d.aggregating),
  };
  const timers = b.getTimerQueue('t');
  KEYS.forEach((k, i) => {
    b.setCurrentKey(k);
    switch ((i + round) % 4) {
      case 0: {
        const v = s.value.value()!;
        v.n += 1000; // in-place mutation of a returned object
        v.tags.push('mutated');
        s.list.add('appended');
        s.map.put('x', 999);
        s.map.put('z', 1);
        s.reducing.add([100 + round]);
        s.aggregating.add(7);
        break;
      }
      case 1:
        s.value.clear();
        s.list.update(['replaced']);
        s.map.remove('x');
        s.map.remove('y'); // removes the last entry: the map disappears
        s.list.setCurrentNamespace('w1');
        s.list.mergeNamespaces('', ['w1']);
        s.list.setCurrentNamespace('');
        break;
      case 2:
        s.value.update({ n: -1, tags: [] });
        s.list.clear();
        s.map.clear();
        s.reducing.clear();
        s.aggregating.clear();
        timers.remove({ timestamp: i, key: k, namespace: '' });
        break;
      default:
        s.aggregating.add(1);
        s.aggregating.add(2);
        timers.add({ timestamp: 1000 + i, key: k, namespace: 'late' });
    }
  });
  b.setCurrentKey('new-key');
  s.value.update({ n: 42, tags: [] });
  s.list.add('new');
  timers.add({ timestamp: 5, key: 'new-key', namespace: '' });
}

describe('copy-on-write snapshots', () => {
  it('a snapshot blocked mid-write keeps the state of its start while every kind of state is mutated', async () => {
    const rig = new Rig();
    const b = await rig.create({}, { snapshotChunkBytes: 1 });
    fill(b);
    const before = await dump(b);
    let gated!: GatedStreamFactory;
    const s1 = await rig.snapshot(b, (f) => (gated = new GatedStreamFactory(f)));
    await gated.reached; // the first key group is written, the rest are not
    mutate(b, 0);
    const after = await dump(b);
    expect(after).not.toEqual(before);
    gated.gate.open();
    const restored = await rig.restore(s1.id, [await s1.task.done]);
    expect(await dump(restored)).toEqual(before);
    expect(await dump(b)).toEqual(after); // live state unaffected by the snapshot
  });

  it('two snapshots in flight each see their own point in time', async () => {
    const rig = new Rig();
    const b = await rig.create({}, { snapshotChunkBytes: 1 });
    fill(b);
    const v0 = await dump(b);
    let g1!: GatedStreamFactory;
    const s1 = await rig.snapshot(b, (f) => (g1 = new GatedStreamFactory(f)));
    await g1.reached;
    mutate(b, 0);
    const v1 = await dump(b);
    let g2!: GatedStreamFactory;
    const s2 = await rig.snapshot(b, (f) => (g2 = new GatedStreamFactory(f)));
    await g2.reached;
    mutate(b, 1);
    const v2 = await dump(b);
    // A third, unblocked snapshot completes while the other two wait.
    const s3 = await rig.snapshot(b);
    const h3 = await s3.task.done;
    expect(await dump(await rig.restore(s3.id, [h3]))).toEqual(v2);
    g2.gate.open();
    expect(await dump(await rig.restore(s2.id, [await s2.task.done]))).toEqual(v1);
    mutate(b, 2);
    g1.gate.open();
    expect(await dump(await rig.restore(s1.id, [await s1.task.done]))).toEqual(v0);
  });

  it('undo logs are released: writes after the snapshot completed leave no bookkeeping', async () => {
    const rig = new Rig();
    const b = await rig.create({}, { snapshotChunkBytes: 1 });
    fill(b);
    const { task } = await rig.snapshot(b);
    await task.done;
    const table = (b as unknown as { states: Map<string, { table: { pending: Int32Array } }> }).states.get(
      'value',
    )!.table;
    expect([...table.pending].every((x) => x === 0)).toBe(true);
  });

  it('close() during a blocked snapshot rejects it with SNAPSHOT_CANCELLED and deletes the partial file', async () => {
    const rig = new Rig();
    const b = await rig.create({}, { snapshotChunkBytes: 1 });
    fill(b);
    let gated!: GatedStreamFactory;
    const s = await rig.snapshot(b, (f) => (gated = new GatedStreamFactory(f)));
    await gated.reached;
    await b.close();
    const err = await rejection(s.task.done);
    expect(err.code).toBe('SNAPSHOT_CANCELLED');
    expect(await rig.storage.listJobFiles('job')).toEqual([]);
    gated.gate.open();
    await new Promise((r) => setTimeout(r, 20));
    expect(await rig.storage.listJobFiles('job')).toEqual([]);
    expect(() => b.setCurrentKey('k1')).toThrow(expect.objectContaining({ code: 'BACKEND_CLOSED' }));
    await b.close(); // idempotent
  });

  it('snapshot() returns before any key group is serialized (the synchronous part copies nothing)', async () => {
    const rig = new Rig();
    const b = await rig.create();
    fill(b);
    const writes: number[] = [];
    const { task, streams } = await rig.snapshot(b, (f) => ({
      createOutputStream: (scope) => {
        const inner = f.createOutputStream(scope);
        return {
          get position() {
            return inner.position;
          },
          write: (c) => (writes.push(c.length), inner.write(c)),
          closeAndGetHandle: () => inner.closeAndGetHandle(),
          discard: () => inner.discard(),
        };
      },
      uploadFile: (p, s, n) => f.uploadFile(p, s, n),
      discardFiles: (x) => f.discardFiles(x),
    }));
    expect(streams).toBeDefined();
    // Mutations right after snapshot() returned must not leak into it.
    mutate(b, 0);
    expect(writes).toEqual([]);
    const h = await task.done;
    expect(writes.length).toBeGreaterThan(0);
    const r = await rig.restore(2 - 1, [h]);
    const fresh = await rig.create({}, {});
    fill(fresh);
    expect(await dump(r)).toEqual(await dump(fresh));
  });

  it('bytes values read during a snapshot are copied (into a shared slab): mutating them in place changes neither the snapshot nor other values', async () => {
    const rig = new Rig();
    const b = await rig.create({}, { snapshotChunkBytes: 1 });
    const v = b.getState(valueState<Uint8Array>('bytes', { serializer: bytesSerializer }));
    for (const k of KEYS) {
      b.setCurrentKey(k);
      v.update(Buffer.from(`value of ${k}`));
    }
    let gated!: GatedStreamFactory;
    const s1 = await rig.snapshot(b, (f) => (gated = new GatedStreamFactory(f)));
    await gated.reached;
    const read: Uint8Array[] = [];
    for (const k of KEYS) {
      b.setCurrentKey(k);
      const x = v.value()!;
      expect(Buffer.isBuffer(x)).toBe(true);
      expect(Buffer.from(x).toString()).toBe(`value of ${k}`);
      read.push(x);
    }
    for (const x of read) x.fill(0x2a); // in place, through the copies
    for (const k of KEYS) {
      b.setCurrentKey(k);
      expect(Buffer.from(v.value()!).toString()).toBe('*'.repeat(`value of ${k}`.length));
    }
    gated.gate.open();
    const restored = await rig.restore(s1.id, [await s1.task.done]);
    const rv = restored.getState(valueState<Uint8Array>('bytes', { serializer: bytesSerializer }));
    for (const k of KEYS) {
      restored.setCurrentKey(k);
      expect(Buffer.from(rv.value()!).toString()).toBe(`value of ${k}`);
    }
  });
});
