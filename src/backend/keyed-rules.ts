/**
 * The rules every keyed state backend shares, with their one wording (docs/SEMANTICS.md): key →
 * key group, the range check, null keys and values, closed backends, no current key, the
 * registration kind check and serializer compatibility. Backends call these; none restates them,
 * so a rule and its message change in one place and every backend follows.
 */
import { StateAccessError, StateMigrationError, StateRegistrationError, StreamStateError } from '../errors.js';
import type { KeyGroupRange } from '../keygroups/key-groups.js';
import {
  describeSerializer,
  resolveCompatibility,
  snapshotOf,
  type Serializer,
  type SerializerSnapshot,
} from '../serializers/serializer.js';

export { keyGroupForBytes, keyGroupForKey } from '../keygroups/key-groups.js';

/** A key (of a record or a timer) whose key group is outside the backend's range. */
export function keyOutOfRange(
  key: unknown,
  keyGroup: number,
  range: KeyGroupRange,
  where = 'setCurrentKey',
): StateAccessError {
  return new StateAccessError(
    'KEY_OUT_OF_RANGE',
    `${where}: key ${String(key).slice(0, 60)} belongs to key group ${keyGroup}, outside this backend's range ${range.toString()}. ` +
      'Route records to subtasks by key group (subtaskForKey, with the same key serializer and maxParallelism as the backend) so each subtask only sees its own keys.',
  );
}

/** setCurrentKey(null | undefined). */
export function nullKey(): StateAccessError {
  return new StateAccessError(
    'NULL_NOT_ALLOWED',
    'setCurrentKey: a key must not be null or undefined. Key your stream by a non-null value.',
  );
}

/** A state access or backend call after close() (docs/SEMANTICS.md, "Closed backends"). */
export function backendClosedError(what = 'the keyed backend'): StreamStateError {
  return new StreamStateError(
    'BACKEND_CLOSED',
    `${what} is closed; create a new one (restoring from the last checkpoint) to continue.`,
  );
}

/** A keyed state access before the first setCurrentKey. */
export function noCurrentKeyError(): StateAccessError {
  return new StateAccessError(
    'NO_CURRENT_KEY',
    'no current key: call setCurrentKey(key) on the keyed backend before accessing keyed state.',
  );
}

/** A state name registered (or recorded) as one kind and now asked for as another. */
export function stateKindMismatch(name: string, recorded: string, requested: string): StateRegistrationError {
  return new StateRegistrationError(
    'STATE_KIND_MISMATCH',
    `state "${name}" is a ${recorded} state but is now requested as ${requested}. Use the original kind, or another name for the new state.`,
  );
}

/** TTL switched on or off for state that has a stored form already. */
export function ttlMismatch(name: string, recordedWithTtl: boolean): StateMigrationError {
  return new StateMigrationError(
    'SERIALIZER_INCOMPATIBLE',
    `state "${name}" was written ${recordedWithTtl ? 'with' : 'without'} TTL but is now registered ${recordedWithTtl ? 'without' : 'with'} TTL. ` +
      'TTL changes the stored form of the values, so it cannot be switched on or off for existing state: keep the TTL setting or use a new state name.',
  );
}

/** A serializer that cannot read what was recorded; `remedy` says what to register instead. */
export function serializerIncompatible(
  state: string,
  what: string,
  reason: string,
  remedy?: string,
): StateMigrationError {
  return new StateMigrationError(
    'SERIALIZER_INCOMPATIBLE',
    `${state}: the ${what} serializer is incompatible: ${reason}. ` +
      (remedy ??
        'Register the state with a serializer that can read the recorded bytes (same id and version, or one that declares canMigrateFrom/restoreReader), or use a new state name.'),
  );
}

/**
 * The serializer to read bytes recorded under `recorded` with: `current` when compatible as is,
 * its migration reader when it declares one, else SERIALIZER_INCOMPATIBLE. `state` names the
 * state as messages show it (e.g. `state "counts"`).
 */
export function readerForRecorded<T>(
  state: string,
  what: string,
  recorded: SerializerSnapshot | undefined,
  current: Serializer<T>,
): Serializer<T> {
  if (recorded === undefined) return current;
  const c = resolveCompatibility(recorded, current as Serializer<unknown>);
  if (c.kind === 'compatible-as-is') return current;
  if (c.kind === 'compatible-after-migration') return c.reader as Serializer<T>;
  throw serializerIncompatible(state, what, `${c.reason} (recorded: ${describeSerializer(recorded)})`);
}

/**
 * Like readerForRecorded, for bytes that cannot be migrated (they are part of stored keys): only a
 * serializer compatible as is will do.
 */
export function requireCompatibleAsIs(
  state: string,
  what: string,
  recorded: SerializerSnapshot | undefined,
  current: Serializer<unknown>,
  why: string,
): void {
  if (recorded === undefined) return;
  if (resolveCompatibility(recorded, current).kind === 'compatible-as-is') return;
  throw serializerIncompatible(
    state,
    what,
    `it changed (${describeSerializer(recorded)} → ${describeSerializer(snapshotOf(current))})`,
    `${why}; register the state with the original ${what} serializer.`,
  );
}
