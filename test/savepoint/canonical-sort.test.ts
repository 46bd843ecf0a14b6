import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ByteWriter, fieldWriter } from '../../src/format/bytes.js';
import {
  canonicalizeSection,
  listEntries,
  mapEntries,
  SectionWriter,
  timerEntries,
  valueEntries,
  writeCanonicalEntries,
  type EntryKind,
  type RawSection,
} from '../../src/format/key-groups-stream.js';
import { writeCanonicalSection } from '../../src/format/canonical-layout.js';
import {
  bytesSerializer,
  float64Serializer,
  int32Serializer,
  stringSerializer,
} from '../../src/serializers/builtins.js';
import type { Serializer } from '../../src/serializers/serializer.js';

/**
 * The offset-based canonical sort (writeCanonicalEntries) against the reference that decodes
 * every entry into objects and sorts them (writeCanonicalSection): the bytes must be identical.
 */

// Few distinct short byte strings, so entries share keys, prefixes and namespaces often.
const bytesArb = fc.uint8Array({ minLength: 0, maxLength: 20 }).map((a) => Buffer.from(a.map((x) => x % 4)));
const longBytesArb = fc
  .uint8Array({ minLength: 0, maxLength: 40 })
  .map((a) => Buffer.from(a.map((x) => (x < 200 ? 7 : x))));
const keyArb = fc.oneof(bytesArb, longBytesArb);

function encode(kind: EntryKind, entries: unknown[]): SectionWriter {
  const s = new SectionWriter();
  for (const e of entries) {
    if (kind === 'value') {
      const v = e as [Buffer, Buffer, Buffer];
      s.valueEntry(v[0], v[1], v[2]);
    } else if (kind === 'list') {
      const l = e as [Buffer, Buffer, Buffer[]];
      s.listEntry(l[0], l[1], l[2].length);
      for (const el of l[2]) s.listElement(el);
    } else if (kind === 'map') {
      const m = e as [Buffer, Buffer, Array<[Buffer, Buffer | null]>];
      s.mapEntry(m[0], m[1], m[2].length);
      for (const [uk, v] of m[2]) s.mapElement(uk, v);
    } else {
      const t = e as [number, Buffer, Buffer];
      s.timerEntry(t[0], t[1], t[2]);
    }
  }
  return s;
}

function reference(kind: EntryKind, section: RawSection, dropEmpty: boolean): SectionWriter {
  const out = new SectionWriter();
  const entries =
    kind === 'value'
      ? [...valueEntries(section)]
      : kind === 'list'
        ? [...listEntries(section)].filter((e) => !dropEmpty || e.elements.length > 0)
        : kind === 'map'
          ? [...mapEntries(section)].filter((e) => !dropEmpty || e.entries.length > 0)
          : [...timerEntries(section)];
  writeCanonicalSection(kind, entries, out);
  return out;
}

const entriesArb: Record<EntryKind, fc.Arbitrary<unknown[]>> = {
  value: fc.array(fc.tuple(keyArb, bytesArb, longBytesArb), { maxLength: 60 }),
  list: fc.array(fc.tuple(keyArb, bytesArb, fc.array(longBytesArb, { maxLength: 4 })), { maxLength: 40 }),
  map: fc.array(
    fc.tuple(keyArb, bytesArb, fc.array(fc.tuple(keyArb, fc.option(longBytesArb, { nil: null })), { maxLength: 6 })),
    { maxLength: 40 },
  ),
  timers: fc.array(fc.tuple(fc.constantFrom(0, -0, 1, -5, 1.5, 1e15, Infinity, -Infinity), bytesArb, bytesArb), {
    maxLength: 60,
  }),
};

