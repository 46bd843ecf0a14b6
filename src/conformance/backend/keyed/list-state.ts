import { describe, expect, it } from 'vitest';
import { int32Serializer } from '../../../serializers/builtins.js';
import { listState } from '../../../state/descriptors.js';
import { expectThrowsCode } from '../expect-code.js';
import type { SuiteContext } from '../context.js';
import { MERGE_CASES, sortedNumbers } from './merge-cases.js';

/** ListState semantics (reference §10 items 9–14, 22). */
export function listStateTests(ctx: SuiteContext): void {
  describe('ListState', () => {
    const d = listState<string>('l');

    it('absent is null; add/update per key keep insertion order across two snapshots', async () => {
      const { h } = ctx;
      const b = await ctx.intKeyed();
      const s = b.getState(d);
      b.setCurrentKey(1);
      expect(s.get()).toBeNull();
      s.add('1');
      b.setCurrentKey(2);
      s.add('2');
      const p1 = await h.checkpoint([b]);
      b.setCurrentKey(1);
      s.add('u1');
      b.setCurrentKey(2);
      s.add('u2');
      b.setCurrentKey(3);
      s.update(['u3']);
      const p2 = await h.checkpoint([b]);

      const r1 = await h.restoreKeyedSubtask(p1, 0, { keySerializer: int32Serializer });
      const l1 = r1.getState(d);
      expect([1, 2, 3].map((k) => (r1.setCurrentKey(k), l1.get()))).toEqual([['1'], ['2'], null]);
      const r2 = await h.restoreKeyedSubtask(p2, 0, { keySerializer: int32Serializer });
      const l2 = r2.getState(d);
      expect([1, 2, 3].map((k) => (r2.setCurrentKey(k), l2.get()))).toEqual([['1', 'u1'], ['2', 'u2'], ['u3']]);
    });

    it('rejects null with NULL_NOT_ALLOWED (add, addAll, update, null elements) and leaves the list unchanged', async () => {
      const b = await ctx.intKeyed();
      const s = b.getState(listState<number>('nums'));
      b.setCurrentKey(1);
      s.add(1);
      const nil = null as unknown as number;
      expectThrowsCode(() => s.add(nil), 'NULL_NOT_ALLOWED');
      expectThrowsCode(() => s.addAll(null as unknown as number[]), 'NULL_NOT_ALLOWED');
      expectThrowsCode(() => s.addAll([2, nil, 3]), 'NULL_NOT_ALLOWED');
      expectThrowsCode(() => s.update(null as unknown as number[]), 'NULL_NOT_ALLOWED');
      expectThrowsCode(() => s.update([4, nil]), 'NULL_NOT_ALLOWED');
      expect(s.get()).toEqual([1]);
    });

    it('follows the API sequence: update([]) clears, addAll([]) keeps absent, duplicates accumulate, counts return to 0', async () => {
      const b = await ctx.intKeyed();
      const s = b.getState(listState<number>('nums', { serializer: int32Serializer }));
      b.setCurrentKey(1);
      s.add(17);
      s.add(11);
      expect(s.get()).toEqual([17, 11]);
      s.update([]);
      expect(s.get()).toBeNull();
      s.update([10, 16]);
      expect(s.get()).toEqual([10, 16]);
      b.setCurrentKey(2);
      expect(s.get()).toBeNull();
      s.addAll([]);
      expect(s.get()).toBeNull();
      expect(await b.numEntries()).toBe(1);
      s.addAll([3, 4]);
      s.addAll([]);
      s.addAll([5, 6]);
      expect(s.get()).toEqual([3, 4, 5, 6]);
      s.update([1, 2]);
      expect(s.get()).toEqual([1, 2]);
      s.clear();
      expect(s.get()).toBeNull();
      s.add(7);
      s.add(7);
      s.addAll([7]);
      expect(s.get()).toEqual([7, 7, 7]);
      expect(await b.numEntries()).toBe(2);
      s.clear();
      b.setCurrentKey(1);
      s.clear();
      expect(await b.numEntries()).toBe(0);
    });

    it('an empty list state yields null, and null again after add + clear', async () => {
      const b = await ctx.intKeyed();
      const s = b.getState(listState<number>('nums'));
      b.setCurrentKey(9);
      expect(s.get()).toBeNull();
      s.update([1]);
      s.clear();
      expect(s.get()).toBeNull();
      s.add(1);
      s.update([]);
      expect(s.get()).toBeNull();
    });

    describe('mergeNamespaces', () => {
      for (const mc of MERGE_CASES) {
        it(`merges ${mc.name} into the target and removes the sources`, async () => {
          const b = await ctx.intKeyed();
          const s = b.getState(listState<number>('merge', { serializer: int32Serializer }));
          b.setCurrentKey(mc.key);
          for (const [ns, values] of Object.entries(mc.contents)) {
            s.setCurrentNamespace(ns);
            s.addAll(values);
          }
          s.setCurrentNamespace('other');
          s.add(-1);
          s.mergeNamespaces('ns1', ['ns2', 'ns3']);
          s.setCurrentNamespace('ns1');
          const merged = s.get();
          if (mc.expectedSum === null) expect(merged).toBeNull();
          else expect(sortedNumbers(merged ?? [])).toEqual(sortedNumbers(mc.all));
          for (const src of ['ns2', 'ns3']) {
            s.setCurrentNamespace(src);
            expect(s.get()).toBeNull();
          }
          s.setCurrentNamespace('other');
          expect(s.get()).toEqual([-1]);
          s.clear();
          s.setCurrentNamespace('ns1');
          s.clear();
          expect(await b.numEntries()).toBe(0);
        });
      }

      it('keeps the target first, then appends the sources', async () => {
        const b = await ctx.intKeyed();
        const s = b.getState(listState<number>('merge-order', { serializer: int32Serializer }));
        b.setCurrentKey(1);
        s.setCurrentNamespace('t');
        s.addAll([1, 2]);
        s.setCurrentNamespace('a');
        s.addAll([3, 4]);
        s.mergeNamespaces('t', ['a']);
        s.setCurrentNamespace('t');
        expect(s.get()).toEqual([1, 2, 3, 4]);
      });
    });
  });
}
