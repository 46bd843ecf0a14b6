import type { KeyedStateBackend } from '../../backend/contract.js';
import { int32Serializer, stringSerializer } from '../../serializers/builtins.js';
import { aggregatingState, listState, mapState, reducingState, valueState } from '../../state/descriptors.js';

/** One descriptor of every keyed state kind, for tests that check a behaviour across all kinds. */
const sum = {
  createAccumulator: () => 0,
  add: (v: number, a: number) => a + v,
  getResult: (a: number) => a,
  merge: (a: number, b: number) => a + b,
};
export const EVERY_KIND = {
  v: valueState<string>('v', { serializer: stringSerializer }),
  l: listState<number>('l', { serializer: int32Serializer }),
  m: mapState<string, number>('m', { keySerializer: stringSerializer, valueSerializer: int32Serializer }),
  r: reducingState<number>('r', (a, b) => a + b, { serializer: int32Serializer }),
  a: aggregatingState<number, number, number>('a', sum, { accumulatorSerializer: int32Serializer }),
};

/**
 * Writes keys k`from`..k`to-1` (k0..k4 in namespace '', k5..k9 in 'w'): every kind once per key
 * (value `v<i>`, list [i], map {x: i, y: i}, reducing and aggregating sums of i).
 */
export function writeEveryKind(b: KeyedStateBackend<string>, from = 0, to = 10): void {
  const D = EVERY_KIND;
  for (let i = from; i < to; i++) {
    b.setCurrentKey(`k${i}`);
    const ns = i < 5 ? '' : 'w';
    for (const s of [b.getState(D.v), b.getState(D.l), b.getState(D.m), b.getState(D.r), b.getState(D.a)])
      s.setCurrentNamespace(ns);
    b.getState(D.v).update(`v${i}`);
    b.getState(D.l).add(i);
    b.getState(D.m).put('x', i);
    b.getState(D.m).put('y', i);
    b.getState(D.r).add(i);
    b.getState(D.a).add(i);
  }
}
