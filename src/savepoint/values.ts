import { builtinSerializers } from '../serializers/builtins.js';
import type { Serializer, SerializerSnapshot } from '../serializers/serializer.js';

/**
 * Decoding recorded bytes without user code: built-in serializers are found by id (and must match
 * the recorded version and config); anything else stays bytes (printed as base64).
 */

/** The built-in serializer that wrote bytes under `snapshot`, or undefined. */
export function builtinFor(snapshot: SerializerSnapshot | undefined): Serializer<unknown> | undefined {
  if (snapshot === undefined) return undefined;
  const s = builtinSerializers.get(snapshot.id);
  if (s === undefined || s.version !== snapshot.version) return undefined;
  if (JSON.stringify(s.config ?? null) !== JSON.stringify(snapshot.config ?? null)) return undefined;
  return s;
}

/** A JSON-safe picture of a decoded value: bigint, bytes, Map, Set, Date and non-finite numbers are tagged. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [k: string]: JsonValue };

export function toJson(value: unknown): JsonValue {
  if (value === null || value === undefined) return null;
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return value;
    case 'number':
      return Number.isFinite(value) ? value : { $number: String(value) };
    case 'bigint':
      return { $bigint: value.toString() };
    case 'object':
      break;
    default:
      return { $unsupported: typeof value };
  }
  if (value instanceof Uint8Array)
    return { $base64: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') };
  if (value instanceof Date) return { $date: Number.isNaN(value.getTime()) ? 'invalid' : value.toISOString() };
  if (value instanceof Map) return { $map: [...value].map(([k, v]) => [toJson(k), toJson(v)]) };
  if (value instanceof Set) return { $set: [...value].map(toJson) };
  if (Array.isArray(value)) return value.map(toJson);
  if (ArrayBuffer.isView(value))
    return { $base64: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64') };
  const out: { [k: string]: JsonValue } = {};
  for (const [k, v] of Object.entries(value)) out[k] = toJson(v);
  return out;
}

const TTL_ID = 'streamstate.ttl';
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The inner serializer snapshot recorded in a TTL serializer's config ({id, version, config?}). */
function ttlInner(snapshot: SerializerSnapshot): SerializerSnapshot | undefined {
  const c = snapshot.config;
  if (c === null || typeof c !== 'object' || Array.isArray(c)) return undefined;
  if (typeof c.id !== 'string' || typeof c.version !== 'number') return undefined;
  return c.config === undefined ? { id: c.id, version: c.version } : { id: c.id, version: c.version, config: c.config };
}

/**
 * A decoder to JSON for bytes written under `snapshot`, or undefined when no built-in can read
 * them. TTL-wrapped values (`streamstate.ttl`) decode as `{ ts, v }`. The decoder throws when
 * the bytes are not what the serializer writes.
 */
export function jsonDecoderFor(
  snapshot: SerializerSnapshot | undefined,
): ((bytes: Uint8Array) => JsonValue) | undefined {
  if (snapshot === undefined) return undefined;
  if (snapshot.id === TTL_ID && snapshot.version === 1) {
    const inner = jsonDecoderFor(ttlInner(snapshot));
    if (inner === undefined) return undefined;
    return (bytes) => {
      const b = asBuffer(bytes);
      if (b.length < 8) throw new RangeError(`a TTL value needs at least 8 bytes, got ${b.length}`);
      return { ts: b.readDoubleBE(0), v: inner(b.subarray(8)) };
    };
  }
  const s = builtinFor(snapshot);
  if (s === undefined) return undefined;
  // Strings: refuse invalid UTF-8 instead of decoding it to replacement characters.
  if (s.id === 'streamstate.string') return (bytes) => strictUtf8.decode(bytes);
  return (bytes) => toJson(s.deserialize(bytes));
}

/**
 * Decodes `bytes` with the built-in serializer of `snapshot` (JSON picture), else
 * `{ $serializer: <recorded id>, $base64 }` (a custom serializer degrades to its bytes). Throws
 * when a built-in cannot decode them.
 */
export function decodeToJson(bytes: Uint8Array, snapshot: SerializerSnapshot | undefined): JsonValue {
  const d = jsonDecoderFor(snapshot);
  if (d !== undefined) return d(bytes);
  const base64 = asBuffer(bytes).toString('base64');
  return snapshot === undefined ? { $base64: base64 } : { $serializer: snapshot.id, $base64: base64 };
}
