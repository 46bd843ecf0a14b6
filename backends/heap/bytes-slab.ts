/**
 * Copies of small byte values packed into shared slabs, as Node's own Buffer pool does for
 * `Buffer.from` (8 KiB): one ArrayBuffer per 16 KiB instead of one per value. Millions of small
 * ArrayBuffers are external memory that drives full collections of the whole heap (copy-on-write
 * copies during a snapshot; the restore keeps views into its read blocks instead), and each
 * costs an allocation of its own (~1-70 µs under load against ~0.1 µs for a copy into a slab). A copy's `.buffer` is shared;
 * its bytes are not.
 */
const SLAB_BYTES = 16 * 1024;
/** Larger values get a buffer of their own. */
export const MAX_SLABBED = 1024;
let slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
let slabAt = 0;

/** A Buffer holding a copy of `src[start, end)`; `end - start` must be 1..MAX_SLABBED. */
export function slabCopy(src: Buffer, start: number, end: number): Buffer {
  const n = end - start;
  if (slabAt + n > SLAB_BYTES) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    slabAt = 0;
  }
  src.copy(slab, slabAt, start, end);
  const v = slab.subarray(slabAt, slabAt + n);
  slabAt = (slabAt + n + 7) & ~7; // keep views 8-byte aligned, as a fresh buffer would be
  return v;
}
