import { describe, expect, it } from 'vitest';
import { int32Serializer } from '../../../serializers/builtins.js';
import { listState, mapState, valueState } from '../../../state/descriptors.js';
import { collect } from '../harness.js';
import type { SuiteContext } from '../context.js';

const numeric = (a: number, b: number): number => a - b;
const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

/** getKeys, getKeysAndNamespaces, applyToAllKeys (reference §10 items 27–31). */
export function keyIterationTests(ctx: SuiteContext): void {
  describe('key iteration', () => {
    it('getKeys returns exactly the keys of one namespace; getKeysAndNamespaces every pair once', async () => {
      const b = await ctx.intKeyed();
      const s = b.getState(valueState<number>('v', { serializer: int32Serializer }));
      const other = b.getState(valueState<number>('other', { serializer: int32Serializer }));
      for (let k = 0; k < 2000; k++) {
        b.setCurrentKey(k);
        s.setCurrentNamespace(k < 1000 ? 'ns1' : 'ns2');
        s.update(k);
      }
      b.setCurrentKey(5000);
      other.update(1);
      expect((await collect(b.getKeys('v', 'ns1'))).sort(numeric)).toEqual(range(0, 1000));
      expect((await collect(b.getKeys('v', 'ns2'))).sort(numeric)).toEqual(range(1000, 2000));
      expect(await collect(b.getKeys('v', 'ns3'))).toEqual([]);
      const pairs = await collect(b.getKeysAndNamespaces<string>('v'));
      expect(pairs.length).toBe(2000);
      const asStrings = new Set(pairs.map(([k, ns]) => `${k}/${ns}`));
      expect(asStrings.size).toBe(2000);
      for (let k = 0; k < 2000; k++) expect(asStrings.has(`${k}/${k < 1000 ? 'ns1' : 'ns2'}`)).toBe(true);
    });

    it('map state: a key with several entries appears once in getKeys and getKeysAndNamespaces', async () => {
      const b = await ctx.intKeyed();
      const m = b.getState(mapState<string, number>('m'));
      for (let k = 0; k < 200; k++) {
        b.setCurrentKey(k);
        m.setCurrentNamespace(k % 2 === 0 ? 'even' : 'odd');
        m.put('a', k);
        m.put('b', k);
      }
      expect((await collect(b.getKeys('m', 'even'))).sort(numeric)).toEqual(range(0, 200).filter((k) => k % 2 === 0));
      const pairs = await collect(b.getKeysAndNamespaces<string>('m'));
      expect(pairs.length).toBe(200);
      expect(pairs.map(([k, ns]) => `${k}/${ns}`).sort()).toEqual(
        range(0, 200)
          .map((k) => `${k}/${k % 2 === 0 ? 'even' : 'odd'}`)
          .sort(),
      );
    });

    it('getKeys after restore sees restored keys', async () => {
      const b = await ctx.intKeyed();
      const s = b.getState(valueState<number>('v'));
      for (const k of [3, 1, 2]) {
        b.setCurrentKey(k);
        s.update(k);
      }
      const r = await ctx.h.snapshotAndRestore(b);
      r.getState(valueState<number>('v'));
      expect((await collect(r.getKeys('v', ''))).sort(numeric)).toEqual([1, 2, 3]);
    });

    it('applyToAllKeys can read each key with that key current', async () => {
      const b = await ctx.intKeyed();
      const d = valueState<number>('v', { serializer: int32Serializer });
      const s = b.getState(d);
      for (let k = 0; k < 100; k++) {
        b.setCurrentKey(k);
        s.update(k * 10);
      }
      const seen = new Map<number, number | null>();
      await b.applyToAllKeys('', d, (key, state) => {
        expect(b.getCurrentKey()).toBe(key);
        seen.set(key, state.value());
      });
      expect(seen.size).toBe(100);
      for (let k = 0; k < 100; k++) expect(seen.get(k)).toBe(k * 10);
    });

    it('applyToAllKeys can clear every key', async () => {
      const b = await ctx.intKeyed();
      const d = listState<number>('l');
      const s = b.getState(d);
      for (let k = 0; k < 100; k++) {
        b.setCurrentKey(k);
        s.add(k);
      }
      let calls = 0;
      await b.applyToAllKeys('', d, (_key, state) => {
        calls++;
        state.clear();
      });
      expect(calls).toBe(100);
      expect(await b.numEntries()).toBe(0);
      expect(await collect(b.getKeys('l', ''))).toEqual([]);
    });

    it('applyToAllKeys tolerates add, clear, add for each key; only the last add remains', async () => {
      const b = await ctx.intKeyed();
      const d = listState<string>('l');
      const s = b.getState(d);
      for (let k = 0; k < 100; k++) {
        b.setCurrentKey(k);
        s.add('first');
      }
      const visited: number[] = [];
      await b.applyToAllKeys('', d, async (key, state) => {
        visited.push(key);
        state.add('second');
        state.clear();
        state.add(`last-${key}`);
        await Promise.resolve();
      });
      expect(visited.sort(numeric)).toEqual(range(0, 100));
      for (let k = 0; k < 100; k++) {
        b.setCurrentKey(k);
        expect(s.get()).toEqual([`last-${k}`]);
      }
      expect(await b.numEntries()).toBe(100);
    });

    it('applyToAllKeys only visits keys of the requested namespace', async () => {
      const b = await ctx.intKeyed();
      const d = valueState<number>('v');
      const s = b.getState(d);
      for (let k = 0; k < 20; k++) {
        b.setCurrentKey(k);
        s.setCurrentNamespace(k < 5 ? 'a' : 'b');
        s.update(k);
      }
      const keys: number[] = [];
      await b.applyToAllKeys('a', d, (key, state) => {
        keys.push(key);
        expect(state.value()).toBe(key);
      });
      expect(keys.sort(numeric)).toEqual([0, 1, 2, 3, 4]);
    });
  });
}
