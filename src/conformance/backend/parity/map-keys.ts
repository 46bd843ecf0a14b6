import { describe, expect } from 'vitest';
import type { KeyedStateBackend } from '../../../backend/contract.js';
import { defaultSerializer, float64Serializer, stringSerializer } from '../../../serializers/builtins.js';
import type { Serializer } from '../../../serializers/serializer.js';
import { mapState, valueState, type MapStateDescriptor } from '../../../state/descriptors.js';
import { loadFastCheck } from '../fast-check.js';
import { collect } from '../harness.js';
import { parityIt, type ParityContext } from './parity-context.js';

/**
 * Map keys (and record keys and namespaces) are equal exactly when the serializer writes the same
 * bytes for them, on every backend (docs/SEMANTICS.md, "Map keys"). A key read back (entries(),
 * getKeys()) is the value its bytes stand for. JS equality disagrees with that for strings with
 * lone surrogates (UTF-8 writes U+FFFD for each), for -0 under float64 (other bytes than 0), and
 * for objects whose fields come in another order (other bytes, so another key).
 */

interface KeyDomain<T> {
  readonly name: string;
  readonly serializer: Serializer<T>;
  /** The keys generated operations pick from. */
  readonly keys: readonly T[];
}

const DOMAINS: readonly KeyDomain<unknown>[] = [
  {
    name: 'string (UTF-8)',
    serializer: stringSerializer as Serializer<unknown>,
    keys: ['\uD800', '\uDBFF', '\uDC00', 'a\uD800', 'a\uDFFF', '\uFFFD', 'a\uFFFD', 'a', '', '\u00E9', 'e\u0301'],
  },
  {
    name: 'float64',
    serializer: float64Serializer as Serializer<unknown>,
    keys: [0, -0, Number.NaN, 1, -1, Infinity, -Infinity, 0.1, 5e-324],
  },
  {
    name: 'default (msgpack)',
    serializer: defaultSerializer<unknown>(),
    keys: [{ a: 1, b: 2 }, { b: 2, a: 1 }, [1, 2], [2, 1], 'x', 1, '1', { a: [1] }],
  },
];

type Op =
  | { readonly op: 'put'; readonly key: unknown; readonly value: number }
  | { readonly op: 'remove'; readonly key: unknown };

const hex = (s: Serializer<unknown>, v: unknown): string => Buffer.from(s.serialize(v)).toString('hex');

