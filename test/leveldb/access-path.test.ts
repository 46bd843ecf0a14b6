import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { LevelDbKeyedStateBackend } from '../../backends/leveldb/backend.js';
import {
  decodeRowKey,
  encodeRowKey,
  isCountRowStateId,
  lengthPrefixed,
  lengthPrefixedUtf8Capacity,
  lengthPrefixedUtf8Into,
} from '../../backends/leveldb/row-keys.js';
import { ValueCodec } from '../../backends/leveldb/value-codec.js';
import { KeyGroupRange, keyGroupForKey } from '../../src/keygroups/key-groups.js';
import {
  float64Serializer,
  int32Serializer,
  msgpackSerializer,
  stringSerializer,
} from '../../src/serializers/builtins.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import { listState, mapState, valueState } from '../../src/state/descriptors.js';
import { params } from '../heap/support.js';

/**
 * The allocation-free access path: string keys written char by char into a reused buffer,
 * reused exact-length row-key views, in-place fixed-width values, and blind map puts resolved
 * in key order. Each must give the same bytes and answers as the generic path.
 */

// The backend creates its working directory; each backend instance takes a fresh subdirectory.
const root = join(tmpdir(), `streamstate-leveldb-access-${process.pid}`);
afterAll(() => rm(root, { recursive: true, force: true }));

const MAX_P = 32;

async function create<K>(
  keySerializer: Serializer<K>,
  writeBufferBytes?: number,
): Promise<LevelDbKeyedStateBackend<K>> {
  return LevelDbKeyedStateBackend.create(
    params<K>({ maxParallelism: MAX_P, keyGroupRange: new KeyGroupRange(0, MAX_P - 1), keySerializer }),
    {
      workingDir: root,
      ...(writeBufferBytes !== undefined ? { writeBufferBytes } : {}),
    },
  );
}

/** Every non-count row in LevelDB, as hex row key → hex value. */
async function rows<K>(kb: LevelDbKeyedStateBackend<K>): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const [k, v] of kb.db.iterator()) {
    if (k.length >= 4 && !isCountRowStateId(decodeRowKey(k).stateId)) out.set(k.toString('hex'), v.toString('hex'));
  }
  return out;
}

const header0 = (bytes: Uint8Array): string => Buffer.concat([Buffer.from([0]), bytes]).toString('hex');

