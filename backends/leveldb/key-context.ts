import { StateAccessError } from '../../src/errors.js';
import { keyGroupForBytes, type KeyGroupRange } from '../../src/keygroups/key-groups.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import type { BufferedStore } from './buffered-store.js';
import { lengthPrefixed, RowKeyBuilder } from './row-keys.js';

/**
 * The current key of a keyed backend, in the form row keys need (key group + length-prefixed key
 * bytes), shared by every state handle of the backend together with the store and the row-key builder.
 */
export class KeyContext<K> {
  readonly rows = new RowKeyBuilder();
  private key: K | undefined;
  private hasKey = false;
  /** lengthPrefixed(serialized current key); empty until a key is set. */
  keyPart: Buffer = Buffer.alloc(0);
  keyGroup = -1;

  constructor(
    readonly store: BufferedStore,
    readonly keySerializer: Serializer<K>,
    readonly maxParallelism: number,
    readonly keyGroupRange: KeyGroupRange,
  ) {}

  setCurrentKey(key: K): void {
    if (key === null || key === undefined) {
      throw new StateAccessError('NULL_NOT_ALLOWED', 'setCurrentKey(null): keys cannot be null. Key your stream by a non-null value.');
    }
    const bytes = this.keySerializer.serialize(key);
    const kg = this.keySerializer.hash ? this.keySerializer.hash(key) % this.maxParallelism : keyGroupForBytes(bytes, this.maxParallelism);
    if (!this.keyGroupRange.contains(kg)) {
      throw new StateAccessError(
        'KEY_OUT_OF_RANGE',
        `key ${String(key).slice(0, 60)} belongs to key group ${kg}, outside this backend's range ${this.keyGroupRange.toString()}. ` +
          'The stream reached the wrong subtask: partition it with the same key serializer and maxParallelism as the state backend.',
      );
    }
    this.key = key;
    this.hasKey = true;
    this.keyGroup = kg;
    this.keyPart = lengthPrefixed(bytes);
  }

  getCurrentKey(): K {
    if (!this.hasKey) throw noKey();
    return this.key as K;
  }

  /** Throws NO_CURRENT_KEY before the first setCurrentKey. */
  checkKey(): void {
    if (!this.hasKey) throw noKey();
    this.store.checkHealthy();
  }
}

function noKey(): StateAccessError {
  return new StateAccessError('NO_CURRENT_KEY', 'no current key: call setCurrentKey(key) before reading or writing keyed state.');
}
