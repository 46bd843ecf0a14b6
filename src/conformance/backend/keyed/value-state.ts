import { describe, expect, it } from 'vitest';
import { keyGroupForKey } from '../../../keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../../serializers/builtins.js';
import { valueState } from '../../../state/descriptors.js';
import type { SuiteContext } from '../context.js';

/** ValueState semantics (reference §10 items 1, 2, 4–7) and namespaces. */
export function valueStateTests(ctx: SuiteContext): void {
  describe('ValueState', () => {
    it('absent is null, keys are isolated, switching back returns the right value', async () => {
      const b = await ctx.intKeyed();
      const s = b.getState(valueState<string>('v', { serializer: stringSerializer }));
      b.setCurrentKey(1);
      expect(s.value()).toBeNull();
      s.update('1');
      b.setCurrentKey(2);
      expect(s.value()).toBeNull();
      s.update('2');
      b.setCurrentKey(1);
      expect(s.value()).toBe('1');
      b.setCurrentKey(2);
      expect(s.value()).toBe('2');
      expect(b.getCurrentKey()).toBe(2);
      expect(b.currentKeyGroup).toBe(keyGroupForKey(2, int32Serializer, 128));
      s.clear();
      expect(s.value()).toBeNull();
      b.setCurrentKey(1);
      expect(s.value()).toBe('1');
    });

    it('snapshots are isolated: S1 shows the old values, S2 the new ones, live state the newest', async () => {
      const { h } = ctx;
      const b = await ctx.intKeyed();
      const d = valueState<string>('v', { serializer: stringSerializer });
      const s = b.getState(d);
      b.setCurrentKey(1);
      s.update('1');
      b.setCurrentKey(2);
      s.update('2');
      const s1 = await h.checkpoint([b]);
      b.setCurrentKey(1);
      s.update('u1');
      b.setCurrentKey(2);
      s.update('u2');
      b.setCurrentKey(3);
      s.update('u3');
      const s2 = await h.checkpoint([b]);
      b.setCurrentKey(1);
      s.update('live');

      const r1 = await h.restoreKeyedSubtask(s1, 0, { keySerializer: int32Serializer });
      const v1 = r1.getState(d);
      expect(readAll(r1, v1, [1, 2, 3])).toEqual(['1', '2', null]);
      const r2 = await h.restoreKeyedSubtask(s2, 0, { keySerializer: int32Serializer });
      const v2 = r2.getState(d);
      expect(readAll(r2, v2, [1, 2, 3])).toEqual(['u1', 'u2', 'u3']);
      expect(readAll(b, s, [1, 2, 3])).toEqual(['live', 'u2', 'u3']);
    });

    it('two value states are independent and both survive snapshot/restore', async () => {
      const b = await ctx.stringKeyed();
      const a = b.getState(valueState<number>('a'));
      const c = b.getState(valueState<number>('c'));
      b.setCurrentKey('x');
      a.update(1);
      c.update(2);
      b.setCurrentKey('y');
      c.update(3);
      expect(a.value()).toBeNull();
      expect(b.stateNames().sort()).toEqual(['a', 'c']);
      const r = await ctx.h.snapshotAndRestore(b);
      expect(r.stateNames().sort()).toEqual(['a', 'c']);
      const ra = r.getState(valueState<number>('a'));
      const rc = r.getState(valueState<number>('c'));
      r.setCurrentKey('x');
      expect([ra.value(), rc.value()]).toEqual([1, 2]);
      r.setCurrentKey('y');
      expect([ra.value(), rc.value()]).toEqual([null, 3]);
    });

    it('a default value is returned when absent, after clear and after update(null), also after a restore', async () => {
      const b = await ctx.intKeyed();
      const d = valueState<number>('v', { serializer: int32Serializer, defaultValue: 42 });
      const s = b.getState(d);
      b.setCurrentKey(1);
      expect(s.value()).toBe(42);
      s.update(1);
      expect(s.value()).toBe(1);
      b.setCurrentKey(2);
      expect(s.value()).toBe(42);
      b.setCurrentKey(1);
      s.clear();
      expect(s.value()).toBe(42);
      s.update(17);
      s.update(null);
      expect(s.value()).toBe(42);
      expect(await b.numEntries()).toBe(0);
      b.setCurrentKey(3);
      s.update(3);
      const r = await ctx.h.snapshotAndRestore(b);
      const rs = r.getState(d);
      r.setCurrentKey(1);
      expect(rs.value()).toBe(42);
      r.setCurrentKey(3);
      expect(rs.value()).toBe(3);
    });

    it('a null default is no default; a string default survives restore', async () => {
      const b = await ctx.intKeyed();
      const none = b.getState(valueState<string>('none', { defaultValue: null as unknown as string }));
      const hello = b.getState(valueState<string>('hello', { defaultValue: 'Hello' }));
      b.setCurrentKey(1);
      expect(none.value()).toBeNull();
      expect(hello.value()).toBe('Hello');
      hello.update('World');
      expect(hello.value()).toBe('World');
      hello.clear();
      expect(hello.value()).toBe('Hello');
      hello.update('kept');
      const r = await ctx.h.snapshotAndRestore(b);
      const rh = r.getState(valueState<string>('hello', { defaultValue: 'Hello' }));
      r.setCurrentKey(1);
      expect(rh.value()).toBe('kept');
      r.setCurrentKey(2);
      expect(rh.value()).toBe('Hello');
    });

    it('the default value is handed out as a fresh copy on every read', async () => {
      const b = await ctx.intKeyed();
      const s = b.getState(valueState<{ items: number[] }>('v', { defaultValue: { items: [1] } }));
      b.setCurrentKey(1);
      const first = s.value();
      const second = s.value();
      expect(first).toEqual({ items: [1] });
      expect(second).toEqual(first);
      expect(second).not.toBe(first);
      first?.items.push(2);
      b.setCurrentKey(2);
      expect(s.value()).toEqual({ items: [1] });
    });

    it('update(null) is clear(): the entry is removed and counts drop to 0', async () => {
      const b = await ctx.intKeyed();
      const s = b.getState(valueState<number>('v'));
      expect(await b.numEntries()).toBe(0);
      b.setCurrentKey(1);
      s.update(5);
      s.update(6);
      expect(await b.numEntries()).toBe(1);
      b.setCurrentKey(2);
      s.update(7);
      expect(await b.numEntries()).toBe(2);
      s.update(null);
      expect(s.value()).toBeNull();
      b.setCurrentKey(1);
      s.clear();
      expect(await b.numEntries()).toBe(0);
    });

    it('namespaces (windows) are isolated from each other and from the void namespace', async () => {
      const b = await ctx.stringKeyed();
      const s = b.getState(valueState<string>('v'));
      b.setCurrentKey('k');
      expect(s.getCurrentNamespace()).toBe('');
      s.update('void');
      s.setCurrentNamespace('w1');
      expect(s.getCurrentNamespace()).toBe('w1');
      expect(s.value()).toBeNull();
      s.update('one');
      s.setCurrentNamespace('w2');
      s.update('two');
      s.clear();
      expect(s.value()).toBeNull();
      s.setCurrentNamespace('w1');
      expect(s.value()).toBe('one');
      s.setCurrentNamespace('');
      expect(s.value()).toBe('void');
      expect(await b.numEntries()).toBe(2);

      const r = await ctx.h.snapshotAndRestore(b);
      const rs = r.getState(valueState<string>('v'));
      r.setCurrentKey('k');
      rs.setCurrentNamespace('w1');
      expect(rs.value()).toBe('one');
      rs.setCurrentNamespace('w2');
      expect(rs.value()).toBeNull();
      rs.setCurrentNamespace('');
      expect(rs.value()).toBe('void');
    });

    it('non-string namespaces (int32 window ends) round-trip through a snapshot', async () => {
      const b = await ctx.stringKeyed();
      const d = valueState<number, number>('w', { namespace: int32Serializer });
      const s = b.getState(d);
      b.setCurrentKey('k');
      for (const w of [1000, 2000, -5]) {
        s.setCurrentNamespace(w);
        s.update(w * 2);
      }
      const r = await ctx.h.snapshotAndRestore(b);
      const rs = r.getState(d);
      r.setCurrentKey('k');
      const seen = [1000, 2000, -5, 3000].map((w) => {
        rs.setCurrentNamespace(w);
        return rs.value();
      });
      expect(seen).toEqual([2000, 4000, -10, null]);
    });
  });
}

function readAll<K, T>(b: { setCurrentKey(k: K): void }, s: { value(): T | null }, keys: readonly K[]): (T | null)[] {
  return keys.map((k) => {
    b.setCurrentKey(k);
    return s.value();
  });
}
