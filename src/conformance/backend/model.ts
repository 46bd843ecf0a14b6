import type { Arbitrary } from 'fast-check';
import type { FastCheck } from './fast-check.js';
import { expect } from 'vitest';
import type { KeyedStateBackend } from '../../backend/contract.js';
import { keyGroupForKey, type KeyGroupRange } from '../../keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../serializers/builtins.js';
import { listState, mapState, reducingState, valueState } from '../../state/descriptors.js';
import type { ListState, MapState, ReducingState, ValueState } from '../../state/types.js';
import { collect, type BackendHarness } from './harness.js';

/**
 * A plain-Map model of keyed state, and random operation sequences to run against it and a real
 * backend side by side. Slots are "key|namespace"; an absent slot means "no entry".
 */

export const MODEL_MAX_P = 128;
export const MODEL_KEYS = Array.from({ length: 20 }, (_, i) => `k${i}`);
export const MODEL_NAMESPACES = ['', 'w1', 'w2'] as const;
const MAP_KEYS = ['a', 'b', 'c', 'd'] as const;

export type Op =
  | { readonly t: 'key'; readonly key: string }
  | { readonly t: 'ns'; readonly ns: string }
  | { readonly t: 'vUpdate'; readonly v: number }
  | { readonly t: 'vClear' }
  | { readonly t: 'lAdd'; readonly v: number }
  | { readonly t: 'lAddAll'; readonly vs: readonly number[] }
  | { readonly t: 'lUpdate'; readonly vs: readonly number[] }
  | { readonly t: 'lClear' }
  | { readonly t: 'mPut'; readonly k: string; readonly v: number }
  | { readonly t: 'mRemove'; readonly k: string }
  | { readonly t: 'mClear' }
  | { readonly t: 'rAdd'; readonly v: number }
  | { readonly t: 'snapshotRestore' }
  | { readonly t: 'rescale' };

/** Random operations; `rescaling` false leaves the rescale step out (a backend without the capability). */
export function opArbitrary(fc: FastCheck, rescaling: boolean): Arbitrary<Op> {
  const int = fc.integer({ min: -1000, max: 1000 });
  const ints = fc.array(int, { maxLength: 3 });
  const mapKey = fc.constantFrom(...MAP_KEYS);

  const ops: { weight: number; arbitrary: Arbitrary<Op> }[] = [
    { weight: 6, arbitrary: fc.constantFrom(...MODEL_KEYS).map((key): Op => ({ t: 'key', key })) },
    { weight: 2, arbitrary: fc.constantFrom(...MODEL_NAMESPACES).map((ns): Op => ({ t: 'ns', ns })) },
    { weight: 3, arbitrary: int.map((v): Op => ({ t: 'vUpdate', v })) },
    { weight: 1, arbitrary: fc.constant<Op>({ t: 'vClear' }) },
    { weight: 2, arbitrary: int.map((v): Op => ({ t: 'lAdd', v })) },
    { weight: 2, arbitrary: ints.map((vs): Op => ({ t: 'lAddAll', vs })) },
    { weight: 1, arbitrary: ints.map((vs): Op => ({ t: 'lUpdate', vs })) },
    { weight: 1, arbitrary: fc.constant<Op>({ t: 'lClear' }) },
    { weight: 3, arbitrary: fc.tuple(mapKey, int).map(([k, v]): Op => ({ t: 'mPut', k, v })) },
    { weight: 2, arbitrary: mapKey.map((k): Op => ({ t: 'mRemove', k })) },
    { weight: 1, arbitrary: fc.constant<Op>({ t: 'mClear' }) },
    { weight: 2, arbitrary: int.map((v): Op => ({ t: 'rAdd', v })) },
    { weight: 1, arbitrary: fc.constant<Op>({ t: 'snapshotRestore' }) },
  ];
  if (rescaling) ops.push({ weight: 1, arbitrary: fc.constant<Op>({ t: 'rescale' }) });
  return fc.oneof(...ops);
}

