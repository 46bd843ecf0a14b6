import { describe, expect, it } from 'vitest';
import { KeyGroupRange, keyGroupForKey } from '../../src/keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { GatedStreamFactory } from '../support/gated-streams.js';
import { MAX_P, Rig, thrown } from './support.js';

const t = (timestamp: number, key: string, namespace = '') => ({ timestamp, key, namespace });

describe('heap timer queue', () => {
  it('has set semantics and reports head changes on add and remove', async () => {
    const b = await new Rig().create();
    const q = b.getTimerQueue('timers');
    expect(q.add(t(10, 'a'))).toBe(true); // first element is the head
    expect(q.add(t(10, 'a'))).toBe(false); // duplicate
    expect(q.add(t(20, 'b'))).toBe(false); // not the head
    expect(q.add(t(5, 'c'))).toBe(true); // new head
    expect(q.size).toBe(3);
    expect(q.contains(t(20, 'b'))).toBe(true);
    expect(q.contains(t(20, 'b', 'other'))).toBe(false);
    expect(q.remove(t(20, 'b'))).toBe(false); // not the head
    expect(q.remove(t(20, 'b'))).toBe(false); // absent
    expect(q.remove(t(5, 'c'))).toBe(true); // head removed
    expect(q.peek()).toEqual(t(10, 'a'));
    expect(q.size).toBe(1);
  });

  it('polls in (timestamp, key bytes, namespace bytes) order; pollUntil takes exactly the due timers', async () => {
    const b = await new Rig().create();
    const q = b.getTimerQueue('timers');
    const timers = [t(3, 'b'), t(1, 'z'), t(3, 'a', 'y'), t(3, 'a', 'x'), t(7, 'a'), t(2, 'q'), t(3, 'ab')];
    for (const x of timers) q.add(x);
    expect([...q]).toEqual([t(1, 'z'), t(2, 'q'), t(3, 'a', 'x'), t(3, 'a', 'y'), t(3, 'ab'), t(3, 'b'), t(7, 'a')]);
    expect(q.pollUntil(3)).toEqual([t(1, 'z'), t(2, 'q'), t(3, 'a', 'x'), t(3, 'a', 'y'), t(3, 'ab'), t(3, 'b')]);
    expect(q.pollUntil(6)).toEqual([]);
    expect(q.poll()).toEqual(t(7, 'a'));
    expect(q.poll()).toBeNull();
    expect(q.isEmpty()).toBe(true);
  });

  it('orders many random timers like a sorted array (heap invariants under removals)', async () => {
    const b = await new Rig().create<number>({ keySerializer: int32Serializer });
    const q = b.getTimerQueue<string>('timers');
    const model = new Map<string, { timestamp: number; key: number; namespace: string }>();
    let seed = 7;
    const rnd = (n: number) => (seed = (seed * 1103515245 + 12345) % 2147483648) % n;
    for (let i = 0; i < 3000; i++) {
      const x = { timestamp: rnd(500), key: rnd(50), namespace: '' };
      const id = `${x.timestamp}/${x.key}`;
      if (rnd(3) === 0) {
        q.remove(x);
        model.delete(id);
      } else {
        q.add(x);
        model.set(id, x);
      }
    }
    const be = (n: number) => {
      const buf = Buffer.alloc(4);
      buf.writeInt32BE(n);
      return buf.toString('latin1');
    };
    const expected = [...model.values()].sort(
      (a, c) => a.timestamp - c.timestamp || (be(a.key) < be(c.key) ? -1 : be(a.key) > be(c.key) ? 1 : 0),
    );
    expect(q.size).toBe(expected.length);
    const polled = [];
    while (!q.isEmpty()) polled.push(q.poll());
    expect(polled).toEqual(expected);
  });

  it('timersInKeyGroup returns exactly the timers of that key group; foreign keys are rejected', async () => {
    const b = await new Rig().create({ keyGroupRange: new KeyGroupRange(0, 7) });
    const q = b.getTimerQueue('timers');
    const keys = Array.from({ length: 200 }, (_, i) => `k${i}`).filter(
      (k) => keyGroupForKey(k, stringSerializer, MAX_P) <= 7,
    );
    keys.forEach((k, i) => q.add(t(i, k)));
    for (let kg = 0; kg <= 7; kg++) {
      const got = q
        .timersInKeyGroup(kg)
        .map((x) => x.key)
        .sort();
      expect(got).toEqual(keys.filter((k) => keyGroupForKey(k, stringSerializer, MAX_P) === kg).sort());
    }
    expect(q.timersInKeyGroup(12)).toEqual([]);
    const foreign = Array.from({ length: 200 }, (_, i) => `k${i}`).find(
      (k) => keyGroupForKey(k, stringSerializer, MAX_P) > 7,
    )!;
    expect(thrown(() => q.add(t(1, foreign))).code).toBe('KEY_OUT_OF_RANGE');
  });

  it('are snapshotted copy-on-write and restored in order, with typed namespaces', async () => {
    const rig = new Rig();
    const b = await rig.create({}, { snapshotChunkBytes: 1 });
    const q = b.getTimerQueue<number>('windows', int32Serializer);
    for (let i = 0; i < 50; i++) q.add({ timestamp: 100 - i, key: `k${i}`, namespace: i % 3 });
    const before = [...q];
    let gated!: GatedStreamFactory;
    const s = await rig.snapshot(b, (f) => (gated = new GatedStreamFactory(f)));
    await gated.reached;
    q.pollUntil(80);
    q.add({ timestamp: 1, key: 'new', namespace: 9 });
    for (let i = 0; i < 50; i += 5) q.remove({ timestamp: 100 - i, key: `k${i}`, namespace: i % 3 });
    const after = [...q];
    gated.gate.open();
    const r = await rig.restore(s.id, [await s.task.done]);
    expect([...r.getTimerQueue<number>('windows', int32Serializer)]).toEqual(before);
    expect([...q]).toEqual(after);
    // A timer queue restored with an incompatible namespace serializer fails on creation.
    const r2 = await rig.restore(s.id, [await s.task.done]);
    expect(thrown(() => r2.getTimerQueue('windows', stringSerializer)).code).toBe('SERIALIZER_INCOMPATIBLE');
  });
});