export function mapKeyTests(p: ParityContext): void {
  describe('map keys: the key serializer’s bytes decide equality', () => {
    for (const domain of DOMAINS) {
      parityIt(
        p,
        'map-keys.bytes-decide',
        `${domain.name}: MapState agrees with a model keyed by serialized bytes, before and after restore`,
        async () => {
          const s = domain.serializer;
          const d = mapState<unknown, number>('m', {
            keySerializer: s,
            valueSerializer: defaultSerializer<number>(),
          }) as MapStateDescriptor<unknown, number, string>;
          let b: KeyedStateBackend<string> = await p.stringKeyed();
          let m = b.getState(d);
          const models: Array<[string, Map<string, number>]> = [];
          let run = 0;
          const check = async (key: string, model: Map<string, number>): Promise<void> => {
            b.setCurrentKey(key);
            const entries = await collect(m.entries());
            const got = entries.map(([k, v]) => [hex(s, k), v] as const).sort((x, y) => (x[0] < y[0] ? -1 : 1));
            const want = [...model].sort((x, y) => (x[0] < y[0] ? -1 : 1));
            expect(got).toEqual(want);
            // A key read back is the value its bytes stand for.
            for (const [k] of entries) expect(k).toEqual(s.deserialize(s.serialize(k)));
          };
          const fc = await loadFastCheck();
          const keys = fc.constantFrom<unknown>(...domain.keys);
          await fc.assert(
            fc.asyncProperty(
              fc.array(
                fc.oneof(
                  fc.record({
                    op: fc.constant('put' as const),
                    key: keys,
                    value: fc.integer({ min: 0, max: 99 }),
                  }),
                  fc.record({ op: fc.constant('remove' as const), key: keys }),
                ),
                { maxLength: 25 },
              ),
              async (ops: Op[]) => {
                const key = `run-${run++}`;
                b.setCurrentKey(key);
                const model = new Map<string, number>();
                for (const o of ops) {
                  const h = hex(s, o.key);
                  if (o.op === 'put') {
                    m.put(o.key, o.value);
                    model.set(h, o.value);
                  } else {
                    m.remove(o.key);
                    model.delete(h);
                  }
                }
                for (const o of ops) {
                  expect(m.contains(o.key)).toBe(model.has(hex(s, o.key)));
                  expect(m.get(o.key)).toBe(model.get(hex(s, o.key)) ?? null);
                }
                await check(key, model);
                models.push([key, model]);
              },
            ),
            { numRuns: 25 },
          );
          b = await p.h.snapshotAndRestore(b);
          m = b.getState(d);
          for (const [key, model] of models) await check(key, model);
        },
      );
    }

    parityIt(p, 'map-keys.bytes-decide', 'record keys: strings with the same UTF-8 bytes are one key', async () => {
      const b = await p.stringKeyed();
      const v = b.getState(valueState<string>('v', { serializer: stringSerializer }));
      b.setCurrentKey('\uD800');
      v.update('first');
      b.setCurrentKey('\uDBFF'); // also written as EF BF BD
      expect(v.value()).toBe('first');
      expect(await collect(b.getKeys('v', ''))).toEqual(['\uFFFD']);
      expect(await b.numEntries()).toBe(1);
    });

    parityIt(
      p,
      'map-keys.bytes-decide',
      'broadcast state follows the same rule, before and after restore',
      async () => {
        const o = await p.h.createOperator();
        const strings = o.getBroadcastState(mapState<string, number>('strings', { keySerializer: stringSerializer }));
        const numbers = o.getBroadcastState(
          mapState<number, string>('numbers', { keySerializer: float64Serializer, valueSerializer: stringSerializer }),
        );
        strings.put('\uD800', 1);
        strings.put('\uDBFF', 2);
        numbers.put(0, 'zero');
        numbers.put(-0, 'minus zero');
        const expectRule = (s: typeof strings, n: typeof numbers): void => {
          expect([...s.entries()]).toEqual([['\uFFFD', 2]]);
          expect(s.get('\uFFFD')).toBe(2);
          expect(n.size).toBe(2);
          expect([n.get(0), n.get(-0)]).toEqual(['zero', 'minus zero']);
          expect(Object.is([...n.entries()].find(([, v]) => v === 'minus zero')?.[0], -0)).toBe(true);
        };
        expectRule(strings, numbers);
        const r = await p.h.snapshotAndRestoreOperator(o);
        expectRule(
          r.getBroadcastState(mapState<string, number>('strings', { keySerializer: stringSerializer })),
          r.getBroadcastState(
            mapState<number, string>('numbers', {
              keySerializer: float64Serializer,
              valueSerializer: stringSerializer,
            }),
          ),
        );
      },
      undefined,
      'operatorState',
    );

    parityIt(p, 'map-keys.bytes-decide', 'namespaces: 0 and -0 under float64 are two namespaces', async () => {
      const b = await p.stringKeyed();
      const v = b.getState(
        valueState<string, number>('v', { serializer: stringSerializer, namespace: float64Serializer }),
      );
      b.setCurrentKey('k');
      v.setCurrentNamespace(0);
      v.update('zero');
      v.setCurrentNamespace(-0);
      expect(v.value()).toBeNull();
      v.update('minus zero');
      const pairs = await collect(b.getKeysAndNamespaces<number>('v'));
      expect(pairs.map(([, ns]) => (Object.is(ns, -0) ? '-0' : String(ns))).sort()).toEqual(['-0', '0']);
    });
  });
}
