import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isStreamStateError } from '../../src/errors.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';

describe('MemoryBlobStore specifics', () => {
  it('location is memory://<name>; named() returns the same store in this process', async () => {
    const a = new MemoryBlobStore({ name: 'reg-test-1' });
    try {
      expect(a.location).toBe('memory://reg-test-1');
      await a.put('x', Buffer.from('kept'));
      const b = MemoryBlobStore.named('reg-test-1');
      expect(b).toBe(a);
      expect((await b.get('x')).toString()).toBe('kept');
    } finally {
      a.destroy();
    }
    expect(MemoryBlobStore.exists('reg-test-1')).toBe(false);
  });

  it('a second store with a taken name is refused', () => {
    const a = new MemoryBlobStore({ name: 'reg-test-2' });
    try {
      expect(() => new MemoryBlobStore({ name: 'reg-test-2' })).toThrow(
        expect.objectContaining({ code: 'ALREADY_EXISTS' }),
      );
    } finally {
      a.destroy();
    }
  });

  it('default names are unique', () => {
    const a = new MemoryBlobStore();
    const b = new MemoryBlobStore();
    expect(a.location).not.toBe(b.location);
    a.destroy();
    b.destroy();
  });

  it('maxObjectBytes: put and putStream over the limit fail with SNAPSHOT_TOO_LARGE and store nothing', async () => {
    const s = new MemoryBlobStore({ maxObjectBytes: 100 });
    try {
      await s.put('ok', Buffer.alloc(100));
      const err = await s.put('big', Buffer.alloc(101)).catch((e: unknown) => e);
      expect(isStreamStateError(err, 'SNAPSHOT_TOO_LARGE')).toBe(true);
      expect((err as Error).message).toMatch(/raise maxSnapshotBytes or use the filesystem backend/);
      async function* gen(): AsyncGenerator<Uint8Array> {
        for (let i = 0; i < 5; i++) yield Buffer.alloc(30);
      }
      await expect(s.putStream('big2', gen())).rejects.toMatchObject({ code: 'SNAPSHOT_TOO_LARGE' });
      expect(await s.stat('big')).toBeNull();
      expect(await s.stat('big2')).toBeNull();
    } finally {
      s.destroy();
    }
  });

  it('returned buffers are copies', async () => {
    const s = new MemoryBlobStore();
    await s.put('x', Buffer.from('abc'));
    (await s.get('x')).fill(0);
    expect((await s.get('x')).toString()).toBe('abc');
    s.destroy();
  });
});

