import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { HeapKeyedStateBackend } from '../../backends/heap/index.js';
import type { LevelDbKeyedStateBackend } from '../../backends/leveldb/backend.js';
import { isCountRowStateId } from '../../backends/leveldb/row-keys.js';
import type { KeyGroupsStateHandle } from '../../src/backend/handles.js';
import { readStreamHandle } from '../../src/checkpoint/streams.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { float64Serializer, int32Serializer } from '../../src/serializers/builtins.js';
import { listState } from '../../src/state/descriptors.js';
import type { ListState } from '../../src/state/types.js';
import { MAX_P, params } from '../heap/support.js';
import { LevelRig } from './support.js';

/**
 * LevelDB list appends write one chunk row (and a small counter) instead of rewriting the list:
 * an add's bytes do not grow with the list. The chunks read back as one list in insertion order
 * through get(), merges, full and native snapshots, canonical savepoints (byte-identical to the
 * heap backend's) and restores at another parallelism.
 */

const rig = new LevelRig({ writeBufferBytes: 16 * 1024 });
afterAll(() => rig.cleanup());

const descriptor = () => listState<number>('l', { serializer: int32Serializer });

/** Largest value written to the store while `fn` runs. */
function largestWrite(kb: LevelDbKeyedStateBackend<string>, fn: () => void): number {
  const store = kb.store;
  const put = store.put.bind(store);
  let largest = 0;
  store.put = (key, value) => {
    largest = Math.max(largest, value.length);
    put(key, value);
  };
  try {
    fn();
  } finally {
    store.put = put;
  }
  return largest;
}

