import { describe, expect, it } from 'vitest';
import type { KeyedStateBackend } from '../../../backend/contract.js';
import { int32Serializer, stringSerializer } from '../../../serializers/builtins.js';
import { aggregatingState, reducingState, type AggregateFunction } from '../../../state/descriptors.js';
import type { MergingState } from '../../../state/types.js';
import type { SuiteContext } from '../context.js';
import { MERGE_CASES } from './merge-cases.js';

interface Acc {
  sum: number;
}

/** Mutates and returns the accumulator it is given. */
const mutableSum: AggregateFunction<number, Acc, number> = {
  createAccumulator: () => ({ sum: 0 }),
  add(value, acc) {
    acc.sum += value;
    return acc;
  },
  getResult: (acc) => acc.sum,
  merge(a, b) {
    a.sum += b.sum;
    return a;
  },
};

/** Never mutates: returns fresh (frozen) accumulators. */
const immutableSum: AggregateFunction<number, Acc, number> = {
  createAccumulator: () => Object.freeze({ sum: 0 }),
  add: (value, acc) => Object.freeze({ sum: acc.sum + value }),
  getResult: (acc) => acc.sum,
  merge: (a, b) => Object.freeze({ sum: a.sum + b.sum }),
};

/** A numeric state that adds: reducing with +, or aggregating with either accumulator style. */
type Summing = MergingState<string> & { get(): number | null; add(v: number): void };

const variants: { name: string; make: (b: KeyedStateBackend<number>) => Summing }[] = [
  {
    name: 'ReducingState (sum)',
    make: (b) => b.getState(reducingState<number>('sum', (a, v) => a + v, { serializer: int32Serializer })),
  },
  { name: 'AggregatingState (mutable accumulator)', make: (b) => b.getState(aggregatingState('agg-mut', mutableSum)) },
  {
    name: 'AggregatingState (immutable accumulator)',
    make: (b) => b.getState(aggregatingState('agg-imm', immutableSum)),
  },
];

/** Reducing and aggregating semantics (reference §10 items 15–22). */
export function reducingAggregatingTests(ctx: SuiteContext): void {
  describe('ReducingState with string append', () => {
    it('absent is null; adds reduce; two snapshot points restore their own values', async () => {
      const { h } = ctx;
      const b = await ctx.intKeyed();
      const d = reducingState<string>('append', (a, v) => `${a},${v}`, { serializer: stringSerializer });
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
      s.add('u3');
      const p2 = await h.checkpoint([b]);
      const r1 = await h.restoreKeyedSubtask(p1, 0, { keySerializer: int32Serializer });
      const s1 = r1.getState(d);
      expect([1, 2, 3].map((k) => (r1.setCurrentKey(k), s1.get()))).toEqual(['1', '2', null]);
      const r2 = await h.restoreKeyedSubtask(p2, 0, { keySerializer: int32Serializer });
      const s2 = r2.getState(d);
      expect([1, 2, 3].map((k) => (r2.setCurrentKey(k), s2.get()))).toEqual(['1,u1', '2,u2', 'u3']);
    });
  });

  for (const variant of variants) {
    describe(variant.name, () => {
      it('adds up per key (17+11 = 28, 4+3+2 = 9), clear gives null, counts return to 0', async () => {
        const b = await ctx.intKeyed();
        const s = variant.make(b);
        b.setCurrentKey(1);
        expect(s.get()).toBeNull();
        s.add(17);
        s.add(11);
        expect(s.get()).toBe(28);
        b.setCurrentKey(2);
        expect(s.get()).toBeNull();
        s.add(5);
        b.setCurrentKey(1);
        expect(s.get()).toBe(28);
        s.clear();
        expect(s.get()).toBeNull();
        s.add(4);
        s.add(3);
        s.add(2);
        expect(s.get()).toBe(9);
        expect(await b.numEntries()).toBe(2);
        s.clear();
        b.setCurrentKey(2);
        s.clear();
        expect(await b.numEntries()).toBe(0);
      });

      it('keeps accumulated values through snapshot/restore and keeps adding afterwards', async () => {
        const b = await ctx.intKeyed();
        const s = variant.make(b);
        b.setCurrentKey(7);
        s.add(10);
        s.add(20);
        const r = await ctx.h.snapshotAndRestore(b);
        const rs = variant.make(r);
        r.setCurrentKey(7);
        expect(rs.get()).toBe(30);
        rs.add(5);
        expect(rs.get()).toBe(35);
      });

      for (const mc of MERGE_CASES) {
        it(`mergeNamespaces: ${mc.name} → ${mc.expectedSum ?? 'absent'}`, async () => {
          const b = await ctx.intKeyed();
          const s = variant.make(b);
          b.setCurrentKey(mc.key);
          for (const [ns, values] of Object.entries(mc.contents)) {
            s.setCurrentNamespace(ns);
            for (const v of values) s.add(v);
          }
          s.mergeNamespaces('ns1', ['ns2', 'ns3']);
          s.setCurrentNamespace('ns1');
          expect(s.get()).toBe(mc.expectedSum);
          for (const src of ['ns2', 'ns3']) {
            s.setCurrentNamespace(src);
            expect(s.get()).toBeNull();
          }
          s.setCurrentNamespace('ns1');
          s.clear();
          expect(await b.numEntries()).toBe(0);
        });
      }
    });
  }
}