describe('MemoryBlobStore streams (pages)', () => {
  const MiB = 1024 * 1024;
  /** `n` bytes of a pattern that differs per `seed`, handed over in chunks of `chunk` bytes from one reused buffer. */
  async function* stream(n: number, seed: number, chunk = 256 * 1024): AsyncGenerator<Uint8Array> {
    const buf = Buffer.alloc(chunk);
    for (let at = 0; at < n; at += chunk) {
      const len = Math.min(chunk, n - at);
      for (let i = 0; i < len; i++) buf[i] = (at + i) * 31 + seed;
      yield buf.subarray(0, len);
    }
  }
  const expected = (n: number, seed: number): Buffer => {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = i * 31 + seed;
    return b;
  };

  it('any range of a multi-page stream reads back as written', async () => {
    const s = new MemoryBlobStore();
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: 0, max: 3 * MiB }),
          fc.integer({ min: 1, max: 700_000 }),
          fc.nat(),
          fc.nat(),
          async (size, chunk, a, b) => {
            expect(await s.putStream('x', stream(size, 7, chunk))).toBe(size);
            const want = expected(size, 7);
            expect((await s.get('x')).equals(want)).toBe(true);
            const offset = size === 0 ? 0 : a % (size + 1);
            const length = b % (size + 2);
            const got = await s.getRange('x', offset, length);
            expect(got.equals(want.subarray(offset, offset + length))).toBe(true);
            expect(await s.stat('x')).toMatchObject({ size });
          },
        ),
        { numRuns: 25 },
      );
    } finally {
      s.destroy();
    }
  });

  it('a stream after a deleted or overwritten one reuses its pages: no new memory, and nothing shared with live objects', async () => {
    const s = new MemoryBlobStore();
    const dir = await mkdtemp(join(tmpdir(), 'mem-store-'));
    try {
      await s.putStream('chk-1/state', stream(3 * MiB + 5, 1));
      await s.putStream('chk-2/state', stream(3 * MiB + 5, 2));
      const allocated = s.pagesAllocated;
      expect(allocated).toBe(7); // 4 pages each, the second one taking the first one's trimmed tail page
      await s.delete(['chk-1/state']);
      await s.putStream('chk-3/state', stream(3 * MiB + 5, 3));
      expect(s.pagesAllocated).toBe(allocated);
      // Overwritten: the old object is readable until the new one is complete, then its pages go back.
      await s.putStream('chk-3/state', stream(3 * MiB + 5, 4));
      const afterOverwrite = s.pagesAllocated;
      await s.putStream('chk-x/state', stream(3 * MiB + 5, 6));
      expect(s.pagesAllocated).toBe(afterOverwrite);
      await s.delete(['chk-x/state']);
      expect((await s.get('chk-2/state')).equals(expected(3 * MiB + 5, 2))).toBe(true);
      expect((await s.get('chk-3/state')).equals(expected(3 * MiB + 5, 4))).toBe(true);
      // A download in flight keeps its pages even if the object is deleted and another stream written meanwhile.
      const downloading = s.download('chk-2/state', join(dir, 'state'));
      await s.delete(['chk-2/state']);
      await s.putStream('chk-4/state', stream(3 * MiB + 5, 5));
      await downloading;
      expect((await readFile(join(dir, 'state'))).equals(expected(3 * MiB + 5, 2))).toBe(true);
      expect((await s.get('chk-4/state')).equals(expected(3 * MiB + 5, 5))).toBe(true);
    } finally {
      s.destroy();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('new pages come already faulted in by a worker: a stream after the worker caught up takes them from its stock', async () => {
    const s = new MemoryBlobStore();
    try {
      // The first new page starts the worker (that page itself may be a fresh one).
      await s.putStream('chk-1/state', stream(MiB, 1));
      await MemoryBlobStore.prefaultSettled();
      const before = MemoryBlobStore.prefaultedPages;
      await s.putStream('chk-2/state', stream(3 * MiB, 2, 300_000));
      expect(MemoryBlobStore.prefaultedPages - before).toBe(3);
      expect((await s.get('chk-1/state')).equals(expected(MiB, 1))).toBe(true);
      expect((await s.get('chk-2/state')).equals(expected(3 * MiB, 2))).toBe(true);
    } finally {
      s.destroy();
    }
  });

  it('the worker also allocates the pages: while it keeps up, the loop maps no page memory', async () => {
    const s = new MemoryBlobStore();
    const Real = globalThis.SharedArrayBuffer;
    let onLoop = 0;
    try {
      await s.putStream('chk-1/state', stream(MiB, 1)); // starts the worker
      await MemoryBlobStore.prefaultSettled();
      globalThis.SharedArrayBuffer = new Proxy(Real, {
        construct(target, args: [number]) {
          onLoop++;
          return new target(...args);
        },
      });
      await s.putStream('chk-2/state', stream(3 * MiB, 2, 300_000));
      globalThis.SharedArrayBuffer = Real;
      // Three pages taken from the stock and the stock topped up again, none of it allocated here.
      expect(onLoop).toBe(0);
      await MemoryBlobStore.prefaultSettled();
      expect((await s.get('chk-2/state')).equals(expected(3 * MiB, 2))).toBe(true);
    } finally {
      globalThis.SharedArrayBuffer = Real;
      s.destroy();
    }
  });

  it('a failed stream stores nothing and gives its pages back', async () => {
    const s = new MemoryBlobStore({ maxObjectBytes: 2 * MiB });
    try {
      await s.putStream('ok', stream(2 * MiB, 1));
      await s.delete(['ok']);
      await expect(s.putStream('big', stream(3 * MiB, 2))).rejects.toMatchObject({ code: 'SNAPSHOT_TOO_LARGE' });
      expect(await s.stat('big')).toBeNull();
      await s.putStream('ok', stream(2 * MiB, 3));
      expect(s.pagesAllocated).toBe(2);
      expect((await s.get('ok')).equals(expected(2 * MiB, 3))).toBe(true);
    } finally {
      s.destroy();
    }
  });
});
