import { FormatError, StateMigrationError, StreamStateError } from '../errors.js';
import { builtinFor } from '../savepoint/values.js';
import {
  describeSerializer,
  resolveCompatibility,
  type Serializer,
  type SerializerSnapshot,
} from '../serializers/serializer.js';
import { TTL_SERIALIZER_ID } from '../state/ttl.js';

/**
 * Turning recorded bytes into values without the job's code: a serializer the caller passes
 * (checked against the recorded one), else the built-in serializer the snapshot names, else the
 * bytes themselves wrapped in UndecodedBytes with the recorded serializer's id. A custom
 * serializer therefore degrades to bytes, never to a crash.
 */

/** Bytes written by a serializer this process does not have (a custom one): kept as they are, with its identity. */
export class UndecodedBytes {
  constructor(
    /** What the snapshot records about the serializer that wrote the bytes. */
    readonly serializer: SerializerSnapshot,
    readonly bytes: Uint8Array,
  ) {}

  get serializerId(): string {
    return this.serializer.id;
  }

  /** A JSON picture (`{"$serializer": id, "$base64": ...}`). */
  toJSON(): { $serializer: string; $base64: string } {
    return {
      $serializer: this.serializer.id,
      $base64: Buffer.from(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength).toString('base64'),
    };
  }
}

/** A decoded value, or its bytes when neither the caller nor the built-ins can read them. */
export type Decoded<T> = T | UndecodedBytes;

/** Decodes one field: the value, and for TTL-wrapped values the recorded last-access timestamp. */
export interface FieldDecoder<T> {
  decode(bytes: Uint8Array): Decoded<T>;
  /** True when bytes carry a TTL timestamp (f64) before the value. */
  readonly ttl: boolean;
  /** The TTL timestamp of `bytes` (only when `ttl`). */
  timestamp(bytes: Uint8Array): number;
}

function view(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The inner serializer snapshot of a `streamstate.ttl` snapshot, or undefined. */
export function ttlInnerSnapshot(s: SerializerSnapshot): SerializerSnapshot | undefined {
  const c = s.config;
  if (s.id !== TTL_SERIALIZER_ID || c === null || typeof c !== 'object' || Array.isArray(c)) return undefined;
  if (typeof c.id !== 'string' || typeof c.version !== 'number') return undefined;
  return c.config === undefined ? { id: c.id, version: c.version } : { id: c.id, version: c.version, config: c.config };
}

/**
 * The serializer that reads bytes recorded under `recorded`: `given` when it can (as is or by
 * migration; otherwise SERIALIZER_INCOMPATIBLE), else a built-in, else undefined.
 */
export function readerFor<T>(
  recorded: SerializerSnapshot,
  given: Serializer<T> | undefined,
  what: string,
): Serializer<T> | undefined {
  if (given !== undefined) {
    const c = resolveCompatibility(recorded, given as Serializer<unknown>);
    if (c.kind === 'incompatible') {
      throw new StateMigrationError(
        'SERIALIZER_INCOMPATIBLE',
        `${what}: ${c.reason}. Pass a serializer that reads ${describeSerializer(recorded)}, or none to use the built-in one.`,
      );
    }
    return (c.kind === 'compatible-after-migration' ? c.reader : given) as Serializer<T>;
  }
  return builtinFor(recorded) as Serializer<T> | undefined;
}

/** A decoder for bytes recorded under `recorded` (TTL-wrapped values are unwrapped). */
export function fieldDecoder<T>(
  recorded: SerializerSnapshot | undefined,
  given: Serializer<T> | undefined,
  what: string,
): FieldDecoder<T> {
  const unknownSerializer: SerializerSnapshot = { id: 'unknown', version: 0 };
  const snap = recorded ?? unknownSerializer;
  const inner = ttlInnerSnapshot(snap);
  const target = inner ?? snap;
  const reader = recorded === undefined ? given : readerFor(target, given, what);
  const skip = inner === undefined ? 0 : 8;
  return {
    ttl: inner !== undefined,
    decode: (bytes) => {
      if (bytes.length < skip)
        throw new FormatError(
          'CORRUPT',
          `${what}: a TTL value needs at least 8 bytes, got ${bytes.length}; the snapshot is damaged.`,
        );
      const body = skip === 0 ? bytes : view(bytes).subarray(skip);
      if (reader === undefined) return new UndecodedBytes(target, Uint8Array.prototype.slice.call(body));
      try {
        return reader.deserialize(body);
      } catch (err) {
        if (err instanceof StreamStateError) throw err;
        throw new StreamStateError(
          'SERIALIZATION_FAILED',
          `${what}: serializer ${reader.id} cannot decode ${body.length} bytes: ${(err as Error).message}`,
          { cause: err },
        );
      }
    },
    timestamp: (bytes) => {
      if (bytes.length < 8)
        throw new FormatError(
          'CORRUPT',
          `${what}: a TTL value needs at least 8 bytes, got ${bytes.length}; the snapshot is damaged.`,
        );
      return view(bytes).readDoubleBE(0);
    },
  };
}
