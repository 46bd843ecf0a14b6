import { RestoreError, StreamStateError } from '../errors.js';
import type { Serializer } from '../serializers/serializer.js';
import { murmur3 } from './murmur3.js';

/** Upper bound of maxParallelism (= number of key groups); key groups fit in 15 bits. */
export const MAX_MAX_PARALLELISM = 32768;
export const DEFAULT_MAX_PARALLELISM = 128;

/**
 * An inclusive range of key groups [start, end]. The empty range is [0, -1].
 * Plain data, JSON-serializable as {start, end}.
 */
export class KeyGroupRange {
  static readonly EMPTY = new KeyGroupRange(0, -1);

  constructor(
    readonly start: number,
    readonly end: number,
  ) {
    if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end < start - 1) {
      throw new StreamStateError('INVALID_ARGUMENT', `invalid key-group range [${start}, ${end}]`);
    }
  }

  static of(r: { start: number; end: number }): KeyGroupRange {
    return r instanceof KeyGroupRange ? r : new KeyGroupRange(r.start, r.end);
  }

  get size(): number {
    return this.end - this.start + 1;
  }

  get isEmpty(): boolean {
    return this.end < this.start;
  }

  contains(kg: number): boolean {
    return kg >= this.start && kg <= this.end;
  }

  intersection(other: { start: number; end: number }): KeyGroupRange {
    const s = Math.max(this.start, other.start);
    const e = Math.min(this.end, other.end);
    return e >= s ? new KeyGroupRange(s, e) : KeyGroupRange.EMPTY;
  }

  equals(other: { start: number; end: number }): boolean {
    return (this.isEmpty && other.end < other.start) || (this.start === other.start && this.end === other.end);
  }

  *[Symbol.iterator](): IterableIterator<number> {
    for (let kg = this.start; kg <= this.end; kg++) yield kg;
  }

  toJSON(): { start: number; end: number } {
    return { start: this.start, end: this.end };
  }

  toString(): string {
    return `[${this.start}, ${this.end}]`;
  }
}

/**
 * The one rule for a max parallelism (the number of key groups), wherever one is chosen (a job,
 * convert --max-parallelism, bootstrap): an integer in 1..32768, else PARALLELISM_INVALID.
 * `what` names it the way the caller's user wrote it, e.g. `--max-parallelism` or `operator op: maxParallelism`.
 */
export function checkMaxParallelism(maxParallelism: number, what = 'maxParallelism'): void {
  if (!Number.isInteger(maxParallelism) || maxParallelism < 1 || maxParallelism > MAX_MAX_PARALLELISM) {
    throw new RestoreError(
      'PARALLELISM_INVALID',
      `${what} must be an integer in [1, ${MAX_MAX_PARALLELISM}], got ${maxParallelism}; pass one in that range.`,
    );
  }
}

/**
 * The one rule between a snapshot and its restore: keyed state is laid out for one max parallelism
 * (key group = murmur mod maxParallelism), so restoring it under another fails loudly
 * (MAX_PARALLELISM_MISMATCH) and says how to convert it instead. `what` names the snapshot.
 */
export function checkRestoreMaxParallelism(snapshot: number, restore: number, what = 'the snapshot'): void {
  if (snapshot === restore) return;
  throw new RestoreError(
    'MAX_PARALLELISM_MISMATCH',
    `${what} was taken with maxParallelism ${snapshot} but is restored with ${restore}. ` +
      `maxParallelism cannot change across a restore: use the snapshot's value ${snapshot}, or convert the snapshot first: ` +
      `streamstate convert <snapshot> <new-savepoint> --max-parallelism ${restore} (re-hashes every key).`,
  );
}

export function checkParallelism(maxParallelism: number, parallelism: number): void {
  checkMaxParallelism(maxParallelism);
  if (!Number.isInteger(parallelism) || parallelism < 1 || parallelism > maxParallelism) {
    throw new RestoreError(
      'PARALLELISM_INVALID',
      `parallelism must be an integer in [1, maxParallelism=${maxParallelism}], got ${parallelism}. ` +
        'Lower the parallelism, or start from scratch with a larger maxParallelism (it cannot change across a restore).',
    );
  }
}

/** Key group of a key's serialized bytes: murmur3_32(bytes) mod maxParallelism. */
export function keyGroupForBytes(keyBytes: Uint8Array, maxParallelism: number): number {
  return murmur3(keyBytes) % maxParallelism;
}

/** Key group of a key, through the serializer's hash fast path when it has one. */
export function keyGroupForKey<K>(key: K, serializer: Serializer<K>, maxParallelism: number): number {
  const h = serializer.hash ? serializer.hash(key) : murmur3(serializer.serialize(key));
  return h % maxParallelism;
}

/** The key groups operator subtask `index` of `parallelism` owns: a contiguous, near-equal share. */
export function keyGroupRangeForSubtask(maxParallelism: number, parallelism: number, index: number): KeyGroupRange {
  checkParallelism(maxParallelism, parallelism);
  if (!Number.isInteger(index) || index < 0 || index >= parallelism) {
    throw new StreamStateError('INVALID_ARGUMENT', `subtask index ${index} is outside [0, ${parallelism - 1}]`);
  }
  const start = Math.floor((index * maxParallelism + parallelism - 1) / parallelism);
  const end = Math.floor(((index + 1) * maxParallelism - 1) / parallelism);
  return new KeyGroupRange(start, end);
}

/** The subtask (of `parallelism`) that owns key group `kg`. Inverse of keyGroupRangeForSubtask. */
export function subtaskForKeyGroup(maxParallelism: number, parallelism: number, kg: number): number {
  return Math.floor((kg * parallelism) / maxParallelism);
}

/** The subtask that owns `key`. */
export function subtaskForKey<K>(
  key: K,
  serializer: Serializer<K>,
  maxParallelism: number,
  parallelism: number,
): number {
  return subtaskForKeyGroup(maxParallelism, parallelism, keyGroupForKey(key, serializer, maxParallelism));
}

/** Default maxParallelism for a parallelism when none is configured: 1.5x rounded up to a power of two, within [128, 32768]. */
export function defaultMaxParallelism(parallelism: number): number {
  let p = 1;
  const want = parallelism + Math.floor(parallelism / 2);
  while (p < want) p *= 2;
  return Math.min(Math.max(p, DEFAULT_MAX_PARALLELISM), MAX_MAX_PARALLELISM);
}
