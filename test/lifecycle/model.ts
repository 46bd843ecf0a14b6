import type { KeyedStateBackend } from '../../src/backend/contract.js';
import { keyGroupRangeForSubtask, subtaskForKey } from '../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { mapState, valueState } from '../../src/state/descriptors.js';

/**
 * The plain model of the lifecycle test: the job's keyed state as one flat map
 * (`<key>/v` → the ValueState, `<key>/m/<userKey>` → a MapState entry), the live state and the
 * state each checkpoint captured. Nothing here touches storage.
 */
export type Flat = ReadonlyMap<string, string>;

export const JOB = 'lifecycle-job';
export const OP = 'keyed-op';
export const MAX_P = 16;
export const NUM_KEYS = 24;
export const KEYS: readonly string[] = Array.from({ length: NUM_KEYS }, (_, i) => `key-${i}`);
export const USER_KEYS: readonly string[] = ['a', 'b'];

export const valueDescriptor = valueState<string>('v', { serializer: stringSerializer });
export const mapDescriptor = mapState<string, string>('m', {
  keySerializer: stringSerializer,
  valueSerializer: stringSerializer,
});

export function ownerOf(key: string, parallelism: number): number {
  return subtaskForKey(key, stringSerializer, MAX_P, parallelism);
}

export function subtaskRange(parallelism: number, subtask: number) {
  return keyGroupRangeForSubtask(MAX_P, parallelism, subtask);
}

/** The entries of `state` whose keys subtask `subtask` of `parallelism` owns. */
export function partOf(state: Flat, parallelism: number, subtask: number): Map<string, string> {
  const part = new Map<string, string>();
  for (const [k, v] of state) if (ownerOf(k.slice(0, k.indexOf('/')), parallelism) === subtask) part.set(k, v);
  return part;
}

/** What one write command does to one key, applied alike to the model and to a backend. */
export interface KeyWrite {
  readonly key: string;
  /** null clears the value. */
  readonly value: string | null;
  /** [user key, value or null to remove]. */
  readonly mapEntry: readonly [string, string | null] | null;
}

export function applyToModel(live: Map<string, string>, w: KeyWrite): void {
  if (w.value === null) live.delete(`${w.key}/v`);
  else live.set(`${w.key}/v`, w.value);
  if (w.mapEntry !== null) {
    const [uk, uv] = w.mapEntry;
    if (uv === null) live.delete(`${w.key}/m/${uk}`);
    else live.set(`${w.key}/m/${uk}`, uv);
  }
}

export function applyToBackend(keyed: KeyedStateBackend<string>, w: KeyWrite): void {
  keyed.setCurrentKey(w.key);
  keyed.getState(valueDescriptor).update(w.value);
  if (w.mapEntry !== null) {
    const [uk, uv] = w.mapEntry;
    const m = keyed.getState(mapDescriptor);
    if (uv === null) m.remove(uk);
    else m.put(uk, uv);
  }
}

/** Reads the keys `keyed` owns (of `parallelism`) into the flat form (point reads only). */
export function readBackend(
  keyed: KeyedStateBackend<string>,
  parallelism: number,
  subtask: number,
  into: Map<string, string>,
): void {
  for (const key of KEYS) {
    if (ownerOf(key, parallelism) !== subtask) continue;
    keyed.setCurrentKey(key);
    const v = keyed.getState(valueDescriptor).value();
    if (v !== null) into.set(`${key}/v`, v);
    const m = keyed.getState(mapDescriptor);
    for (const uk of USER_KEYS) {
      const uv = m.get(uk);
      if (uv !== null) into.set(`${key}/m/${uk}`, uv);
    }
  }
}

/** A readable difference of two flat states (empty when equal). */
export function diff(expected: Flat, actual: Flat): string[] {
  const out: string[] = [];
  for (const [k, v] of expected) {
    const a = actual.get(k);
    if (a !== v) out.push(`${k}: expected ${short(v)}, got ${a === undefined ? 'nothing' : short(a)}`);
  }
  for (const [k, a] of actual) if (!expected.has(k)) out.push(`${k}: expected nothing, got ${short(a)}`);
  return out;
}

function short(s: string): string {
  return s.length > 24 ? `${s.slice(0, 24)}…` : s;
}
