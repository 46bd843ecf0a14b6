import { StateAccessError } from '../errors.js';
import type { Serializer } from '../serializers/serializer.js';
import type { BroadcastState, OperatorListState } from '../state/types.js';

function requireValue(value: unknown, what: string, stateName: string): void {
  if (value === null || value === undefined) {
    throw new StateAccessError('NULL_NOT_ALLOWED', `operator state "${stateName}": ${what} must not be null or undefined. Leave it out, or wrap it in an object.`);
  }
}

/** Split or union list state of one subtask: a plain array; the snapshot serializes it. */
export class HeapOperatorListState<T> implements OperatorListState<T> {
  private elements: T[] = [];

  constructor(
    readonly name: string,
    readonly mode: 'split' | 'union',
    public serializer: Serializer<T>,
  ) {}

  /** The live list (do not keep it across mutations: clear() and update() replace it). */
  get(): readonly T[] {
    return this.elements;
  }

  add(value: T): void {
    requireValue(value, 'an element', this.name);
    this.elements.push(value);
  }

  addAll(values: readonly T[]): void {
    for (const v of values) requireValue(v, 'an element', this.name);
    for (const v of values) this.elements.push(v);
  }

  update(values: readonly T[]): void {
    for (const v of values) requireValue(v, 'an element', this.name);
    this.elements = values.slice();
  }

  clear(): void {
    this.elements = [];
  }
}

/**
 * Broadcast (map-shaped) state. Keys whose serializer says `mapKey: 'bytes'` are looked up by
 * their serialized form, so structurally equal objects address the same entry.
 */
export class HeapBroadcastState<K, V> implements BroadcastState<K, V> {
  private readonly map = new Map<unknown, [K, V]>();
  private readonly byBytes: boolean;

  constructor(
    readonly name: string,
    public keySerializer: Serializer<K>,
    public valueSerializer: Serializer<V>,
  ) {
    this.byBytes = keySerializer.mapKey === 'bytes';
  }

  private slot(key: K): unknown {
    requireValue(key, 'a key', this.name);
    return this.byBytes ? Buffer.from(this.keySerializer.serialize(key)).toString('latin1') : key;
  }

  get size(): number {
    return this.map.size;
  }

  get(key: K): V | null {
    const e = this.map.get(this.slot(key));
    return e === undefined ? null : e[1];
  }

  put(key: K, value: V): void {
    requireValue(value, 'a value', this.name);
    this.map.set(this.slot(key), [key, value]);
  }

  putAll(entries: Iterable<readonly [K, V]> | ReadonlyMap<K, V>): void {
    for (const [k, v] of entries) this.put(k, v);
  }

  contains(key: K): boolean {
    return this.map.has(this.slot(key));
  }

  remove(key: K): void {
    this.map.delete(this.slot(key));
  }

  clear(): void {
    this.map.clear();
  }

  *entries(): IterableIterator<[K, V]> {
    for (const [k, v] of this.map.values()) yield [k, v];
  }
}
