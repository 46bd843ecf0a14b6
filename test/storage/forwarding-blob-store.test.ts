import { describe, expect, it } from 'vitest';
import { ForwardingBlobStore } from '../../src/storage/forwarding-blob-store.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';
import type { BlobStore } from '../../src/storage/blob-store.js';

describe('ForwardingBlobStore', () => {
  it('passes every call through, the optional ones included, and an override sees only its own', async () => {
    const inner = new MemoryBlobStore();
    const seen: string[] = [];
    class Watching extends ForwardingBlobStore {
      override put(name: string, data: Uint8Array): Promise<void> {
        seen.push(name);
        return super.put(name, data);
      }
    }
    const store = new Watching(inner);
    expect(store.location).toBe(inner.location);
    await store.put('a/x', Buffer.from('one'));
    await store.putAtomic('a/y', Buffer.from('two'));
    expect(
      await store.putStream(
        'a/z',
        (async function* () {
          yield Buffer.from('thr');
          yield Buffer.from('ee');
        })(),
      ),
    ).toBe(5);
    expect(seen).toEqual(['a/x']);
    expect((await inner.get('a/y')).toString()).toBe('two');
    expect((await store.getRange('a/z', 1, 3)).toString()).toBe('hre');
    expect((await store.list('a/')).map((b) => b.name).sort()).toEqual(['a/x', 'a/y', 'a/z']);
    expect((await store.stat('a/x'))?.size).toBe(3);
    await store.delete(['a/x']);
    expect(await inner.stat('a/x')).toBeNull();
    // Optional calls: entropy names are the inner store's, and close reaches it.
    let closed = false;
    const withOptional: BlobStore = Object.assign(new MemoryBlobStore(), {
      dataFileName: (n: string) => `e/${n}`,
      close: async () => void (closed = true),
    });
    const wrapped = new ForwardingBlobStore(withOptional);
    expect(wrapped.dataFileName?.('chk-1/f')).toBe('e/chk-1/f');
    await wrapped.close();
    expect(closed).toBe(true);
    expect(new ForwardingBlobStore(inner).dataFileName).toBeUndefined();
  });
});