describe('leveldb string keys written in place', () => {
  it('lengthPrefixedUtf8Into equals lengthPrefixed(UTF-8) for any string, ASCII or not, short or long', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 300 }), fc.string({ unit: 'binary', maxLength: 200 })), (s) => {
        const buf = Buffer.alloc(lengthPrefixedUtf8Capacity(s), 0xee);
        const n = lengthPrefixedUtf8Into(buf, s);
        expect(buf.subarray(0, n).equals(lengthPrefixed(Buffer.from(s, 'utf8')))).toBe(true);
      }),
    );
    // 100 chars but 200 UTF-8 bytes: the varint needs two bytes where the char count needs one.
    const s = 'é'.repeat(100);
    const buf = Buffer.alloc(lengthPrefixedUtf8Capacity(s));
    expect(buf.subarray(0, lengthPrefixedUtf8Into(buf, s)).equals(lengthPrefixed(Buffer.from(s)))).toBe(true);
  });

  it('rows of ASCII, non-ASCII, long (> 128-byte row key) and growing keys hold the generic bytes and read back', async () => {
    const kb = await create(stringSerializer);
    const v = kb.getState(valueState<number>('v', { serializer: float64Serializer }));
    const keys = ['a', 'key-1', 'é', 'ключ', '😀x', 'k'.repeat(70), 'x'.repeat(200), 'é'.repeat(90), 'b', ''];
    for (const [i, k] of keys.entries()) {
      kb.setCurrentKey(k);
      v.update(i + 0.5);
    }
    // From the write buffer, then from LevelDB (getSync on the reused views).
    const check = (): void => {
      for (const [i, k] of keys.entries()) {
        kb.setCurrentKey(k);
        expect(v.value()).toBe(i + 0.5);
      }
    };
    check();
    await kb.flush();
    check();
    const id = kb.catalog.get('v')?.stateId as number;
    const expected = new Map<string, string>();
    for (const [i, k] of keys.entries()) {
      const kg = keyGroupForKey(k, stringSerializer, MAX_P);
      expected.set(
        encodeRowKey(kg, id, Buffer.from(k), new Uint8Array(0)).toString('hex'),
        header0(float64Serializer.serialize(i + 0.5)),
      );
    }
    expect(await rows(kb)).toEqual(expected);
    await kb.close();
  });

  it('keys switching between strings, numbers and objects (a generic key serializer) keep their own rows', async () => {
    const ser = msgpackSerializer<unknown>();
    const kb = await create(ser, 256);
    const v = kb.getState(valueState<number>('v', { serializer: int32Serializer }));
    const keys: unknown[] = ['s', { id: 's' }, 7, 's', { id: 7 }, 'é', 7, { id: 's' }];
    const model = new Map<string, number>();
    for (const [i, k] of keys.entries()) {
      kb.setCurrentKey(k);
      const id = JSON.stringify(k);
      expect(v.value()).toBe(model.get(id) ?? null);
      v.update(i);
      model.set(id, i);
    }
    await kb.flush();
    const sid = kb.catalog.get('v')?.stateId as number;
    const expected = new Map<string, string>();
    for (const k of keys) {
      const bytes = ser.serialize(k);
      expected.set(
        encodeRowKey(keyGroupForKey(k, ser, MAX_P), sid, bytes, new Uint8Array(0)).toString('hex'),
        header0(int32Serializer.serialize(model.get(JSON.stringify(k)) as number)),
      );
    }
    expect(await rows(kb)).toEqual(expected);
    await kb.close();
  });

  it('namespace switches and several handles on one key rebuild their own row keys', async () => {
    const kb = await create(stringSerializer, 128);
    const v = kb.getState(
      valueState<number, string>('v', { serializer: int32Serializer, namespace: stringSerializer }),
    );
    const l = kb.getState(
      listState<number, string>('l', { serializer: float64Serializer, namespace: stringSerializer }),
    );
    const values = new Map<string, number>();
    const lists = new Map<string, number[]>();
    let n = 0;
    for (const k of ['a', 'bb', 'a', 'ccc']) {
      kb.setCurrentKey(k);
      for (const ns of ['w1', 'w22', 'w1', '']) {
        const lns = ns === 'w1' ? 'w22' : 'w1';
        v.setCurrentNamespace(ns);
        l.setCurrentNamespace(lns);
        expect(v.value()).toBe(values.get(`${k}/${ns}`) ?? null);
        v.update(++n);
        l.add(n);
        values.set(`${k}/${ns}`, n);
        lists.set(`${k}/${lns}`, [...(lists.get(`${k}/${lns}`) ?? []), n]);
      }
    }
    await kb.flush();
    for (const k of ['a', 'bb', 'ccc']) {
      kb.setCurrentKey(k);
      for (const ns of ['w1', 'w22', '']) {
        v.setCurrentNamespace(ns);
        l.setCurrentNamespace(ns);
        expect(v.value()).toBe(values.get(`${k}/${ns}`) ?? null);
        expect(l.get()).toEqual(lists.get(`${k}/${ns}`) ?? null);
      }
    }
    await kb.close();
  });
});