const slot = (key: string, ns: string): string => `${key}|${ns}`;

/** The expected contents. */
export class StateModel {
  readonly value = new Map<string, number>();
  readonly list = new Map<string, number[]>();
  readonly map = new Map<string, Map<string, number>>();
  readonly reducing = new Map<string, number>();
  key: string = MODEL_KEYS[0];
  ns: string = '';

  apply(op: Op): void {
    const s = slot(this.key, this.ns);
    switch (op.t) {
      case 'key':
        this.key = op.key;
        break;
      case 'ns':
        this.ns = op.ns;
        break;
      case 'vUpdate':
        this.value.set(s, op.v);
        break;
      case 'vClear':
        this.value.delete(s);
        break;
      case 'lAdd':
        this.list.set(s, [...(this.list.get(s) ?? []), op.v]);
        break;
      case 'lAddAll':
        if (op.vs.length > 0) this.list.set(s, [...(this.list.get(s) ?? []), ...op.vs]);
        break;
      case 'lUpdate':
        if (op.vs.length > 0) this.list.set(s, [...op.vs]);
        else this.list.delete(s);
        break;
      case 'lClear':
        this.list.delete(s);
        break;
      case 'mPut': {
        const m = new Map(this.map.get(s) ?? []);
        m.set(op.k, op.v);
        this.map.set(s, m);
        break;
      }
      case 'mRemove': {
        const m = new Map(this.map.get(s) ?? []);
        m.delete(op.k);
        if (m.size === 0) this.map.delete(s);
        else this.map.set(s, m);
        break;
      }
      case 'mClear':
        this.map.delete(s);
        break;
      case 'rAdd':
        this.reducing.set(s, (this.reducing.get(s) ?? 0) + op.v);
        break;
      case 'snapshotRestore':
      case 'rescale':
        break;
    }
  }

  /** Entries: a value, a list, or one map entry each (matching KeyedStateBackend.numEntries). */
  numEntries(inRange: (key: string) => boolean): number {
    let n = 0;
    for (const tbl of [this.value, this.list, this.reducing])
      for (const s of tbl.keys()) if (inRange(s.split('|')[0])) n++;
    for (const [s, m] of this.map) if (inRange(s.split('|')[0])) n += m.size;
    return n;
  }
}

/** The four states the model covers, registered on one backend. */
export class ModelStates {
  readonly v: ValueState<number>;
  readonly l: ListState<number>;
  readonly m: MapState<string, number>;
  readonly r: ReducingState<number>;

  constructor(readonly backend: KeyedStateBackend<string>) {
    this.v = backend.getState(valueState<number>('v', { serializer: int32Serializer }));
    this.l = backend.getState(listState<number>('l', { serializer: int32Serializer }));
    this.m = backend.getState(
      mapState<string, number>('m', { keySerializer: stringSerializer, valueSerializer: int32Serializer }),
    );
    this.r = backend.getState(reducingState<number>('r', (a, b) => a + b, { serializer: int32Serializer }));
  }

  select(key: string, ns: string): void {
    this.backend.setCurrentKey(key);
    for (const s of [this.v, this.l, this.m, this.r]) s.setCurrentNamespace(ns);
  }

  apply(op: Op): void {
    switch (op.t) {
      case 'key':
        this.backend.setCurrentKey(op.key);
        break;
      case 'ns':
        for (const s of [this.v, this.l, this.m, this.r]) s.setCurrentNamespace(op.ns);
        break;
      case 'vUpdate':
        this.v.update(op.v);
        break;
      case 'vClear':
        this.v.clear();
        break;
      case 'lAdd':
        this.l.add(op.v);
        break;
      case 'lAddAll':
        this.l.addAll(op.vs);
        break;
      case 'lUpdate':
        this.l.update(op.vs);
        break;
      case 'lClear':
        this.l.clear();
        break;
      case 'mPut':
        this.m.put(op.k, op.v);
        break;
      case 'mRemove':
        this.m.remove(op.k);
        break;
      case 'mClear':
        this.m.clear();
        break;
      case 'rAdd':
        this.r.add(op.v);
        break;
      case 'snapshotRestore':
      case 'rescale':
        break;
    }
  }

