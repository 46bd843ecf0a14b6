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