describe('writeCanonicalEntries', () => {
  for (const kind of ['value', 'list', 'map', 'timers'] as const) {
    for (const dropEmpty of [false, true]) {
      it(`sorts ${kind} sections exactly like the reference (dropEmpty ${dropEmpty})`, () => {
        fc.assert(
          fc.property(entriesArb[kind], (entries) => {
            const s = encode(kind, entries);
            const section: RawSection = { stateId: 0, entryCount: s.count, bytes: s.out.toBuffer() };
            const expected = reference(kind, section, dropEmpty);
            const out = new ByteWriter(16);
            const n = writeCanonicalEntries(kind, section.bytes, section.entryCount, out, dropEmpty);
            expect(n).toBe(expected.count);
            expect(out.toBuffer().equals(expected.out.toBuffer())).toBe(true);
            if (!dropEmpty) {
              const viaSection = new SectionWriter();
              canonicalizeSection(kind, section, viaSection);
              expect(viaSection.out.toBuffer().equals(expected.out.toBuffer())).toBe(true);
            }
          }),
          { numRuns: 150 },
        );
      });
    }
  }

  it('re-encodes non-minimal lengths and reads any non-zero isNull byte as null', () => {
    // map entry: key "a" (length as 2-byte varint 0x81 0x00), ns "", 1 element: uk "x", isNull byte 7
    const bytes = Buffer.from([0x81, 0x00, 0x61, 0x00, 0x01, 0x01, 0x78, 0x07]);
    const out = new ByteWriter(16);
    expect(writeCanonicalEntries('map', bytes, 1, out, false)).toBe(1);
    expect(out.toBuffer()).toEqual(Buffer.from([0x01, 0x61, 0x00, 0x01, 0x01, 0x78, 0x01]));
  });

  it('throws TRUNCATED on a cut section', () => {
    const s = encode('value', [[Buffer.from('k'), Buffer.from(''), Buffer.from('value')]]);
    const cut = s.out.toBuffer().subarray(0, 5);
    expect(() => writeCanonicalEntries('value', cut, 1, new ByteWriter(16), false)).toThrow(
      expect.objectContaining({ code: 'TRUNCATED' }),
    );
  });
});

describe('fieldWriter', () => {
  const cases: Array<[string, Serializer<unknown>, fc.Arbitrary<unknown>]> = [
    [
      'string',
      stringSerializer as Serializer<unknown>,
      fc.oneof(
        fc.string(),
        fc.string({ unit: 'binary' }),
        fc.string({ minLength: 120, maxLength: 300 }),
        fc.constant('\ud800x'),
      ),
    ],
    ['float64', float64Serializer as Serializer<unknown>, fc.oneof(fc.double(), fc.constant(-0), fc.constant(NaN))],
    [
      'int32',
      int32Serializer as Serializer<unknown>,
      fc.oneof(fc.integer({ min: -0x8000_0000, max: 0x7fff_ffff }), fc.constant(-0)),
    ],
    ['bytes', bytesSerializer as Serializer<unknown>, fc.uint8Array({ maxLength: 300 })],
  ];
  for (const [name, ser, arb] of cases) {
    it(`writes bytes(serialize(v)) for ${name}`, () => {
      const write = fieldWriter(ser);
      fc.assert(
        fc.property(arb, (v) => {
          const fast = new ByteWriter(4);
          write(fast, v);
          const slow = new ByteWriter(4).bytes(ser.serialize(v));
          expect(fast.toBuffer().equals(slow.toBuffer())).toBe(true);
        }),
        { numRuns: 300 },
      );
    });
  }

  it('still rejects values of the wrong type through the serializer', () => {
    expect(() => fieldWriter(stringSerializer as Serializer<unknown>)(new ByteWriter(), 5)).toThrow(
      expect.objectContaining({ code: 'SERIALIZATION_FAILED' }),
    );
    expect(() => fieldWriter(int32Serializer as Serializer<unknown>)(new ByteWriter(), 1.5)).toThrow(
      expect.objectContaining({ code: 'SERIALIZATION_FAILED' }),
    );
    expect(() => fieldWriter(float64Serializer as Serializer<unknown>)(new ByteWriter(), '1')).toThrow(
      expect.objectContaining({ code: 'SERIALIZATION_FAILED' }),
    );
  });
});
