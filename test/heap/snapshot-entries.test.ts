import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CowTable, SnapshotRun } from '../../backends/heap/cow.js';
import { SnapshotEntries } from '../../backends/heap/snapshot-entries.js';

/**
 * The incremental walk of a key group (backends/heap/snapshot-entries.ts): a snapshot yields
 * after every step of its walk (every 64 entries collected, every 8 written) and random writes,
 * (also between the snapshot and the start of the walk)
 * deletes, namespace clears and in-place mutations run between the steps. What it emits must be
 * exactly the key group as it was when the snapshot was taken: each entry once, with its value
 * at that moment (values are mutable objects; in-place mutation goes through `mutable`).
 */

interface Val {
  x: number;
}
const copy = (v: Val): Val => ({ x: v.x });

type Op =
  | { readonly kind: 'set' | 'mutate'; readonly a: number; readonly b: number; readonly x: number }
  | { readonly kind: 'delete'; readonly a: number; readonly b: number }
  | { readonly kind: 'clearNs'; readonly a: number };

const NS = 3;
const KEYS = 160;
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant('set' as const), a: fc.nat(NS - 1), b: fc.nat(KEYS - 1), x: fc.nat(99) }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('mutate' as const),
      a: fc.nat(NS - 1),
      b: fc.nat(KEYS - 1),
      x: fc.nat(99),
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('delete' as const), a: fc.nat(NS - 1), b: fc.nat(KEYS - 1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('clearNs' as const), a: fc.nat(NS - 1) }) },
);

function apply(t: CowTable<Val>, op: Op): void {
  switch (op.kind) {
    case 'set':
      t.set(0, op.a, op.b, { x: op.x });
      break;
    case 'mutate': {
      const v = t.mutable(0, op.a, op.b, copy);
      if (v !== undefined) v.x = 1000 + op.x;
      break;
    }
    case 'delete':
      t.delete(0, op.a, op.b);
      break;
    case 'clearNs':
      for (const b of [...(t.slots[0]?.get(op.a)?.keys() ?? [])]) t.delete(0, op.a, b);
      break;
  }
}

/** The key group's entries as sorted "a/b=x" strings. */
function state(t: CowTable<Val>): string[] {
  const out: string[] = [];
  t.forEachLive(0, (a, b, v) => out.push(`${String(a)}/${String(b)}=${v.x}`));
  return out.sort();
}

describe('incremental walk of a key group under concurrent writes', () => {
  it('emits exactly the entries of the snapshot, each once, with their snapshot values', () => {
    fc.assert(
      fc.property(
        // Enough entries that the walk takes several steps (64 entries each).
        fc.integer({ min: 0, max: NS * KEYS }),
        fc.array(opArb, { maxLength: 200, size: 'large' }),
        // Writes after the snapshot was taken but before its walk reaches the key group.
        fc.array(opArb, { maxLength: 100, size: 'large' }),
        fc.array(fc.array(opArb, { maxLength: 6 }), { minLength: 1, maxLength: 200, size: 'large' }),
        (filled, before, waiting, between) => {
          const t = new CowTable<Val>(1);
          for (let j = 0; j < filled; j++) t.set(0, j % NS, Math.floor(j / NS), { x: j % 100 });
          for (const op of before) apply(t, op);
          const expected = state(t);
          const run = new SnapshotRun(1);
          const frame = run.cover(t);
          for (const op of waiting) apply(t, op);
          const entries = new SnapshotEntries(t, frame, 0, []);
          const emitted: string[] = [];
          const sink = (a: unknown, b: unknown, v: unknown): number => {
            emitted.push(`${String(a)}/${String(b)}=${(v as Val).x}`);
            return 1;
          };
          let step = 0;
          let count = 0;
          for (;;) {
            const r = entries.writeSome(sink, () => true);
            count += r.count;
            if (r.done) break;
            for (const op of between[step++ % between.length]) apply(t, op);
          }
          run.markDone(0);
          run.release();
          expect(emitted.sort()).toEqual(expected);
          expect(count).toBe(expected.length);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('a slot written just before its walk starts, then deleted and re-added behind the walk, is emitted once', () => {
    // The table skips a repeat preserve of the slot it preserved last (cow.ts `lastI`); the walk
    // must still note the slot as touched, or its second visit is written twice.
    const t = new CowTable<Val>(1);
    for (let b = 0; b < 200; b++) t.set(0, 0, b, { x: b });
    const run = new SnapshotRun(1);
    const frame = run.cover(t);
    t.set(0, 0, 5, { x: -1 });
    const entries = new SnapshotEntries(t, frame, 0, []);
    const emitted: string[] = [];
    const sink = (_a: unknown, b: unknown, v: unknown): number => {
      emitted.push(`${String(b)}=${(v as Val).x}`);
      return 1;
    };
    // The first step collects 64 entries, slot 5 among them; then it moves behind the walk.
    let r = entries.writeSome(sink, () => true);
    t.delete(0, 0, 5);
    t.set(0, 0, 5, { x: -2 });
    while (!r.done) r = entries.writeSome(sink, () => true);
    run.release();
    expect(emitted.filter((e) => e.startsWith('5=')).sort()).toEqual(['5=5']);
    expect(emitted.length).toBe(200);
  });

  it('yields inside the walk (the property above exercises interleaving)', () => {
    const t = new CowTable<Val>(1);
    for (let b = 0; b < 1000; b++) t.set(0, 0, b, { x: b });
    const run = new SnapshotRun(1);
    const entries = new SnapshotEntries(t, run.cover(t), 0, []);
    let steps = 0;
    while (
      !entries.writeSome(
        () => 1,
        () => true,
      ).done
    )
      steps++;
    // 1,000 entries: 16 steps collecting (64 each), then 125 writing (8 each).
    expect(steps).toBeGreaterThan(100);
    run.release();
  });

  it('after the walk, writes neither change nor add to what is written', () => {
    const t = new CowTable<Val>(1);
    for (let b = 0; b < 200; b++) t.set(0, 0, b, { x: b });
    const run = new SnapshotRun(1);
    const entries = new SnapshotEntries(t, run.cover(t), 0, []);
    const emitted = new Map<unknown, number>();
    const sink = (_a: unknown, b: unknown, v: unknown): number => {
      emitted.set(b, (v as Val).x);
      return 1;
    };
    let r = entries.writeSome(sink, () => true);
    let round = 0;
    while (!r.done) {
      // Every round: mutate one entry in place, delete one, add one.
      const m = t.mutable(0, 0, round % 200, copy);
      if (m !== undefined) m.x = -1;
      t.delete(0, 0, (round * 7 + 3) % 200);
      t.set(0, 0, 1000 + round, { x: -2 });
      round++;
      r = entries.writeSome(sink, () => true);
    }
    run.release();
    expect(emitted.size).toBe(200);
    for (let b = 0; b < 200; b++) expect(emitted.get(b)).toBe(b);
  });
});
