import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileStreamHandle } from '../../src/backend/handles.js';
import { BlobCheckpointStreamFactory, BlobStateFileReader } from '../../src/checkpoint/streams.js';
import type { BlobStore } from '../../src/storage/blob-store.js';
import { ForwardingBlobStore } from '../../src/storage/forwarding-blob-store.js';
import { LocalBlobStore } from '../../src/storage/local-blob-store.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';

/**
 * Checkpoint streams recycle their batch buffers only with a store that declares
 * `releasesStreamChunks` (it is done with a chunk once it asks for the next): the bytes stored
 * are exactly the bytes written, whichever way the store treats its chunks, for writes that
 * straddle batches, large single writes and a caller that reuses its own buffer.
 */

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 131 + seed * 7 + (i >>> 9)) & 0xff;
  return b;
}

/** Keeps every chunk it was handed (no copy) and joins them at the end: sees any reuse of a chunk's memory. */
class KeepingStore extends ForwardingBlobStore {
  kept: Uint8Array[] = [];
  constructor(
    inner: BlobStore,
    override readonly releasesStreamChunks: boolean,
  ) {
    super(inner);
  }
  override async putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    this.kept = [];
    for await (const chunk of data) this.kept.push(chunk);
    return this.inner.putStream(name, this.replay());
  }
  private async *replay(): AsyncGenerator<Uint8Array> {
    yield* this.kept;
  }
}

/** Copies each chunk as it arrives (what a releasing store may rely on) and checks the copy against the final bytes. */
class CopyingStore extends ForwardingBlobStore {
  override readonly releasesStreamChunks = true;
  copies: Buffer[] = [];
  readonly memories = new Set<ArrayBufferLike>();
  override async putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    this.copies = [];
    for await (const chunk of data) {
      this.copies.push(Buffer.from(chunk));
      this.memories.add(chunk.buffer);
    }
    return this.inner.putStream(name, this.replay());
  }
  private async *replay(): AsyncGenerator<Uint8Array> {
    yield* this.copies;
  }
}

/** Writes `total` bytes in pieces of the given sizes through one reused caller buffer; returns what was meant. */
async function writeThrough(
  store: BlobStore,
  sizes: readonly number[],
  total: number,
): Promise<{ expected: Buffer; handle: FileStreamHandle }> {
  const factory = new BlobCheckpointStreamFactory({
    store,
    baseDir: 'job/chk-1',
    sharedDir: 'job/shared',
    inlineThreshold: 100,
  });
  const stream = factory.createOutputStream('exclusive');
  const expected = pattern(total, sizes.length);
  const scratch = Buffer.alloc(Math.max(...sizes));
  for (let at = 0, k = 0; at < total; k++) {
    const n = Math.min(sizes[k % sizes.length], total - at);
    expected.copy(scratch, 0, at, at + n);
    await stream.write(scratch.subarray(0, n));
    scratch.fill(0xee); // the caller may reuse its buffer once write resolved
    at += n;
  }
  const handle = await stream.closeAndGetHandle();
  expect(handle?.type).toBe('file');
  return { expected, handle: handle as FileStreamHandle };
}

const SIZES = [3 * 1024 * 1024 + 17, 700, 256 * 1024, 1024 * 1024, 5000, 2 * 1024 * 1024 - 3];
const TOTAL = 11 * 1024 * 1024 + 12345;

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'ss-chunk-reuse-'));
});
afterAll(() => rm(root, { recursive: true, force: true }));

describe('checkpoint stream chunk reuse', () => {
  it('local and memory stores declare that they release chunks; a forwarding store only while putStream is not watched', () => {
    const local = new LocalBlobStore(join(root, 'declared'));
    const memory = new MemoryBlobStore();
    expect(local.releasesStreamChunks).toBe(true);
    expect(memory.releasesStreamChunks).toBe(true);
    expect(new ForwardingBlobStore(local).releasesStreamChunks).toBe(true);
    expect(new KeepingStore(local, false).releasesStreamChunks).toBe(false);
    memory.destroy();
  });

  for (const kind of ['local', 'memory'] as const) {
    it(`${kind} store: the file holds exactly the bytes written, with recycled batches`, async () => {
      const store = kind === 'local' ? new LocalBlobStore(join(root, kind)) : new MemoryBlobStore();
      const { expected, handle } = await writeThrough(store, SIZES, TOTAL);
      const read = await new BlobStateFileReader(store, 'job/chk-1').read(handle);
      expect(read.equals(expected)).toBe(true);
      if (store instanceof MemoryBlobStore) store.destroy();
    });
  }

  it('a store that keeps the chunks it was given (no releasesStreamChunks) gets chunks nobody reuses', async () => {
    const memory = new MemoryBlobStore();
    const store = new KeepingStore(memory, false);
    const { expected, handle } = await writeThrough(store, SIZES, TOTAL);
    expect(Buffer.concat(store.kept).equals(expected)).toBe(true);
    expect(new Set(store.kept.map((c) => c.buffer)).size).toBe(store.kept.length);
    expect((await new BlobStateFileReader(memory, 'job/chk-1').read(handle)).equals(expected)).toBe(true);
    memory.destroy();
  });

  it('a releasing store sees each chunk intact until it asks for the next, and the batches are reused', async () => {
    const memory = new MemoryBlobStore();
    const store = new CopyingStore(memory);
    const { expected, handle } = await writeThrough(store, SIZES, TOTAL);
    expect(Buffer.concat(store.copies).equals(expected)).toBe(true);
    // 11 MiB went through in 1 MiB batches held by far fewer buffers.
    expect(store.copies.length).toBeGreaterThan(10);
    expect(store.memories.size).toBeLessThan(4);
    expect((await new BlobStateFileReader(memory, 'job/chk-1').read(handle)).equals(expected)).toBe(true);
    memory.destroy();
  });
});
