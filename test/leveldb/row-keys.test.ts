import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  decodeRowKey,
  encodeRowKey,
  lengthPrefixed,
  prefixUpperBound,
  RowKeyBuilder,
} from '../../backends/leveldb/row-keys.js';

const bytes = fc.uint8Array({ maxLength: 300 });

function prefixOf(kg: number, sid: number, key: Uint8Array, ns: Uint8Array): Buffer {
  return encodeRowKey(kg, sid, key, ns);
}

describe('LevelDB row keys', () => {
  it('key "ab" + namespace "c" never collides with "a" + "bc", nor is one a prefix of the other', () => {
    const a = encodeRowKey(1, 2, Buffer.from('ab'), Buffer.from('c'));
    const b = encodeRowKey(1, 2, Buffer.from('a'), Buffer.from('bc'));
    expect(a.equals(b)).toBe(false);
    expect(a.subarray(0, b.length).equals(b)).toBe(false);
    expect(b.subarray(0, a.length).equals(a)).toBe(false);
  });

  it('decodes what it encodes, and the builder produces the same bytes', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 32767 }),
        fc.integer({ min: 1, max: 0x7fff }),
        bytes,
        bytes,
        bytes,
        (kg, sid, key, ns, uk) => {
          const row = encodeRowKey(kg, sid, key, ns, uk);
          const d = decodeRowKey(row);
          expect([d.keyGroup, d.stateId]).toEqual([kg, sid]);
          expect(Buffer.from(d.key).equals(Buffer.from(key))).toBe(true);
          expect(Buffer.from(d.namespace).equals(Buffer.from(ns))).toBe(true);
          expect(Buffer.from(d.userKey).equals(Buffer.from(uk))).toBe(true);
          const built = new RowKeyBuilder().build(kg, sid, lengthPrefixed(key), lengthPrefixed(ns), uk);
          expect(built.view().equals(row)).toBe(true);
          expect(Buffer.from(built.string(), 'latin1').equals(row)).toBe(true);
        },
      ),
    );
  });

  it('(kg, state, key, namespace) prefix scans are exact: a row is in the scan range iff it has that key and namespace', () => {
    fc.assert(
      fc.property(bytes, bytes, bytes, bytes, bytes, (k1, n1, k2, n2, uk) => {
        const prefix = prefixOf(5, 3, k1, n1);
        const row = encodeRowKey(5, 3, k2, n2, uk);
        const hi = prefixUpperBound(prefix);
        const inRange = Buffer.compare(row, prefix) >= 0 && (hi === null || Buffer.compare(row, hi) < 0);
        const same = Buffer.from(k1).equals(Buffer.from(k2)) && Buffer.from(n1).equals(Buffer.from(n2));
        expect(inRange).toBe(same);
      }),
      { numRuns: 2000 },
    );
  });

  it('rows sort by key group first, so a key-group range is one byte range', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 32766 }), bytes, bytes, bytes, bytes, (kg, k1, n1, k2, n2) => {
        const lower = encodeRowKey(kg, 0x7fff, k1, n1, Buffer.alloc(40, 0xff));
        const upper = encodeRowKey(kg + 1, 1, k2, n2);
        expect(Buffer.compare(lower, upper)).toBeLessThan(0);
      }),
    );
  });
});
