/**
 * MurmurHash3, x86 32-bit variant, seed 0 by default. This function is baked into every snapshot
 * (it decides which key group a key belongs to): never change it. Test vectors in
 * test/keygroups.test.ts and docs/KEY-GROUPS.md.
 */
const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

function mixK(k: number): number {
  k = Math.imul(k, C1);
  k = (k << 15) | (k >>> 17);
  return Math.imul(k, C2);
}

function mixH(h: number, k: number): number {
  h ^= mixK(k);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function finish(h: number, length: number): number {
  h ^= length;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** murmur3_32 of a byte array; result is an unsigned 32-bit integer. */
export function murmur3(bytes: Uint8Array, seed = 0): number {
  return murmur3Range(bytes, 0, bytes.length, seed);
}

/** murmur3_32 of `bytes[start, end)` without creating a view (re-hashing keys in place). */
export function murmur3Range(bytes: Uint8Array, start: number, end: number, seed = 0): number {
  const len = end - start;
  const blocks = start + (len & ~3);
  let h = seed | 0;
  for (let i = start; i < blocks; i += 4) {
    const k = bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24);
    h = mixH(h, k);
  }
  const tail = len & 3;
  if (tail > 0) {
    let k = 0;
    if (tail === 3) k ^= bytes[blocks + 2] << 16;
    if (tail >= 2) k ^= bytes[blocks + 1] << 8;
    k ^= bytes[blocks];
    h ^= mixK(k);
  }
  return finish(h, len);
}

/**
 * murmur3_32 of the UTF-8 bytes of `s`, without allocating them when `s` is ASCII.
 * Equal to murmur3(Buffer.from(s, 'utf8')).
 */
export function murmur3Utf8(s: string, seed = 0): number {
  // One pass: hash the char codes as bytes, and fall back to real UTF-8 at the first non-ASCII char.
  const len = s.length;
  const blocks = len & ~3;
  let h = seed | 0;
  for (let i = 0; i < blocks; i += 4) {
    const c0 = s.charCodeAt(i);
    const c1 = s.charCodeAt(i + 1);
    const c2 = s.charCodeAt(i + 2);
    const c3 = s.charCodeAt(i + 3);
    if ((c0 | c1 | c2 | c3) >= 0x80) return murmur3(Buffer.from(s, 'utf8'), seed);
    h = mixH(h, c0 | (c1 << 8) | (c2 << 16) | (c3 << 24));
  }
  const tail = len & 3;
  if (tail > 0) {
    let k = 0;
    let any = 0;
    if (tail === 3) {
      const c = s.charCodeAt(blocks + 2);
      any |= c;
      k ^= c << 16;
    }
    if (tail >= 2) {
      const c = s.charCodeAt(blocks + 1);
      any |= c;
      k ^= c << 8;
    }
    const c = s.charCodeAt(blocks);
    any |= c;
    if (any >= 0x80) return murmur3(Buffer.from(s, 'utf8'), seed);
    k ^= c;
    h ^= mixK(k);
  }
  return finish(h, len);
}
