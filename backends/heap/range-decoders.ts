import { bytesSerializer, stringSerializer } from '../../src/serializers/builtins.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import { MAX_SLABBED, slabCopy } from './bytes-slab.js';
import type { IdCodec } from './ids.js';

/**
 * Restore-side decoding straight from byte ranges of a read block: no view, entry object or
 * generator per field (the restore used to build three Buffer views and an object per entry),
 * and small `bytes` values copied into shared slabs rather than one ArrayBuffer each (millions of
 * small ArrayBuffers are external memory, which drives full garbage collections of the whole heap
 * while it grows). Decoded values equal what `serializer.deserialize` returns.
 */
export type RangeDecode = (buf: Buffer, start: number, end: number) => unknown;

/**
 * bytesSerializer.deserialize for a range: a copy (a Buffer of its own bytes). Small values are
 * views into a slab (bytes-slab.ts), as `Buffer.from` gives for small inputs.
 */
function bytesCopy(buf: Buffer, start: number, end: number): Uint8Array {
  const n = end - start;
  if (n === 0 || n > MAX_SLABBED) return bytesSerializer.deserialize(buf.subarray(start, end));
  return slabCopy(buf, start, end);
}

const utf8: RangeDecode = (buf, start, end) => buf.toString('utf8', start, end);

/** Decodes a range as `serializer.deserialize(buf.subarray(start, end))` would. */
export function rangeDecoder(serializer: Serializer<unknown>): RangeDecode {
  if (serializer === (stringSerializer as Serializer<unknown>)) return utf8;
  if (serializer === (bytesSerializer as Serializer<unknown>)) return bytesCopy;
  return (buf, start, end) => serializer.deserialize(buf.subarray(start, end));
}

/** `codec.idFromBytes(buf.subarray(start, end), reader)` without the view where the id needs none. */
export function idRangeDecoder(codec: IdCodec<unknown>, reader: Serializer<unknown>): RangeDecode {
  if (!codec.identity && reader === codec.serializer) return (buf, start, end) => buf.toString('latin1', start, end);
  // UTF-8 decoding never yields lone surrogates, so the decoded string is its own identity id.
  if (codec.identity && reader === (stringSerializer as Serializer<unknown>)) return utf8;
  const decode = rangeDecoder(reader);
  return (buf, start, end) => codec.id(decode(buf, start, end));
}

/** A decoder that reuses the previous id while consecutive ranges hold the same bytes (namespaces). */
export function cachedIdRangeDecoder(decode: RangeDecode): RangeDecode {
  let lastBuf: Buffer | null = null;
  let lastStart = 0;
  let lastEnd = 0;
  let lastId: unknown;
  return (buf, start, end) => {
    if (
      lastBuf !== null &&
      end - start === lastEnd - lastStart &&
      sameBytes(buf, start, lastBuf, lastStart, end - start)
    )
      return lastId;
    lastId = decode(buf, start, end);
    lastBuf = buf;
    lastStart = start;
    lastEnd = end;
    return lastId;
  };
}

function sameBytes(a: Buffer, aStart: number, b: Buffer, bStart: number, n: number): boolean {
  if (n > 32) return a.compare(b, bStart, bStart + n, aStart, aStart + n) === 0;
  for (let i = 0; i < n; i++) if (a[aStart + i] !== b[bStart + i]) return false;
  return true;
}
