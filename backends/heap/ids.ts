import { fieldWriter, type FieldWriter } from '../../src/format/bytes.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import { identityIdOf, valueOfIdentityId, writesNegZeroApart } from '../../src/state/key-identity.js';

/**
 * How the heap backend turns keys, namespaces and map user keys into JS Map keys ("ids"):
 * the value itself when the serializer declares `mapKey: 'identity'` (primitives whose JS
 * equality matches byte equality), otherwise the serialized bytes as a latin1 string (one char
 * per byte, so string order is byte order). Either way the original value stays recoverable.
 *
 * Equality is decided by the serializer's bytes on every backend (docs/SEMANTICS.md, "Map keys").
 * JS equality differs from byte equality for two kinds of primitives, which identity ids
 * canonicalize: strings with lone surrogates (UTF-8 writes each as U+FFFD, so '\uD800' and
 * '\uDBFF' are one key) and -0 where the serializer writes it differently from 0 (float64);
 * src/state/key-identity.ts canonicalizes both.
 */
export class IdCodec<T> {
  readonly identity: boolean;
  /** Writes `bytes(this.bytes(id))` into a ByteWriter without allocating the bytes (snapshots). */
  readonly write: FieldWriter<unknown>;
  private readonly identityId: (value: T) => unknown;

  constructor(readonly serializer: Serializer<T>) {
    this.identity = serializer.mapKey === 'identity';
    this.identityId = identityIdOf(serializer);
    if (!this.identity) this.write = (out, id) => out.latin1Bytes(id as string);
    else {
      const fw = fieldWriter(serializer) as FieldWriter<unknown>;
      this.write = writesNegZeroApart(serializer as Serializer<unknown>)
        ? (out, id) => fw(out, valueOfIdentityId(id))
        : fw;
    }
  }

  id(value: T): unknown {
    return this.identity ? this.identityId(value) : latin1(this.serializer.serialize(value));
  }

  value(id: unknown): T {
    if (!this.identity) return this.serializer.deserialize(Buffer.from(id as string, 'latin1'));
    return valueOfIdentityId<T>(id);
  }

  bytes(id: unknown): Uint8Array {
    return this.identity ? this.serializer.serialize(this.value(id)) : Buffer.from(id as string, 'latin1');
  }

  /** Byte-order sort key of an id (latin1 of its serialized bytes). */
  sortKey(id: unknown): string {
    return this.identity ? latin1(this.serializer.serialize(this.value(id))) : (id as string);
  }

  /**
   * The id of a value restored from `bytes`. `reader` decodes them (the serializer they were
   * written with); when it is this codec's own serializer and ids are bytes, no decode is needed.
   */
  idFromBytes(bytes: Uint8Array, reader: Serializer<T>): unknown {
    if (!this.identity && reader === this.serializer) return latin1(bytes);
    return this.id(reader.deserialize(bytes));
  }
}

export function latin1(bytes: Uint8Array): string {
  return (Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)).toString(
    'latin1',
  );
}
