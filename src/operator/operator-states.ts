import { StateAccessError, StreamStateError } from '../errors.js';
import type { Serializer } from '../serializers/serializer.js';
import { identityIdOf, valueOfIdentityId } from '../state/key-identity.js';
import type { BroadcastState, OperatorListState } from '../state/types.js';

function requireValue(value: unknown, what: string, stateName: string): void {
  if (value === null || value === undefined) {
    throw new StateAccessError(
      'NULL_NOT_ALLOWED',
      `operator state "${stateName}": ${what} must not be null or undefined. Leave it out, or wrap it in an object.`,
    );
  }
}

/** Shared by a backend and its handles: once closed, every handle method throws BACKEND_CLOSED. */
export interface Lifecycle {
  readonly closed: boolean;
}

function checkOpen(life: Lifecycle, stateName: string): void {
  if (life.closed) {
    throw new StreamStateError(
      'BACKEND_CLOSED',
      `operator state "${stateName}": the operator state backend is closed. Create a new backend (restoring from the last checkpoint) to continue.`,
    );
  }
}

/** Split or union list state of one subtask: a plain array; the snapshot serializes it. */
export class HeapOperatorListState<T> implements OperatorListState<T> {
  private elements: T[] = [];

  constructor(
    readonly name: string,
    readonly mode: 'split' | 'union',
    public serializer: Serializer<T>,
    private readonly life: Lifecycle = { closed: false },
  ) {}

  /** The live list (do not keep it across mutations: clear() and update() replace it). */
  get(): readonly T[] {
    checkOpen(this.life, this.name);
    return this.elements;
  }

  add(value: T): void {
    checkOpen(this.life, this.name);
    requireValue(value, 'an element', this.name);
    this.elements.push(value);
  }

  addAll(values: readonly T[]): void {
    checkOpen(this.life, this.name);
    for (const v of values) requireValue(v, 'an element', this.name);
    for (const v of values) this.elements.push(v);
  }

  update(values: readonly T[]): void {
    checkOpen(this.life, this.name);
    for (const v of values) requireValue(v, 'an element', this.name);
    this.elements = values.slice();
  }

  clear(): void {
    checkOpen(this.life, this.name);
    this.elements = [];
  }
}

/**
 * Broadcast (map-shaped) state. Keys are equal when their serialized bytes are (docs/SEMANTICS.md,
 * "Map keys"): keys whose serializer says `mapKey: 'bytes'` are looked up by their serialized
 * form; identity keys by their canonical id (src/state/key-identity.ts).
 */
export class HeapBroadcastState<K, V> implements BroadcastState<K, V> {
  private readonly map = new Map<unknown, [K, V]>();
  private readonly byBytes: boolean;
  private readonly identityId: (key: K) => unknown;

  constructor(
    readonly name: string,
    public keySerializer: Serializer<K>,
    public valueSerializer: Serializer<V>,
    private readonly life: Lifecycle = { closed: false },
  ) {
    this.byBytes = keySerializer.mapKey === 'bytes';
    this.identityId = identityIdOf(keySerializer);
  }

  private slot(key: K): unknown {
    checkOpen(this.life, this.name);
    requireValue(key, 'a key', this.name);
    return this.byBytes ? Buffer.from(this.keySerializer.serialize(key)).toString('latin1') : this.identityId(key);
  }

  get size(): number {
    checkOpen(this.life, this.name);
    return this.map.size;
  }

  get(key: K): V | null {
    const e = this.map.get(this.slot(key));
    return e === undefined ? null : e[1];
  }

  put(key: K, value: V): void {
    requireValue(value, 'a value', this.name);
    const slot = this.slot(key);
    // An identity id may be a canonical form of the key: keep the key its bytes stand for.
    this.map.set(slot, [this.byBytes ? key : valueOfIdentityId<K>(slot), value]);
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
    checkOpen(this.life, this.name);
    this.map.clear();
  }

  *entries(): IterableIterator<[K, V]> {
    checkOpen(this.life, this.name);
    for (const [k, v] of this.map.values()) {
      checkOpen(this.life, this.name);
      yield [k, v];
    }
  }
}
