import { describe, expect, it } from 'vitest';
import { int32Serializer, stringSerializer } from '../../../serializers/builtins.js';
import { mapState } from '../../../state/descriptors.js';
import type { MapState } from '../../../state/types.js';
import { collect } from '../harness.js';
import type { SuiteContext } from '../context.js';

const byKey = <V>(a: [number, V], b: [number, V]): number => a[0] - b[0];

async function sortedEntries<V>(m: MapState<number, V>): Promise<[number, V][]> {
  return (await collect(m.entries())).sort(byKey);
}

/** MapState semantics (reference §10 items 23–26). */
export function mapStateTests(ctx: SuiteContext): void {
  describe('MapState', () => {
    const d = mapState<number, string>('m', { keySerializer: int32Serializer, valueSerializer: stringSerializer });

    it('get/put/contains per key; S1 and S2 restore exactly the maps at those points', async () => {
      const { h } = ctx;
      const b = await ctx.intKeyed();
      const s = b.getState(d);
      b.setCurrentKey(1);
      expect(s.get(1)).toBeNull();
      expect(s.contains(1)).toBe(false);
      s.put(1, 'one');
      s.put(2, 'two');
      b.setCurrentKey(2);
      expect(s.get(1)).toBeNull();
      s.put(1, 'eins');
      expect(s.contains(1)).toBe(true);
      const p1 = await h.checkpoint([b]);

      b.setCurrentKey(1);
      s.put(3, 'three');
      s.remove(2);
      b.setCurrentKey(2);
      s.clear();
      b.setCurrentKey(3);
      s.putAll([
        [10, 'ten'],
        [11, 'elf'],
      ]);
      s.putAll(new Map([[12, 'zwölf']]));
      expect((await collect(s.keys())).sort((a, b) => a - b)).toEqual([10, 11, 12]);
      expect((await collect(s.values())).sort()).toEqual(['elf', 'ten', 'zwölf']);
      // Rewrite through iteration: values of length != 3 are removed, the others get a suffix.
      for await (const [k, v] of s.entries()) {
        if (v.length !== 3) s.remove(k);
        else s.put(k, `${v}!`);
      }
      expect(await sortedEntries(s)).toEqual([
        [10, 'ten!'],
        [11, 'elf!'],
      ]);
      const p2 = await h.checkpoint([b]);

      const r1 = await h.restoreKeyedSubtask(p1, 0, { keySerializer: int32Serializer });
      const m1 = r1.getState(d);
      const at = async (r: typeof r1, m: typeof m1, key: number): Promise<[number, string][]> => {
        r.setCurrentKey(key);
        return sortedEntries(m);
      };
      expect(await at(r1, m1, 1)).toEqual([
        [1, 'one'],
        [2, 'two'],
      ]);
      expect(await at(r1, m1, 2)).toEqual([[1, 'eins']]);
      expect(await at(r1, m1, 3)).toEqual([]);
      const r2 = await h.restoreKeyedSubtask(p2, 0, { keySerializer: int32Serializer });
      const m2 = r2.getState(d);
      expect(await at(r2, m2, 1)).toEqual([
        [1, 'one'],
        [3, 'three'],
      ]);
      expect(await at(r2, m2, 2)).toEqual([]);
      expect(await at(r2, m2, 3)).toEqual([
        [10, 'ten!'],
        [11, 'elf!'],
      ]);
      r2.setCurrentKey(2);
      expect(m2.isEmpty()).toBe(true);
    });

    it('isEmpty over 1024 puts and removes; entries, keys and values agree as sets', async () => {
      const b = await ctx.intKeyed();
      const s = b.getState(
        mapState<number, number>('big', { keySerializer: int32Serializer, valueSerializer: int32Serializer }),
      );
      b.setCurrentKey(1);
      expect(s.isEmpty()).toBe(true);
      for (let i = 0; i < 1024; i++) {
        s.put(i, i * 3);
        expect(s.isEmpty()).toBe(false);
      }
      expect(await b.numEntries()).toBe(1024);
      const entries = await collect(s.entries());
      expect(entries.length).toBe(1024);
      expect(new Set(entries.map(([k]) => k)).size).toBe(1024);
      for (const [k, v] of entries) expect(v).toBe(k * 3);
      expect(new Set(await collect(s.keys()))).toEqual(new Set(entries.map(([k]) => k)));
      expect((await collect(s.values())).sort((a, b) => a - b)).toEqual(
        entries.map(([, v]) => v).sort((a, b) => a - b),
      );
      for (let i = 0; i < 1024; i++) {
        expect(s.get(i)).toBe(i * 3);
        s.remove(i);
        expect(s.contains(i)).toBe(false);
      }
      expect(s.isEmpty()).toBe(true);
      expect(await b.numEntries()).toBe(0);
    });

    it('allows removing entries while iterating; every entry is visited exactly once', async () => {
      const b = await ctx.intKeyed();
      const s = b.getState(
        mapState<number, number>('iter', { keySerializer: int32Serializer, valueSerializer: int32Serializer }),
      );
      b.setCurrentKey(1);
      for (let i = 0; i < 1024; i++) s.put(i, i);
      const visited: number[] = [];
      for await (const [k] of s.entries()) {
        visited.push(k);
        if (k % 2 === 1) s.remove(k);
        if (k % 3 === 0) s.remove(k); // removing twice
        if (k % 3 === 0) s.remove(k);
      }
      expect(visited.sort((a, c) => a - c)).toEqual(Array.from({ length: 1024 }, (_, i) => i));
      const remaining = (await collect(s.keys())).sort((a, c) => a - c);
      const expected = Array.from({ length: 1024 }, (_, i) => i).filter((i) => i % 2 === 0 && i % 3 !== 0);
      expect(remaining).toEqual(expected);
      expect(await b.numEntries()).toBe(expected.length);
    });

    it('an empty map iterates as empty, works after puts, and is empty again after clear', async () => {
      const b = await ctx.intKeyed();
      const s = b.getState(d);
      b.setCurrentKey(5);
      expect(await collect(s.entries())).toEqual([]);
      expect(await collect(s.keys())).toEqual([]);
      expect(await collect(s.values())).toEqual([]);
      s.put(1, 'a');
      s.put(2, 'b');
      expect(s.get(2)).toBe('b');
      expect(await sortedEntries(s)).toEqual([
        [1, 'a'],
        [2, 'b'],
      ]);
      s.clear();
      expect(await collect(s.entries())).toEqual([]);
      expect(s.isEmpty()).toBe(true);
      expect(await b.numEntries()).toBe(0);
    });

    it('iteration is bound to the key that was current when it started', async () => {
      const b = await ctx.intKeyed();
      const s = b.getState(d);
      b.setCurrentKey(1);
      s.put(1, 'k1');
      b.setCurrentKey(2);
      s.put(2, 'k2');
      b.setCurrentKey(1);
      const seen: [number, string][] = [];
      for await (const e of s.entries()) {
        seen.push(e);
        b.setCurrentKey(2);
      }
      expect(seen).toEqual([[1, 'k1']]);
    });
  });
}
