import { murmur3 } from '../keygroups/murmur3.js';
import type { Serializer, SerializerSnapshot } from '../serializers/serializer.js';

/**
 * A serializer that claims a recorded identity (id, version, config) and keeps values as their
 * bytes. Tools restore state without the user's serializers through it: keys hash to the same key
 * groups (the hash is over the serialized bytes either way), and the backend's compatibility
 * check sees the serializer that wrote the data. Only for moving bytes, never for decoding them.
 */
export function opaqueSerializer(recorded: SerializerSnapshot): Serializer<Uint8Array> {
  return {
    id: recorded.id,
    version: recorded.version,
    ...(recorded.config === undefined ? {} : { config: recorded.config }),
    mapKey: 'bytes',
    serialize: (v) => v,
    deserialize: (b) => Buffer.from(b),
    copy: (v) => v,
    hash: (v) => murmur3(v),
  };
}