describe('leveldb list appends', () => {
  it('add and addAll write a few bytes whatever the length of the list', async () => {
    const kb = await rig.create();
    const list = kb.getState(descriptor());
    kb.setCurrentKey('k');
    list.update(Array.from({ length: 20_000 }, (_, i) => i));
    await kb.flush();
    expect(largestWrite(kb, () => list.add(1))).toBeLessThan(16);
    expect(largestWrite(kb, () => list.addAll([1, 2, 3]))).toBeLessThan(32);
    for (let i = 0; i < 1000; i++) expect(largestWrite(kb, () => list.add(i))).toBeLessThan(16);
    const got = list.get() as readonly number[];
    expect(got.length).toBe(20_000 + 1 + 3 + 1000);
    expect(got.slice(19_999, 20_005)).toEqual([19_999, 1, 1, 2, 3, 0]);
    expect(got.at(-1)).toBe(999);
    await kb.close();
  });

  it('agrees with a plain model under random adds, updates, clears, merges, flushes and reads', async () => {
    type Op =
      | { op: 'add'; key: number; ns: number; v: number }
      | { op: 'addAll'; key: number; ns: number; vs: number[] }
      | { op: 'update'; key: number; ns: number; vs: number[] }
      | { op: 'clear'; key: number; ns: number }
      | { op: 'get'; key: number; ns: number }
      | { op: 'merge'; key: number; target: number; sources: number[] }
      | { op: 'flush' };
    const key = fc.integer({ min: 0, max: 3 });
    const ns = fc.integer({ min: 0, max: 2 });
    const v = fc.integer({ min: -1000, max: 1000 });
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 6, arbitrary: fc.record({ op: fc.constant('add' as const), key, ns, v }) },
      {
        weight: 2,
        arbitrary: fc.record({ op: fc.constant('addAll' as const), key, ns, vs: fc.array(v, { maxLength: 4 }) }),
      },
      {
        weight: 1,
        arbitrary: fc.record({ op: fc.constant('update' as const), key, ns, vs: fc.array(v, { maxLength: 4 }) }),
      },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('clear' as const), key, ns }) },
      { weight: 3, arbitrary: fc.record({ op: fc.constant('get' as const), key, ns }) },
      {
        weight: 1,
        arbitrary: fc.record({
          op: fc.constant('merge' as const),
          key,
          target: ns,
          sources: fc.array(ns, { maxLength: 3 }),
        }),
      },
      { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 80 }), async (ops) => {
        const kb = await rig.create();
        const list = kb.getState(
          listState<number, number>('l', { serializer: int32Serializer, namespace: int32Serializer }),
        );
        const model = new Map<string, number[]>();
        const at = (k: number, n: number): string => `${k}/${n}`;
        try {
          for (const o of ops) {
            if (o.op === 'flush') {
              await kb.flush();
              continue;
            }
            kb.setCurrentKey(`key${o.key}`);
            if (o.op === 'merge') {
              list.mergeNamespaces(o.target, o.sources);
              const merged = [...(model.get(at(o.key, o.target)) ?? [])];
              for (const s of o.sources) {
                if (s === o.target) continue;
                merged.push(...(model.get(at(o.key, s)) ?? []));
                model.delete(at(o.key, s));
              }
              if (merged.length > 0) model.set(at(o.key, o.target), merged);
              continue;
            }
            list.setCurrentNamespace(o.ns);
            const slot = at(o.key, o.ns);
            if (o.op === 'add') {
              list.add(o.v);
              model.set(slot, [...(model.get(slot) ?? []), o.v]);
            } else if (o.op === 'addAll') {
              list.addAll(o.vs);
              if (o.vs.length > 0) model.set(slot, [...(model.get(slot) ?? []), ...o.vs]);
            } else if (o.op === 'update') {
              list.update(o.vs);
              if (o.vs.length === 0) model.delete(slot);
              else model.set(slot, [...o.vs]);
            } else if (o.op === 'clear') {
              list.clear();
              model.delete(slot);
            } else {
              expect(list.get()).toEqual(model.get(slot) ?? null);
            }
          }
          // Every slot, then the entry count (one per list however many chunks), then a restore.
          for (let k = 0; k < 4; k++) {
            kb.setCurrentKey(`key${k}`);
            for (let n = 0; n < 3; n++) {
              list.setCurrentNamespace(n);
              expect(list.get()).toEqual(model.get(at(k, n)) ?? null);
            }
          }
          expect(await kb.numEntries()).toBe(model.size);
        } finally {
          await kb.close();
        }
      }),
      { numRuns: 40 },
    );
  });

  it('the entry count is one per list, and getKeys lists each key once, however many chunks', async () => {
    const kb = await rig.create();
    const list = kb.getState(descriptor());
    for (const k of ['a', 'b']) {
      kb.setCurrentKey(k);
      list.update([0]);
      for (let i = 0; i < 3; i++) list.add(i);
    }
    kb.setCurrentKey('c');
    for (let i = 0; i < 3; i++) list.add(i); // chunks only, no base row
    expect(await kb.numEntries()).toBe(3);
    await kb.flush();
    expect(await kb.numEntries()).toBe(3);
    const keys: string[] = [];
    for await (const k of kb.getKeys('l', '')) keys.push(k);
    expect(keys.sort()).toEqual(['a', 'b', 'c']);
    kb.setCurrentKey('a');
    list.clear();
    kb.setCurrentKey('c');
    list.update([]);
    await kb.flush();
    expect(await kb.numEntries()).toBe(1);
    // Nothing of the cleared lists is left in LevelDB: no base row, no chunk, no counter.
    const sid = kb.catalog.get('l')?.stateId as number;
    let rows = 0;
    for await (const [k] of kb.db.iterator()) if ((k.readUInt16BE(2) & 0x7fff) === sid) rows++;
    expect(rows).toBe(1 + 3 + 1); // b: base, three chunks, counter
    await kb.close();
  });

  it('a 1M-element list built by appends reads, snapshots, restores and rescales unchanged', async () => {
    const kb = await rig.create();
    const list = kb.getState(listState<number>('big', { serializer: float64Serializer }));
    kb.setCurrentKey('big');
    const n = 1_000_000;
    const block = 10_000;
    for (let s = 0; s < n; s += block) list.addAll(Array.from({ length: block }, (_, i) => s + i));
    kb.setCurrentKey('small');
    list.add(7);
    list.add(8);
    const check = (b: LevelDbKeyedStateBackend<string>): void => {
      const l = b.getState(listState<number>('big', { serializer: float64Serializer }));
      b.setCurrentKey('small');
      expect(l.get()).toEqual([7, 8]);
      b.setCurrentKey('big');
      const got = l.get() as readonly number[];
      expect(got.length).toBe(n);
      let ok = true;
      for (let i = 0; i < n; i++) if (got[i] !== i) ok = false;
      expect(ok).toBe(true);
    };
    // Native (incremental) checkpoint and a full canonical savepoint, both taken over chunk rows.
    const native = await rig.snapshot(kb);
    const canonical = await rig.snapshot(kb, 'canonical');
    check(kb); // folds the chunks into the base row
    await kb.close();
    // The native checkpoint restores as it is; the canonical savepoint rescaled to two subtasks
    // (each key in exactly one, with its whole list).
    const restored = await rig.restore(native.id, [native.handle]);
    check(restored);
    await restored.close();
    for (const snap of [canonical]) {
      let found = 0;
      for (let i = 0; i < 2; i++) {
        const sub = await rig.restore(snap.id, [snap.handle], {
          keyGroupRange: keyGroupRangeForSubtask(MAX_P, 2, i),
          parallelism: 2,
          subtaskIndex: i,
        });
        const l = sub.getState(listState<number>('big', { serializer: float64Serializer }));
        for await (const k of sub.getKeys('big', '')) {
          sub.setCurrentKey(k);
          const got = l.get() as readonly number[];
          expect(got.length).toBe(k === 'big' ? n : 2);
          found++;
        }
        await sub.close();
      }
      expect(found).toBe(2);
    }
  }, 120_000);

  it('canonical savepoints of chunked lists are byte-identical to the heap backend', async () => {
    const ops = (b: { setCurrentKey(k: string): void }, l: ListState<number>): void => {
      for (let i = 0; i < 50; i++) {
        b.setCurrentKey(`k${i % 7}`);
        l.setCurrentNamespace(`ns${i % 3}`);
        if (i % 11 === 0) l.update([i, i + 1]);
        else if (i % 5 === 0) l.addAll([i, -i]);
        else l.add(i);
      }
    };
    const kb = await rig.create();
    ops(kb, kb.getState(descriptor()));
    const heap = await HeapKeyedStateBackend.create(params());
    ops(heap, heap.getState(descriptor()));
    const fromLevel = await rig.snapshot(kb, 'canonical');
    const fromHeap = await rig.snapshot(heap, 'canonical');
    const bytes = async (s: { id: number; handle: unknown }): Promise<Buffer> =>
      readStreamHandle((s.handle as KeyGroupsStateHandle).stream, rig.files(s.id));
    expect((await bytes(fromLevel)).equals(await bytes(fromHeap))).toBe(true);
    await kb.close();
    await heap.close();
  });

  it('get() folds many chunks into the base row: no chunk row or counter is left', async () => {
    const kb = await rig.create();
    const list = kb.getState(descriptor());
    kb.setCurrentKey('k');
    for (let i = 0; i < 200; i++) list.add(i); // more chunks than one range deletion is used for
    await kb.flush();
    expect((list.get() as readonly number[]).length).toBe(200);
    await kb.flush();
    const sid = kb.catalog.get('l')?.stateId as number;
    let rows = 0;
    for await (const [k] of kb.db.iterator()) if ((k.readUInt16BE(2) & 0x7fff) === sid) rows++;
    expect(rows).toBe(1);
    list.add(200);
    expect((list.get() as readonly number[]).at(-1)).toBe(200);
    await kb.close();
  });

  it('count rows of lists are bookkeeping: a list with chunks has exactly one counter row', async () => {
    const kb = await rig.create();
    const list = kb.getState(descriptor());
    kb.setCurrentKey('k');
    list.add(1);
    list.add(2);
    await kb.flush();
    let counters = 0;
    for await (const [k] of kb.db.iterator()) if (isCountRowStateId(k.readUInt16BE(2))) counters++;
    expect(counters).toBe(1);
    expect(list.get()).toEqual([1, 2]);
    await kb.close();
  });
});
