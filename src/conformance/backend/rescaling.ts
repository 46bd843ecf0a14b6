import { describe, expect, it } from 'vitest';
import type { KeyedStateBackend } from '../../backend/contract.js';
import { keyGroupRangeForSubtask, subtaskForKeyGroup } from '../../keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../serializers/builtins.js';
import { listState, mapState, valueState } from '../../state/descriptors.js';
import { collect, type MakeBackend } from './harness.js';
import { stringKeysByKeyGroup } from './keys.js';
import { useHarness } from './context.js';
import type { ResolvedSupports } from './supports.js';

const MAX_P = 128;
const KEYS_PER_GROUP = 2;

const vd = valueState<string>('v', { serializer: stringSerializer });
const ld = listState<number>('l', { serializer: int32Serializer });
const md = mapState<string, number>('m', { keySerializer: stringSerializer, valueSerializer: int32Serializer });
/** One state per key group, written only for that group's first key (distinct names, as in Flink's test). */
const perGroup = (kg: number) => valueState<number>(`kg-${kg}`, { serializer: int32Serializer });

export const RESCALING_CASES: readonly (readonly [number, number])[] = [
  [4, 2],
  [2, 4],
  [2, 2],
  [15, 77],
  [77, 15],
];

/** Every source subtask writes state for each key group it owns. */
function writeSource(b: KeyedStateBackend<string>, keys: Map<number, string[]>, sourceP: number): void {
  const v = b.getState(vd);
  const l = b.getState(ld);
  const m = b.getState(md);
  const timers = b.getTimerQueue('timers');
  for (const kg of b.keyGroupRange) {
    const owner = subtaskForKeyGroup(MAX_P, sourceP, kg);
    for (const [i, key] of (keys.get(kg) ?? []).entries()) {
      b.setCurrentKey(key);
      expect(b.currentKeyGroup).toBe(kg);
      v.update(`v-${key}`);
      l.addAll([kg, owner]);
      m.put(`kg${kg}`, owner);
      timers.add({ timestamp: kg * 10 + i, key, namespace: '' });
      if (i === 0) b.getState(perGroup(kg)).update(kg);
    }
  }
}

/** A target reads exactly the values of its key groups, and nothing else. */
async function checkTarget(
  b: KeyedStateBackend<string>,
  keys: Map<number, string[]>,
  sourceP: number,
  targetP: number,
  index: number,
): Promise<void> {
  const range = keyGroupRangeForSubtask(MAX_P, targetP, index);
  expect(b.keyGroupRange.start).toBe(range.start);
  expect(b.keyGroupRange.end).toBe(range.end);
  const v = b.getState(vd);
  const l = b.getState(ld);
  const m = b.getState(md);
  const timers = b.getTimerQueue('timers');
  const expectedKeys: string[] = [];
  const expectedTimers: string[] = [];
  for (const kg of range) {
    const owner = subtaskForKeyGroup(MAX_P, sourceP, kg);
    for (const [i, key] of (keys.get(kg) ?? []).entries()) {
      expectedKeys.push(key);
      expectedTimers.push(`${kg * 10 + i}:${key}`);
      b.setCurrentKey(key);
      expect(v.value()).toBe(`v-${key}`);
      expect(l.get()).toEqual([kg, owner]);
      expect(await collect(m.entries())).toEqual([[`kg${kg}`, owner]]);
      const own = b.getState(perGroup(kg));
      expect(own.value()).toBe(i === 0 ? kg : null);
      if (i === 0) expect(await collect(b.getKeys(`kg-${kg}`, ''))).toEqual([key]);
    }
  }
  for (const name of ['v', 'l', 'm']) {
    const pairs = await collect(b.getKeysAndNamespaces<string>(name));
    expect(pairs.map(([k, ns]) => `${k}|${ns}`).sort()).toEqual(expectedKeys.map((k) => `${k}|`).sort());
  }
  expect([...timers].map((t) => `${t.timestamp}:${t.key}`).sort()).toEqual(expectedTimers.sort());
  // value + list + one map entry per key, plus the per-group state for one key per group
  expect(await b.numEntries()).toBe(range.size * (3 * KEYS_PER_GROUP + 1));
}

/**
 * Rescaling matrix (reference §10 item 37 with timers, lists and maps added): sources at
 * parallelism P write; the snapshot is redistributed with assignKeyedState to parallelism Q.
 */
export function describeRescalingConformance(
  name: string,
  makeBackend: MakeBackend,
  supports: ResolvedSupports,
  cases: readonly (readonly [number, number])[] = RESCALING_CASES,
): void {
  describe.skipIf(!supports.rescaling)(`${name}: rescaling (maxParallelism ${MAX_P})`, () => {
    const ctx = useHarness(makeBackend, supports);
    const keys = stringKeysByKeyGroup(MAX_P, KEYS_PER_GROUP);

    for (const [from, to] of cases) {
      it(`${from} → ${to}: every target reads exactly the state of its key groups`, async () => {
        const { h } = ctx;
        const sources = await h.createKeyedOperator({
          keySerializer: stringSerializer,
          maxParallelism: MAX_P,
          parallelism: from,
        });
        for (const b of sources) writeSource(b, keys, from);
        const pointer = await h.checkpoint(sources);
        for (const b of sources) await h.close(b);
        const targets = await h.restoreKeyed(pointer, { keySerializer: stringSerializer, parallelism: to });
        expect(targets.length).toBe(to);
        for (const [i, b] of targets.entries()) await checkTarget(b, keys, from, to, i);
        for (const b of targets) await h.close(b);
      });
    }

    it('state survives a rescale and a rescale back (2 → 3 → 2), and the targets keep working', async () => {
      const { h } = ctx;
      const sources = await h.createKeyedOperator({
        keySerializer: stringSerializer,
        maxParallelism: MAX_P,
        parallelism: 2,
      });
      for (const b of sources) writeSource(b, keys, 2);
      const mid = await h.restoreKeyed(await h.checkpoint(sources), {
        keySerializer: stringSerializer,
        parallelism: 3,
      });
      const back = await h.restoreKeyed(await h.checkpoint(mid), { keySerializer: stringSerializer, parallelism: 2 });
      for (const [i, b] of back.entries()) await checkTarget(b, keys, 2, 2, i);
      const [first] = back;
      const key = keys.get(first.keyGroupRange.start)?.[0] ?? '';
      first.setCurrentKey(key);
      first.getState(vd).update('changed');
      expect(first.getState(vd).value()).toBe('changed');
    });
  });
}
