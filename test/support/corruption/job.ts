import type { KeyedStateBackend, OperatorStateBackend } from '../../../src/backend/contract.js';
import { float64Serializer, int32Serializer, stringSerializer } from '../../../src/serializers/builtins.js';
import { listState, mapState, reducingState, valueState } from '../../../src/state/descriptors.js';
import { SeededRandom } from '../../../src/testing/rng.js';

/**
 * The state the corruption fixtures checkpoint: every keyed state kind (value with a fixed and a
 * default serializer, list, map under two namespaces, reducing), an event-time timer queue, and
 * every operator state mode (split, union, broadcast). `dumpState` turns restored backends into
 * a parallelism-independent normal form, so a restore at another parallelism compares equal.
 *
 * No vitest imports here: bench/corruption-long.ts compiles and runs this module as plain JS.
 */
export const OPERATOR_ID = 'op';
export const MAX_PARALLELISM = 128;
export const KEY_COUNT = 120;

export const countState = valueState<number>('count', { serializer: int32Serializer });
export const profileState = valueState<{ name: string; tags: string[] }>('profile');
export const eventsState = listState<string>('events', { serializer: stringSerializer });
export const windowsState = mapState<string, number>('windows', {
  keySerializer: stringSerializer,
  valueSerializer: float64Serializer,
});
export const sumState = reducingState<number>('sum', (a, b) => a + b, { serializer: float64Serializer });
export const TIMER_QUEUE = 'event-timers';
export const offsetsState = 'offsets';
export const watermarksState = 'watermarks';
export const rulesState = mapState<string, string>('rules', {
  keySerializer: stringSerializer,
  valueSerializer: stringSerializer,
});

const KEYED_NAMES = [countState.name, profileState.name, eventsState.name, windowsState.name, sumState.name];

function keyOf(i: number): string {
  return `key-${i}`;
}

function ownerOf<K>(backends: readonly KeyedStateBackend<K>[], key: string): KeyedStateBackend<K> {
  for (const b of backends) {
    try {
      b.setCurrentKey(key as unknown as K);
      return b;
    } catch {
      // KEY_OUT_OF_RANGE: another subtask owns the key
    }
  }
  throw new Error(`no backend owns key ${key}`);
}

/**
 * One round of writes. Round 0 fills every state; later rounds update, clear and add, so two
 * checkpoints of one job differ in every file.
 */
export function populate(
  keyed: readonly KeyedStateBackend<string>[],
  operator: readonly OperatorStateBackend[],
  seed: number,
  round: number,
  /** Extra bytes in every profile value (to fill LevelDB memtables). */
  padding = 0,
): void {
  const rng = new SeededRandom(seed * 7919 + round);
  for (let i = 0; i < KEY_COUNT; i++) {
    const key = keyOf(i);
    const b = ownerOf(keyed, key);
    const count = b.getState(countState);
    const r = rng.next();
    if (round > 0 && r < 0.1) count.clear();
    else count.update((count.value() ?? 0) + 1 + rng.int(1000));
    if (i % 3 === 0 || padding > 0)
      b.getState(profileState).update({
        name: `user ${i} r${round}`,
        tags: [`t${rng.int(5)}`, `s${seed}`, 'x'.repeat(padding)],
      });
    const events = b.getState(eventsState);
    if (round > 0 && r > 0.9) events.clear();
    else events.addAll([`e${round}-${rng.int(1e6)}`, `e${round}-${rng.int(1e6)}`].slice(0, 1 + (i % 2)));
    const windows = b.getState(windowsState);
    for (const ns of ['w1', 'w2']) {
      windows.setCurrentNamespace(ns);
      if (i % 4 === 0 && ns === 'w2') continue;
      windows.put(`f${rng.int(6)}`, rng.next() * 100);
      if (round > 0 && rng.next() < 0.2) windows.remove(`f${rng.int(6)}`);
    }
    if (i % 2 === 1) b.getState(sumState).add(rng.int(50) + 0.5);
    const timers = b.getTimerQueue<string>(TIMER_QUEUE, stringSerializer);
    if (i % 5 === round % 5) timers.add({ timestamp: 1000 * round + i, key, namespace: `w${1 + (i % 2)}` });
  }
  for (const [i, op] of operator.entries()) {
    op.getListState<number>(offsetsState, int32Serializer).add(seed * 100 + round * 10 + i);
    op.getUnionListState<string>(watermarksState, stringSerializer).update([`wm-${seed}-${round}-${i}`]);
    op.getBroadcastState(rulesState).put(`rule-${round}`, `seed ${seed} round ${round}`);
  }
}

