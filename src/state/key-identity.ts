import type { Serializer } from '../serializers/serializer.js';

/**
 * Map keys are equal exactly when their serializer writes the same bytes (docs/SEMANTICS.md,
 * "Map keys"). In-memory states key JS Maps by the value itself when the serializer declares
 * `mapKey: 'identity'`; these helpers turn a value into such an id so that JS Map equality
 * (SameValueZero) agrees with byte equality, for the two kinds of primitives where it does not:
 * - strings with lone surrogates: UTF-8 writes each as U+FFFD, so the id is the string read back
 *   from its bytes (whatever the serializer makes of them);
 * - -0 under a serializer that writes it apart from 0 (float64): the id is NEGATIVE_ZERO_ID.
 */

/** The id of -0 under a serializer that writes it with other bytes than 0. */
export const NEGATIVE_ZERO_ID: unique symbol = Symbol('-0');

/** The function from values to identity ids for `serializer` (a `mapKey: 'identity'` serializer). */
export function identityIdOf<T>(serializer: Serializer<T>): (value: T) => unknown {
  const negZeroApart = writesNegZeroApart(serializer as Serializer<unknown>);
  return (value) => {
    if (typeof value === 'string')
      return isWellFormed(value) ? value : serializer.deserialize(serializer.serialize(value));
    if (value === 0 && negZeroApart && Object.is(value, -0)) return NEGATIVE_ZERO_ID;
    return value;
  };
}

/** The value an identity id stands for. */
export function valueOfIdentityId<T>(id: unknown): T {
  return (id === NEGATIVE_ZERO_ID ? -0 : id) as T;
}

function isWellFormed(s: string): boolean {
  // String.prototype.isWellFormed (ES2024, Node 20) is not in the ES2023 lib typings.
  return (s as unknown as { isWellFormed(): boolean }).isWellFormed();
}

/** Whether `serializer` writes -0 with other bytes than 0 (then -0 has an id of its own). */
export function writesNegZeroApart(serializer: Serializer<unknown>): boolean {
  try {
    return !Buffer.from(serializer.serialize(0)).equals(Buffer.from(serializer.serialize(-0)));
  } catch {
    return false; // not a number serializer
  }
}