  /** Compares what the current key and namespace read with the model. */
  async expectCurrent(model: StateModel): Promise<void> {
    const s = slot(model.key, model.ns);
    expect(this.v.value(), `value at ${s}`).toBe(model.value.get(s) ?? null);
    expect(this.l.get(), `list at ${s}`).toEqual(model.list.get(s) ?? null);
    expect(this.r.get(), `reducing at ${s}`).toBe(model.reducing.get(s) ?? null);
    const entries = (await collect(this.m.entries())).sort((a, b) => (a[0] < b[0] ? -1 : 1));
    expect(entries, `map at ${s}`).toEqual(
      [...(model.map.get(s) ?? new Map<string, number>())].sort((a, b) => (a[0] < b[0] ? -1 : 1)),
    );
    expect(this.m.isEmpty()).toBe(!model.map.has(s));
  }

  /** Compares the whole backend (its key groups) with the model: key sets per state, then every slot. */
  async expectAll(model: StateModel, range: KeyGroupRange): Promise<void> {
    const inRange = (key: string): boolean => range.contains(keyGroupForKey(key, stringSerializer, MODEL_MAX_P));
    const tables: [string, Map<string, unknown>][] = [
      ['v', model.value],
      ['l', model.list],
      ['m', model.map],
      ['r', model.reducing],
    ];
    for (const [name, table] of tables) {
      const actual = (await collect(this.backend.getKeysAndNamespaces<string>(name)))
        .map(([k, ns]) => slot(k, ns))
        .sort();
      const expected = [...table.keys()].filter((s) => inRange(s.split('|')[0])).sort();
      expect(actual, `keys and namespaces of ${name}`).toEqual(expected);
    }
    const saved = { key: model.key, ns: model.ns };
    for (const key of MODEL_KEYS.filter(inRange)) {
      for (const ns of MODEL_NAMESPACES) {
        this.select(key, ns);
        model.key = key;
        model.ns = ns;
        await this.expectCurrent(model);
      }
    }
    model.key = saved.key;
    model.ns = saved.ns;
    expect(await this.backend.numEntries()).toBe(model.numEntries(inRange));
  }
}

/** Runs `ops` against a fresh backend (parallelism 1) and the model, checking after every step. */
export async function runModel(h: BackendHarness, ops: readonly Op[]): Promise<void> {
  const model = new StateModel();
  let backend = await h.createKeyed({ keySerializer: stringSerializer, maxParallelism: MODEL_MAX_P });
  let states = new ModelStates(backend);
  states.select(model.key, model.ns);
  for (const op of ops) {
    if (op.t === 'snapshotRestore') {
      backend = await h.snapshotAndRestore(backend);
      states = new ModelStates(backend);
      states.select(model.key, model.ns);
    } else if (op.t === 'rescale') {
      const pointer = await h.checkpoint([backend]);
      await h.close(backend);
      const halves = await h.restoreKeyed(pointer, { keySerializer: stringSerializer, parallelism: 2 });
      for (const half of halves) await new ModelStates(half).expectAll(model, half.keyGroupRange);
      const back = await h.checkpoint(halves);
      for (const half of halves) await h.close(half);
      [backend] = await h.restoreKeyed(back, { keySerializer: stringSerializer, parallelism: 1 });
      states = new ModelStates(backend);
      states.select(model.key, model.ns);
    } else {
      model.apply(op);
      states.apply(op);
    }
    await states.expectCurrent(model);
  }
  await states.expectAll(model, backend.keyGroupRange);
}
