import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  KeyGroupRange,
  defaultMaxParallelism,
  float64Serializer,
  int32Serializer,
  int64Serializer,
  keyGroupForKey,
  keyGroupRangeForSubtask,
  murmur3,
  murmur3Utf8,
  stringSerializer,
  subtaskForKeyGroup,
} from '../src/index.js';

// These vectors freeze the key -> key group function. It is baked into every snapshot:
// if one of them changes, every existing checkpoint and savepoint restores into the wrong subtasks.
describe('murmur3 (x86, 32-bit, seed 0)', () => {
  it('matches the published reference vectors', () => {
    expect(murmur3(Buffer.from(''))).toBe(0);
    expect(murmur3(Buffer.from('hello'))).toBe(0x248bfa47);
    expect(murmur3(Buffer.from('abc'))).toBe(0xb3dd93fa);
    expect(murmur3(Buffer.from('The quick brown fox jumps over the lazy dog'))).toBe(0x2e4ff723);
  });

  it('hashes strings without allocating exactly like hashing their UTF-8 bytes', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary' }), (s) => murmur3Utf8(s) === murmur3(Buffer.from(s, 'utf8'))));
  });
});

describe('key -> key group (maxParallelism 128)', () => {
  it('is frozen for the built-in key serializers', () => {
    const str = ['a', 'b', 'abc', 'hello', 'user-42', ''].map((k) => keyGroupForKey(k, stringSerializer, 128));
    expect(str).toEqual([50, 3, 122, 71, 80, 0]);
    const i32 = [0, 1, 2, 3, 42, -1].map((k) => keyGroupForKey(k, int32Serializer, 128));
    expect(i32).toEqual([94, 36, 79, 102, 78, 80]);
    const i64 = [0n, 42n, -1n].map((k) => keyGroupForKey(k, int64Serializer, 128));
    expect(i64).toEqual([124, 55, 104]);
    expect(keyGroupForKey(1.5, float64Serializer, 128)).toBe(21);
  });
});

describe('key-group ranges', () => {
  it('partition [0, maxP) exactly into contiguous near-equal ranges, inverse of subtaskForKeyGroup', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 32768 }), fc.integer({ min: 1, max: 300 }), (maxP, pRaw) => {
        const p = Math.min(pRaw, maxP);
        let next = 0;
        const sizes: number[] = [];
        for (let i = 0; i < p; i++) {
          const r = keyGroupRangeForSubtask(maxP, p, i);
          expect(r.start).toBe(next);
          sizes.push(r.size);
          next = r.end + 1;
          expect(subtaskForKeyGroup(maxP, p, r.start)).toBe(i);
          expect(subtaskForKeyGroup(maxP, p, r.end)).toBe(i);
        }
        expect(next).toBe(maxP);
        expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      }),
    );
  });

  it('uses the documented formula', () => {
    expect([0, 1, 2].map((i) => keyGroupRangeForSubtask(128, 3, i).toJSON())).toEqual([
      { start: 0, end: 42 },
      { start: 43, end: 85 },
      { start: 86, end: 127 },
    ]);
  });

  it('rejects parallelism above maxParallelism and out-of-range indices', () => {
    expect(() => keyGroupRangeForSubtask(128, 129, 0)).toThrow(
      expect.objectContaining({ code: 'PARALLELISM_INVALID' }),
    );
    expect(() => keyGroupRangeForSubtask(40000, 1, 0)).toThrow(
      expect.objectContaining({ code: 'PARALLELISM_INVALID' }),
    );
    expect(() => keyGroupRangeForSubtask(128, 2, 2)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('computes the default max parallelism', () => {
    expect([1, 100, 200, 1000, 30000].map(defaultMaxParallelism)).toEqual([128, 256, 512, 2048, 32768]);
  });

  it('intersects and iterates', () => {
    const r = new KeyGroupRange(10, 20);
    expect(r.intersection({ start: 15, end: 30 }).toJSON()).toEqual({ start: 15, end: 20 });
    expect(r.intersection({ start: 21, end: 30 }).isEmpty).toBe(true);
    expect([...new KeyGroupRange(3, 5)]).toEqual([3, 4, 5]);
    expect(KeyGroupRange.EMPTY.size).toBe(0);
  });
});