describe('leveldb fixed-width values in place', () => {
  const codecs: [string, Serializer<number>, fc.Arbitrary<number>][] = [
    ['float64', float64Serializer, fc.double()],
    ['int32', int32Serializer, fc.integer({ min: -0x8000_0000, max: 0x7fff_ffff })],
  ];
  for (const [name, ser, arb] of codecs) {
    it(`${name}: rows and lists are byte for byte the generic encoding, at any generation`, () => {
      fc.assert(
        fc.property(
          fc.integer({ min: 0, max: 127 }),
          arb,
          fc.array(arb, { maxLength: 5 }),
          fc.array(arb, { minLength: 1, maxLength: 5 }),
          (gen, x, a, b) => {
            const codec = new ValueCodec(ser, gen, [], 'test');
            const row = codec.encode(x);
            expect(row.equals(Buffer.concat([Buffer.from([gen << 1]), ser.serialize(x)]))).toBe(true);
            expect(Object.is(codec.decode(row), ser.deserialize(ser.serialize(x)))).toBe(true);
            const generic = (xs: number[]): Buffer =>
              Buffer.concat([
                Buffer.from([gen << 1]),
                ...xs.flatMap((e) => [Buffer.from([ser.serialize(e).length]), ser.serialize(e)]),
              ]);
            const list = codec.appendToList(a.length === 0 ? undefined : codec.encodeList(a), b);
            expect(list.equals(generic([...a, ...b]))).toBe(true);
            expect(codec.decodeList(list).map((e) => Object.is(e, ser.deserialize(ser.serialize(e))))).toEqual(
              [...a, ...b].map(() => true),
            );
          },
        ),
      );
    });
  }

  it('values the serializer rejects, and rows of another length or generation, take the generic path and its errors', () => {
    const i32 = new ValueCodec(int32Serializer, 1, [float64Serializer, undefined], 'test');
    expect(() => i32.encode(1.5)).toThrow(/int32/);
    expect(() => i32.encodeList([1, 2 ** 40])).toThrow(/int32/);
    // A generation-0 row read with that generation's reader (float64, 8 bytes).
    expect(i32.decode(Buffer.concat([Buffer.from([0]), float64Serializer.serialize(2.5)]))).toBe(2.5);
    expect(() => i32.decode(Buffer.from([2, 0, 0]))).toThrow();
    const list = i32.appendToList(Buffer.concat([Buffer.from([0, 8]), float64Serializer.serialize(4)]), [3]);
    expect(i32.decodeList(list)).toEqual([4, 3]);
    expect(list.equals(i32.encodeList([4, 3]))).toBe(true);
  });
});

describe('leveldb map counts with blind puts resolved in key order', () => {
  it('counts stay exact over many maps whose put order is not their key order, with a tiny write buffer', async () => {
    const kb = await create(stringSerializer, 512);
    const m = kb.getState(
      mapState<number, number>('m', { keySerializer: int32Serializer, valueSerializer: int32Serializer }),
    );
    const keys = Array.from({ length: 60 }, (_, i) => `k${(i * 37) % 60}`);
    // Existing entries in LevelDB, so later puts are blind overwrites or blind new entries.
    for (const k of keys) {
      kb.setCurrentKey(k);
      for (let u = 0; u < 3; u++) m.put(u, u);
    }
    await kb.flush();
    const model = new Map<string, Set<number>>(keys.map((k) => [k, new Set([0, 1, 2])]));
    for (let round = 0; round < 4; round++) {
      for (const k of [...keys].reverse()) {
        kb.setCurrentKey(k);
        const uk = (round * 7 + k.length) % 6;
        m.put(uk, round);
        model.get(k)?.add(uk);
        if (round === 2) {
          m.remove(1);
          model.get(k)?.delete(1);
        }
        expect(m.isEmpty()).toBe(false);
      }
      if (round % 2 === 1) await kb.flush();
    }
    await kb.store.settleCounts(); // what a snapshot point does: every blind put counted
    const counts = new Map<string, number>();
    for await (const [k, v] of kb.db.iterator()) {
      const row = decodeRowKey(k);
      if (isCountRowStateId(row.stateId)) counts.set(row.key.subarray(0).toString(), v.readUInt32BE(0));
    }
    expect(counts).toEqual(new Map([...model].map(([k, s]) => [k, s.size])));
    await kb.close();
  });
});
