import { fieldWriter, type FieldWriter } from '../../src/format/bytes.js';
import type { Serializer } from '../../src/serializers/serializer.js';

/**
 * How the heap backend turns keys, namespaces and map user keys into JS Map keys ("ids"):
 * the value itself when the serializer declares `mapKey: 'identity'` (primitives whose JS
 * equality matches byte equality), otherwise the serialized bytes as a latin1 string (one char
 * per byte, so string order is byte order). Either way the original value stays recoverable.
 */
export class IdCodec<T> {
  readonly identity: boolean;
  /** Writes `bytes(this.bytes(id))` into a ByteWriter without allocating the bytes (snapshots). */
  readonly write: FieldWriter<unknown>;

  constructor(readonly serializer: Serializer<T>) {
    this.identity = serializer.mapKey === 'identity';
    this.write = this.identity ? (fieldWriter(serializer) as FieldWriter<unknown>) : (out, id) => out.latin1Bytes(id as string);
  }

  id(value: T): unknown {
    return this.identity ? value : latin1(this.serializer.serialize(value));
  }

  value(id: unknown): T {
    return this.identity ? (id as T) : this.serializer.deserialize(Buffer.from(id as string, 'latin1'));
  }

  bytes(id: unknown): Uint8Array {
    return this.identity ? this.serializer.serialize(id as T) : Buffer.from(id as string, 'latin1');
  }

  /** Byte-order sort key of an id (latin1 of its serialized bytes). */
  sortKey(id: unknown): string {
    return this.identity ? latin1(this.serializer.serialize(id as T)) : (id as string);
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
  return (Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)).toString('latin1');
}
