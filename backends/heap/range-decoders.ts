import { bytesSerializer, stringSerializer } from '../../src/serializers/builtins.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import type { IdCodec } from './ids.js';

/**
 * Restore-side decoding straight from byte ranges of a read block: no view, entry object or
 * generator per field (the restore used to build three Buffer views and an object per entry).
 * Decoded values equal what `serializer.deserialize` returns.
 */
export type RangeDecode = (buf: Buffer, start: number, end: number) => unknown;

/**
 * bytesSerializer.deserialize for a range, without a copy: the value is a view into the block
 * the restore read, as a raw msgpack decode gives. The restore keeps each read block as it is
 * until its states are registered (restore.ts: raw sections are views into it), so it already
 * relies on the block being its own; once the state is registered its raw sections are dropped
 * and nothing else reads those bytes, so a view's bytes belong to the value alone (its `.buffer`
 * is shared, as with pooled Buffers). A copy per value (one ArrayBuffer
 * each, or 16 KiB slabs) allocated the whole state a second time as external memory, and each
 * 64 MB of it started a full collection of the growing heap: at 1 GB half the restore's time was
 * garbage collection. Like slab copies, a read stays allocated while any value read from it is
 * live (at worst the restored bytes stay held until every value read from them is replaced; the
 * restore reads each handle's blocks at once, restore.ts).
 */
function bytesView(buf: Buffer, start: number, end: number): Uint8Array {
  return start === end ? Buffer.alloc(0) : buf.subarray(start, end);
}

const utf8: RangeDecode = (buf, start, end) => buf.toString('utf8', start, end);

/** Decodes a range as `serializer.deserialize(buf.subarray(start, end))` would. */
export function rangeDecoder(serializer: Serializer<unknown>): RangeDecode {
  if (serializer === (stringSerializer as Serializer<unknown>)) return utf8;
  if (serializer === (bytesSerializer as Serializer<unknown>)) return bytesView;
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
