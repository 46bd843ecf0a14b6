import { describe, expect, it } from 'vitest';
import { keyGroupForKey } from '../../../keygroups/key-groups.js';
import { int64Serializer, stringSerializer } from '../../../serializers/builtins.js';
import type { Timer } from '../../../state/types.js';
import type { SuiteContext } from '../context.js';

const t = (timestamp: number, key: string, namespace = ''): Timer<string> => ({ timestamp, key, namespace });
const show = (x: Timer<unknown, unknown>): string => `${x.timestamp}:${String(x.key)}:${String(x.namespace)}`;

/** Timer queues (reference §10 item 38; rescaling is in rescaling.ts). */
export function timerTests(ctx: SuiteContext): void {
  describe('timers', () => {
    it('have set semantics and report whether the head changed', async () => {
      const b = await ctx.stringKeyed();
      const q = b.getTimerQueue('timers');
      expect(q.isEmpty()).toBe(true);
      expect(q.peek()).toBeNull();
      expect(q.add(t(10, 'a'))).toBe(true); // first element is the new head
      expect(q.add(t(10, 'a'))).toBe(false); // duplicate: no-op
      expect(q.size).toBe(1);
      expect(q.add(t(20, 'b'))).toBe(false);
      expect(q.add(t(5, 'c'))).toBe(true);
      expect(q.add(t(5, 'c', 'w'))).toBe(false); // same time and key, other namespace: a distinct timer behind the head
      expect(q.size).toBe(4);
      expect(q.contains(t(5, 'c', 'w'))).toBe(true);
      expect(q.contains(t(5, 'c', 'x'))).toBe(false);
      expect(q.remove(t(20, 'b'))).toBe(false);
      expect(q.remove(t(20, 'b'))).toBe(false); // absent: no-op
      expect(q.remove(t(5, 'c'))).toBe(true);
      expect(show(q.peek() as Timer<string>)).toBe('5:c:w');
      expect(q.size).toBe(2);
      expect(q.isEmpty()).toBe(false);
    });

    it('poll and pollUntil return timers in (timestamp, key bytes, namespace bytes) order', async () => {
      const b = await ctx.stringKeyed();
      const q = b.getTimerQueue('timers');
      const timers = [t(30, 'b'), t(10, 'z'), t(20, 'a', 'w2'), t(20, 'a', 'w1'), t(20, 'b'), t(40, 'a'), t(10, 'y')];
      for (const x of timers) q.add(x);
      expect([...q].map(show).sort()).toEqual(timers.map(show).sort());
      expect(show(q.poll() as Timer<string>)).toBe('10:y:');
      expect(q.pollUntil(20).map(show)).toEqual(['10:z:', '20:a:w1', '20:a:w2', '20:b:']);
      expect(q.pollUntil(25)).toEqual([]);
      expect(q.size).toBe(2);
      expect(q.pollUntil(1e12).map(show)).toEqual(['30:b:', '40:a:']);
      expect(q.poll()).toBeNull();
      expect(q.isEmpty()).toBe(true);
    });

    it('timersInKeyGroup returns exactly the timers of that key group', async () => {
      const b = await ctx.h.createKeyed({ keySerializer: stringSerializer, maxParallelism: 10 });
      const q = b.getTimerQueue('timers');
      const keys = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
      for (const [i, k] of keys.entries()) {
        q.add(t(i, k));
        q.add(t(100 + i, k));
      }
      for (let kg = 0; kg < 10; kg++) {
        const expected = keys
          .filter((k) => keyGroupForKey(k, stringSerializer, 10) === kg)
          .flatMap((k) => {
            const i = keys.indexOf(k);
            return [show(t(i, k)), show(t(100 + i, k))];
          });
        expect(q.timersInKeyGroup(kg).map(show).sort()).toEqual(expected.sort());
      }
    });

    it('several named queues are independent; typed namespaces work', async () => {
      const b = await ctx.stringKeyed();
      const event = b.getTimerQueue('event');
      const proc = b.getTimerQueue<bigint>('processing', int64Serializer);
      event.add(t(1, 'k'));
      proc.add({ timestamp: 2, key: 'k', namespace: 99n });
      expect(event.size).toBe(1);
      expect(proc.size).toBe(1);
      expect(b.getTimerQueue('event').size).toBe(1);
      expect(proc.peek()).toEqual({ timestamp: 2, key: 'k', namespace: 99n });
    });

    it('survive snapshot/restore (ordering, contents and named queues)', async () => {
      const b = await ctx.stringKeyed();
      const q = b.getTimerQueue('timers');
      const proc = b.getTimerQueue<bigint>('processing', int64Serializer);
      for (let i = 0; i < 50; i++) q.add(t(1000 - i * 7, `key${i}`, i % 2 ? 'w' : ''));
      proc.add({ timestamp: 5, key: 'x', namespace: -1n });
      const expected = [...q].map(show).sort();
      const r = await ctx.h.snapshotAndRestore(b);
      const rq = r.getTimerQueue('timers');
      expect(rq.size).toBe(50);
      expect([...rq].map(show).sort()).toEqual(expected);
      const polled = rq.pollUntil(1e9).map((x) => x.timestamp);
      expect(polled).toEqual([...polled].sort((a, c) => a - c));
      expect(polled.length).toBe(50);
      expect(r.getTimerQueue<bigint>('processing', int64Serializer).peek()).toEqual({
        timestamp: 5,
        key: 'x',
        namespace: -1n,
      });
    });
  });
}
