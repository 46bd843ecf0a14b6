import { Packr } from 'msgpackr';
import { StateRegistrationError, StreamStateError } from '../errors.js';
import { murmur3Utf8 } from '../keygroups/murmur3.js';
import { describeSerializer, type Serializer, type SerializerSnapshot } from './serializer.js';

function fail(id: string, value: unknown, expected: string): never {
  throw new StreamStateError(
    'SERIALIZATION_FAILED',
    `serializer ${id} cannot write ${typeof value} ${String(value).slice(0, 40)}: expected ${expected}. ` +
      'Pass a serializer that matches the value type in the state descriptor.',
  );
}

function view(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function checkLength(id: string, bytes: Uint8Array, n: number): void {
  if (bytes.length !== n) {
    throw new StreamStateError(
      'SERIALIZATION_FAILED',
      `serializer ${id} expected ${n} bytes but got ${bytes.length}; the data was written with another serializer.`,
    );
  }
}

const identity = <T>(v: T): T => v;

/** UTF-8 strings. */
export const stringSerializer: Serializer<string> = {
  id: 'streamstate.string',
  version: 1,
  mapKey: 'identity',
  serialize(v) {
    if (typeof v !== 'string') fail(this.id, v, 'a string');
    return Buffer.from(v, 'utf8');
  },
  deserialize: (b) => view(b).toString('utf8'),
  copy: identity,
  hash: (v) => murmur3Utf8(v),
};

/** IEEE-754 doubles, 8 bytes big-endian. */
export const float64Serializer: Serializer<number> = {
  id: 'streamstate.float64',
  version: 1,
  mapKey: 'identity',
  serialize(v) {
    if (typeof v !== 'number') fail(this.id, v, 'a number');
    const b = Buffer.allocUnsafe(8);
    b.writeDoubleBE(v, 0);
    return b;
  },
  deserialize(b) {
    checkLength(this.id, b, 8);
    return view(b).readDoubleBE(0);
  },
  copy: identity,
};

/** 32-bit signed integers, 4 bytes big-endian. */
export const int32Serializer: Serializer<number> = {
  id: 'streamstate.int32',
  version: 1,
  mapKey: 'identity',
  serialize(v) {
    if (!Number.isInteger(v) || v < -0x8000_0000 || v > 0x7fff_ffff) fail(this.id, v, 'an integer in int32 range');
    const b = Buffer.allocUnsafe(4);
    b.writeInt32BE(v, 0);
    return b;
  },
  deserialize(b) {
    checkLength(this.id, b, 4);
    return view(b).readInt32BE(0);
  },
  copy: identity,
};

/** 64-bit signed integers as bigint, 8 bytes big-endian. */
export const int64Serializer: Serializer<bigint> = {
  id: 'streamstate.int64',
  version: 1,
  mapKey: 'identity',
  serialize(v) {
    if (typeof v !== 'bigint' || v < -(2n ** 63n) || v >= 2n ** 63n) fail(this.id, v, 'a bigint in int64 range');
    const b = Buffer.allocUnsafe(8);
    b.writeBigInt64BE(v, 0);
    return b;
  },
  deserialize(b) {
    checkLength(this.id, b, 8);
    return view(b).readBigInt64BE(0);
  },
  copy: identity,
};

export const booleanSerializer: Serializer<boolean> = {
  id: 'streamstate.boolean',
  version: 1,
  mapKey: 'identity',
  serialize(v) {
    if (typeof v !== 'boolean') fail(this.id, v, 'a boolean');
    return Buffer.from([v ? 1 : 0]);
  },
  deserialize(b) {
    checkLength(this.id, b, 1);
    return b[0] !== 0;
  },
  copy: identity,
};

/** Raw bytes, written as they are. */
export const bytesSerializer: Serializer<Uint8Array> = {
  id: 'streamstate.bytes',
  version: 1,
  mapKey: 'bytes',
  serialize(v) {
    if (!(v instanceof Uint8Array)) fail(this.id, v, 'a Uint8Array');
    return v;
  },
  deserialize: (b) => Uint8Array.prototype.slice.call(b),
  copy: (v) => Uint8Array.prototype.slice.call(v),
};

/**
 * Structured values through msgpackr (plain objects, arrays, Map, Set, Date, bigint, typed arrays).
 * The default serializer for state values. Every value is self-describing and decodes without
 * shared structure definitions.
 */
export function msgpackSerializer<T = unknown>(): Serializer<T> {
  // Records on, without shared structures: each value carries its record definitions inline (so it
  // is self-describing and byte-deterministic), plain objects decode as objects and Maps as Maps.
  // (useRecords: false + mapsAsObjects: false decoded every plain object as a Map.)
  const packr = new Packr({ useRecords: true, moreTypes: true, variableMapSize: true });
  return {
    id: 'streamstate.msgpack',
    version: 1,
    mapKey: 'bytes',
    serialize(v) {
      try {
        return packr.pack(v);
      } catch (err) {
        throw new StreamStateError(
          'SERIALIZATION_FAILED',
          `msgpack cannot encode this value: ${(err as Error).message}`,
          { cause: err },
        );
      }
    },
    deserialize(b) {
      try {
        return packr.unpack(view(b)) as T;
      } catch (err) {
        throw new StreamStateError(
          'SERIALIZATION_FAILED',
          `msgpack cannot decode ${b.length} bytes: ${(err as Error).message}. The data is corrupt or was written with another serializer.`,
          { cause: err },
        );
      }
    },
    copy(v) {
      if (v === null || typeof v !== 'object') return v;
      return structuredClone(v);
    },
  };
}

const sharedMsgpack = msgpackSerializer();

/** The default serializer for values: msgpack. */
export function defaultSerializer<T>(): Serializer<T> {
  return sharedMsgpack as Serializer<T>;
}

/** Namespaces default to strings; the empty string is the "no namespace" (void) namespace. */
export const VOID_NAMESPACE = '';
export const defaultNamespaceSerializer: Serializer<string> = stringSerializer;

/** Built-in serializers by id, for tools that must decode a snapshot without user code (CLI dump). */
export const builtinSerializers: ReadonlyMap<string, Serializer<unknown>> = new Map<string, Serializer<unknown>>(
  [
    stringSerializer,
    float64Serializer,
    int32Serializer,
    int64Serializer,
    booleanSerializer,
    bytesSerializer,
    sharedMsgpack,
  ].map((s) => [s.id, s as Serializer<unknown>]),
);

/**
 * The serializer that decodes the namespaces of a restored state that is not registered again
 * (getKeys and friends run without its descriptor): the built-in one its metadata names, else
 * STATE_NOT_REGISTERED. One rule for every backend.
 */
export function restoredNamespaceSerializer(
  stateName: string,
  snap: SerializerSnapshot | undefined,
): Serializer<unknown> {
  const builtin = snap === undefined ? undefined : builtinSerializers.get(snap.id);
  if (snap === undefined || builtin === undefined || builtin.version !== snap.version) {
    throw new StateRegistrationError(
      'STATE_NOT_REGISTERED',
      `state "${stateName}" was restored with namespace serializer ${snap === undefined ? 'unknown' : describeSerializer(snap)}, which is not built in; register it with getState(descriptor) first.`,
    );
  }
  return builtin;
}
