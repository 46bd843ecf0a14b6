import {
  keyGroupForBytes,
  keyGroupForKey,
  keyOutOfRange,
  noCurrentKeyError,
  nullKey,
} from '../../src/backend/keyed-rules.js';
import type { KeyGroupRange } from '../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import type { BufferedStore } from './buffered-store.js';
import { lengthPrefixed, lengthPrefixedUtf8Capacity, lengthPrefixedUtf8Into } from './row-keys.js';

/**
 * The current key of a keyed backend, in the form row keys need (key group + length-prefixed key
 * bytes), shared by every state handle of the backend together with the store.
 */
export class KeyContext<K> {
  private key: K | undefined;
  private hasKey = false;
  /**
   * lengthPrefixed(serialized current key) is keyPart[0, keyLength): string keys are written into
   * one reused buffer (no allocation per key change), so keyPart may be longer than the key.
   */
  keyPart: Buffer = Buffer.alloc(0);
  keyLength = 0;
  /** The reused buffer of string keys. */
  private keyBuf: Buffer = Buffer.allocUnsafe(64);
  keyGroup = -1;
  /** Bumped by every key change: state handles rebuild their row-key prefix when it moves. */
  epoch = 0;

  constructor(
    readonly store: BufferedStore,
    readonly keySerializer: Serializer<K>,
    readonly maxParallelism: number,
    readonly keyGroupRange: KeyGroupRange,
  ) {}

  setCurrentKey(key: K): void {
    this.store.checkOpen();
    if (key === null || key === undefined) {
      throw nullKey();
    }
    // The same primitive key again (consecutive records of one key): nothing to recompute.
    // Object.is: 0 and -0 are two keys when their bytes differ (float64).
    if (Object.is(key, this.key) && this.hasKey && typeof key !== 'object') return;
    const s = this.keySerializer;
    // String keys (the common case) skip serialize(): hashed as a string, UTF-8 written straight into the key buffer.
    const fast = s === (stringSerializer as Serializer<unknown>) && typeof key === 'string';
    const bytes = fast ? null : s.serialize(key);
    const kg =
      bytes === null ? keyGroupForKey(key, s, this.maxParallelism) : keyGroupForBytes(bytes, this.maxParallelism);
    if (!this.keyGroupRange.contains(kg)) throw keyOutOfRange(key, kg, this.keyGroupRange);
    this.key = key;
    this.hasKey = true;
    this.keyGroup = kg;
    if (bytes === null) {
      const need = lengthPrefixedUtf8Capacity(key as string);
      if (this.keyBuf.length < need) this.keyBuf = Buffer.allocUnsafe(Math.max(need, 2 * this.keyBuf.length));
      // Overwritten by the next key change, when every handle rebuilds its row keys anyway.
      this.keyPart = this.keyBuf;
      this.keyLength = lengthPrefixedUtf8Into(this.keyBuf, key as string);
    } else {
      this.keyPart = lengthPrefixed(bytes);
      this.keyLength = this.keyPart.length;
    }
    this.epoch++;
  }

  getCurrentKey(): K {
    this.store.checkOpen();
    if (!this.hasKey) throw noKey();
    return this.key as K;
  }

  /** Throws BACKEND_CLOSED after close, NO_CURRENT_KEY before the first setCurrentKey. */
  checkKey(): void {
    this.store.checkHealthy();
    if (!this.hasKey) throw noKey();
  }
}

const noKey = noCurrentKeyError;
