import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RowTable } from '../../backends/leveldb/row-table.js';

/**
 * The write buffer's byte-keyed table against a Map keyed by latin1 strings (one char per byte,
 * so string order is byte order): gets, sets, range drops, iteration order and ranges.
 */

type Op =
  | { op: 'set'; key: Uint8Array; value: number | null }
  | { op: 'get'; key: Uint8Array }
  | { op: 'drop'; gte: Uint8Array; lt: Uint8Array | null };

// Short keys over few byte values: many collisions of prefixes, equal keys and hash slots.
const bytes = fc.uint8Array({ minLength: 0, maxLength: 6, max: 3 });
const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('set' as const),
      key: bytes,
      value: fc.option(fc.integer({ min: 0, max: 255 })),
    }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('get' as const), key: bytes }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('drop' as const), gte: bytes, lt: fc.option(bytes) }) },
);

const str = (b: Uint8Array): string => Buffer.from(b).toString('latin1');
const inRange = (k: string, gte: string, lt: string | null): boolean => k >= gte && (lt === null || k < lt);

describe('RowTable (write-buffer layer rows)', () => {
  it('behaves like a Map of latin1 strings, also after range drops and across growth', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 2000 }), (ops) => {
        const table = new RowTable();
        const model = new Map<string, number | null>();
        /** First-write order of the keys the layer holds (a dropped then rewritten key moves to its original place). */
        const order: string[] = [];
        for (const o of ops) {
          if (o.op === 'set') {
            const k = str(o.key);
            const fresh = table.set(Buffer.from(o.key), o.value === null ? null : Buffer.from([o.value]));
            expect(fresh).toBe(!model.has(k));
            if (!order.includes(k)) order.push(k);
            model.set(k, o.value);
          } else if (o.op === 'get') {
            const got = table.get(Buffer.from(o.key));
            const want = model.get(str(o.key));
            expect(got === undefined ? undefined : got === null ? null : got[0]).toBe(want);
          } else {
            const g = str(o.gte);
            const l = o.lt === null ? null : str(o.lt);
            table.dropRange(Buffer.from(o.gte), o.lt === null ? null : Buffer.from(o.lt));
            for (const k of [...model.keys()]) if (inRange(k, g, l)) model.delete(k);
          }
          expect(table.size).toBe(model.size);
        }
        const seen: [string, number | null][] = [];
        table.forEach((k, v) => seen.push([k.toString('latin1'), v === null ? null : v[0]]));
        expect(seen).toEqual(order.filter((k) => model.has(k)).map((k) => [k, model.get(k) ?? null]));
        const lo = Buffer.from([1]);
        const hi = Buffer.from([2, 2]);
        const ranged: string[] = [];
        table.rangeAsStrings(lo, hi, (k) => ranged.push(k));
        expect(ranged.sort()).toEqual([...model.keys()].filter((k) => inRange(k, str(lo), str(hi))).sort());
      }),
      { numRuns: 200 },
    );
  });

  it('copies key bytes: the caller may reuse its buffer', () => {
    const table = new RowTable();
    const key = Buffer.from('row-a');
    table.set(key, Buffer.from('1'));
    key.write('row-b');
    table.set(key, Buffer.from('2'));
    expect(table.get(Buffer.from('row-a'))?.toString()).toBe('1');
    expect(table.get(Buffer.from('row-b'))?.toString()).toBe('2');
    expect(table.get(Buffer.from('row-a'), 4)).toBeUndefined(); // 'row-' was never set
    expect(table.get(Buffer.from('row-a!'), 5)?.toString()).toBe('1'); // the first 5 bytes
  });

  it('holds 100k distinct long keys (entries, slots and arena grow)', () => {
    const table = new RowTable();
    for (let i = 0; i < 100_000; i++) table.set(Buffer.from(`key-${i}-${'x'.repeat(i % 50)}`), Buffer.from([i & 0xff]));
    expect(table.size).toBe(100_000);
    for (let i = 0; i < 100_000; i += 997)
      expect(table.get(Buffer.from(`key-${i}-${'x'.repeat(i % 50)}`))?.[0]).toBe(i & 0xff);
    expect(table.get(Buffer.from('key-100000-'))).toBeUndefined();
  });
});