/** Canonical JSON: object keys sorted, so equal states give equal strings. */
function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return Object.fromEntries(
      Object.keys(o)
        .sort()
        .map((k) => [k, canonical(o[k])]),
    );
  }
  return v;
}

function sortedLines(lines: unknown[]): string[] {
  return lines.map((l) => JSON.stringify(canonical(l))).sort();
}

/**
 * Reads everything the backends hold (registering every state, so lazily restored bytes are
 * decoded) into a normal form independent of parallelism. Keyed states are listed per entry;
 * split list elements are pooled; union and broadcast state are compared as sets (after a
 * restore every subtask must hold all union elements).
 */
export async function dumpState(
  keyed: readonly KeyedStateBackend<string>[],
  operator: readonly OperatorStateBackend[],
  restored: boolean,
): Promise<string> {
  const entries: unknown[] = [];
  const names = new Set<string>();
  for (const b of keyed) {
    const states = {
      count: b.getState(countState),
      profile: b.getState(profileState),
      events: b.getState(eventsState),
      windows: b.getState(windowsState),
      sum: b.getState(sumState),
    };
    for (const name of b.stateNames()) names.add(name);
    for (const name of KEYED_NAMES) {
      for await (const [key, ns] of b.getKeysAndNamespaces<string>(name)) {
        b.setCurrentKey(key);
        let value: unknown;
        if (name === 'count') states.count.setCurrentNamespace(ns), (value = states.count.value());
        else if (name === 'profile') states.profile.setCurrentNamespace(ns), (value = states.profile.value());
        else if (name === 'events')
          states.events.setCurrentNamespace(ns), (value = states.events.get()?.slice() ?? null);
        else if (name === 'sum') states.sum.setCurrentNamespace(ns), (value = states.sum.get());
        else {
          states.windows.setCurrentNamespace(ns);
          const m: [string, number][] = [];
          for await (const e of states.windows.entries()) m.push(e);
          value = m.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
        }
        entries.push([name, key, ns, value]);
      }
    }
    for (const t of b.getTimerQueue<string>(TIMER_QUEUE, stringSerializer))
      entries.push(['timer', t.key, t.namespace, t.timestamp]);
  }
  // Split lists are pooled. Union lists: before a restore each subtask holds its own elements,
  // after one every subtask holds all of them, so the normal form is the set of all elements and
  // a restored subtask missing one of them is recorded. Broadcast state is equal on every subtask.
  const offsets: number[] = [];
  const perSubtaskWatermarks: string[][] = [];
  const perSubtaskRules: string[] = [];
  for (const op of operator) {
    offsets.push(...op.getListState<number>(offsetsState, int32Serializer).get());
    perSubtaskWatermarks.push([...op.getUnionListState<string>(watermarksState, stringSerializer).get()].sort());
    perSubtaskRules.push(JSON.stringify(sortedLines([...op.getBroadcastState(rulesState).entries()])));
    for (const name of op.stateNames()) names.add(`operator:${name}`);
  }
  const watermarks = [...new Set(perSubtaskWatermarks.flat())].sort();
  const unionComplete =
    !restored || perSubtaskWatermarks.every((w) => JSON.stringify(w) === JSON.stringify(watermarks));
  const rulesEqual = perSubtaskRules.every((r) => r === perSubtaskRules[0]);
  const rules = perSubtaskRules.length > 0 ? (JSON.parse(perSubtaskRules[0]) as string[]) : [];
  return JSON.stringify({
    stateNames: [...names].sort(),
    keyed: sortedLines(entries),
    operator: { offsets: offsets.sort((a, b) => a - b), watermarks, unionComplete, rules, rulesEqual },
  });
}

/** A short description of where two dumps differ, for failure reports. */
export function describeDifference(expected: string, actual: string): string {
  const e = JSON.parse(expected) as { keyed: string[] } & Record<string, unknown>;
  const a = JSON.parse(actual) as { keyed: string[] } & Record<string, unknown>;
  const parts: string[] = [];
  for (const k of Object.keys(e)) {
    if (k === 'keyed') continue;
    if (JSON.stringify(e[k]) !== JSON.stringify(a[k]))
      parts.push(`${k}: expected ${JSON.stringify(e[k])}, got ${JSON.stringify(a[k])}`);
  }
  const expectedSet = new Set(e.keyed);
  const actualSet = new Set(a.keyed);
  const missing = e.keyed.filter((l) => !actualSet.has(l));
  const extra = a.keyed.filter((l) => !expectedSet.has(l));
  if (missing.length > 0) parts.push(`${missing.length} keyed entries missing (first: ${missing[0]})`);
  if (extra.length > 0) parts.push(`${extra.length} unexpected keyed entries (first: ${extra[0]})`);
  return parts.join('; ').slice(0, 600) || 'dumps differ';
}
