import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FileStreamHandle } from '../../src/backend/handles.js';
import {
  BlobCheckpointStreamFactory,
  BlobStateFileReader,
  readStreamHandle,
  resolveHandlePath,
} from '../../src/checkpoint/streams.js';
import { isStreamStateError } from '../../src/errors.js';
import { LocalBlobStore } from '../../src/storage/local-blob-store.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';

function pattern(n: number, seed = 3): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

describe('checkpoint streams', () => {
  let store: MemoryBlobStore;
  let scratch: string;
  const factory = (inlineThreshold = 100, baseDir = 'job/chk-1', sharedDir = 'job/shared') =>
    new BlobCheckpointStreamFactory({ store, baseDir, sharedDir, inlineThreshold });

  beforeEach(async () => {
    store = new MemoryBlobStore();
    scratch = await mkdtemp(join(tmpdir(), 'ss-streams-'));
  });
  afterEach(async () => {
    store.destroy();
    await rm(scratch, { recursive: true, force: true });
  });

  it('nothing written → null handle, no file', async () => {
    const s = factory().createOutputStream('exclusive');
    expect(await s.closeAndGetHandle()).toBeNull();
    expect(await store.list('')).toEqual([]);
  });

  it('up to the threshold → inline handle with size and crc32; exactly at threshold is still inline', async () => {
    const s = factory(100).createOutputStream('exclusive');
    const data = pattern(100);
    await s.write(data.subarray(0, 40));
    await s.write(data.subarray(40));
    expect(s.position).toBe(100);
    const h = await s.closeAndGetHandle();
    expect(h).toEqual({ type: 'inline', data: data.toString('base64'), size: 100, crc32: crc32(data) });
    expect(await store.list('')).toEqual([]);
    expect(Buffer.compare(await readStreamHandle(h!, new BlobStateFileReader(store, 'job/chk-1')), data)).toBe(0);
  });

  it('over the threshold → file handle relative to the base dir, bytes and crc32 match', async () => {
    const s = factory(100).createOutputStream('exclusive');
    const data = pattern(1_000_000);
    // many small writes, some large ones, reusing one caller buffer to prove chunks are copied
    const scratchBuf = Buffer.alloc(700_000);
    let off = 0;
    for (const n of [10, 50, 90, 1, 300_000, 7, 650_000]) {
      const len = Math.min(n, data.length - off);
      data.copy(scratchBuf, 0, off, off + len);
      await s.write(scratchBuf.subarray(0, len));
      scratchBuf.fill(0xee, 0, len);
      off += len;
    }
    await s.write(data.subarray(off));
    const h = (await s.closeAndGetHandle()) as FileStreamHandle;
    expect(h.type).toBe('file');
    expect(h.path).toMatch(/^[0-9a-f]{32}$/);
    expect(h.size).toBe(data.length);
    expect(h.crc32).toBe(crc32(data));
    const stored = await store.get(`job/chk-1/${h.path}`);
    expect(Buffer.compare(stored, data)).toBe(0);
    const reader = new BlobStateFileReader(store, 'job/chk-1');
    expect(Buffer.compare(await reader.read(h), data)).toBe(0);
    expect(Buffer.compare(await reader.readRange(h, 12345, 100), data.subarray(12345, 12445))).toBe(0);
  });

  it('threshold 0 always writes files', async () => {
    const s = factory(0).createOutputStream('exclusive');
    await s.write(Buffer.from('x'));
    const h = await s.closeAndGetHandle();
    expect(h?.type).toBe('file');
  });

  it('shared scope → ../shared/<name> for checkpoints; savepoints (base = shared) get plain names', async () => {
    const s = factory(0).createOutputStream('shared');
    await s.write(Buffer.from('shared bytes'));
    const h = (await s.closeAndGetHandle()) as FileStreamHandle;
    expect(h.path).toMatch(/^\.\.\/shared\/[0-9a-f]{32}$/);
    expect((await store.get(resolveHandlePath('job/chk-1', h.path))).toString()).toBe('shared bytes');
    expect((await store.list('job/shared/')).length).toBe(1);

    const sp = factory(0, 'savepoint-abc', 'savepoint-abc').createOutputStream('shared');
    await sp.write(Buffer.from('sp'));
    const hs = (await sp.closeAndGetHandle()) as FileStreamHandle;
    expect(hs.path).toMatch(/^[0-9a-f]{32}$/);
    expect((await store.get(`savepoint-abc/${hs.path}`)).toString()).toBe('sp');
  });

  it('discard deletes the partial file, is idempotent, and later writes fail SNAPSHOT_CANCELLED', async () => {
    const s = factory(10).createOutputStream('exclusive');
    await s.write(pattern(600_000));
    await s.discard();
    await s.discard();
    expect(await store.list('')).toEqual([]);
    await expect(s.write(Buffer.from('x'))).rejects.toMatchObject({ code: 'SNAPSHOT_CANCELLED' });
    await expect(s.closeAndGetHandle()).rejects.toMatchObject({ code: 'SNAPSHOT_CANCELLED' });
  });

  it('discard while a write waits on backpressure releases it with SNAPSHOT_CANCELLED', async () => {
    // A store whose putStream never consumes: writes pile up until the high-water mark.
    let stalled = false;
    const stuck = Object.create(store) as MemoryBlobStore;
    stuck.putStream = (_name, data) =>
      new Promise<number>((_resolve, reject) => {
        stalled = true;
        void (async () => {
          try {
            // wait for the abort without reading chunks
            const it = data[Symbol.asyncIterator]();
            await new Promise((r) => setTimeout(r, 50));
            await it.next();
            await it.next();
          } catch (err) {
            reject(err);
          }
        })();
      });
    const f = new BlobCheckpointStreamFactory({
      store: stuck,
      baseDir: 'j/chk-1',
      sharedDir: 'j/shared',
      inlineThreshold: 0,
    });
    const s = f.createOutputStream('exclusive');
    const writing = (async () => {
      for (let i = 0; i < 20; i++) await s.write(pattern(300_000));
    })().then(
      () => null,
      (e: unknown) => e,
    );
    await new Promise((r) => setTimeout(r, 20));
    expect(stalled).toBe(true);
    await s.discard();
    expect(isStreamStateError(await writing, 'SNAPSHOT_CANCELLED')).toBe(true);
  });

  it('a store failure surfaces from write/close and deletes the partial file', async () => {
    const small = new MemoryBlobStore({ maxObjectBytes: 1000 });
    try {
      const f = new BlobCheckpointStreamFactory({
        store: small,
        baseDir: 'j/chk-1',
        sharedDir: 'j/shared',
        inlineThreshold: 10,
      });
      const s = f.createOutputStream('exclusive');
      let err: unknown;
      try {
        await s.write(pattern(500));
        await s.write(pattern(600));
        await s.closeAndGetHandle();
      } catch (e) {
        err = e;
      }
      expect(isStreamStateError(err, 'SNAPSHOT_TOO_LARGE')).toBe(true);
      expect(await small.list('')).toEqual([]);
    } finally {
      small.destroy();
    }
  });

  it('writing after close is refused', async () => {
    const s = factory().createOutputStream('exclusive');
    await s.write(Buffer.from('a'));
    await s.closeAndGetHandle();
    await expect(s.write(Buffer.from('b'))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('uploadFile streams a local file with crc, keeps the name, and discardFiles deletes it', async () => {
    const local = join(scratch, '000123.ldb');
    const data = pattern(3_000_000, 5);
    await writeFile(local, data);
    const f = factory();
    const h = await f.uploadFile(local, 'shared', '000123.ldb');
    expect(h.path).toMatch(/^\.\.\/shared\/[0-9a-f]{16}-000123\.ldb$/);
    expect(h.size).toBe(data.length);
    expect(h.crc32).toBe(crc32(data));
    const h2 = await f.uploadFile(local, 'exclusive');
    expect(h2.path).toMatch(/^[0-9a-f]{32}$/);
    const reader = new BlobStateFileReader(store, 'job/chk-1');
    const out = join(scratch, 'restored', 'x.ldb');
    await reader.download(h, out);
    expect(Buffer.compare(await readFile(out), data)).toBe(0);
    await f.discardFiles([h, h2]);
    await f.discardFiles([h, h2]);
    expect(await store.list('')).toEqual([]);
  });

  it('uploadFile of a missing local file → NOT_FOUND; bad names → INVALID_ARGUMENT', async () => {
    await expect(factory().uploadFile(join(scratch, 'nope'), 'exclusive')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(factory().uploadFile(join(scratch, 'nope'), 'exclusive', 'a/b')).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });
});

describe('state file reader verification', () => {
  let dir: string;
  let store: LocalBlobStore;
  let h: FileStreamHandle;
  const data = pattern(50_000, 9);

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ss-reader-'));
    store = new LocalBlobStore(dir);
    const f = new BlobCheckpointStreamFactory({
      store,
      baseDir: 'job/chk-2',
      sharedDir: 'job/shared',
      inlineThreshold: 0,
    });
    const s = f.createOutputStream('exclusive');
    await s.write(data);
    h = (await s.closeAndGetHandle()) as FileStreamHandle;
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a flipped bit → CHECKSUM_MISMATCH naming the file (read and download)', async () => {
    const bad = Buffer.from(data);
    bad[777] ^= 0x10;
    await store.put(`job/chk-2/${h.path}`, bad);
    const reader = new BlobStateFileReader(store, 'job/chk-2');
    const err = await reader.read(h).catch((e: unknown) => e);
    expect(isStreamStateError(err, 'CHECKSUM_MISMATCH')).toBe(true);
    expect((err as Error).message).toContain(h.path);
    const out = join(dir, 'dl');
    await expect(reader.download(h, out)).rejects.toMatchObject({ code: 'CHECKSUM_MISMATCH' });
    await expect(readFile(out)).rejects.toMatchObject({ code: 'ENOENT' }); // a bad download is removed
  });

  it('a short file → TRUNCATED (read, readRange past the cut)', async () => {
    await store.put(`job/chk-2/${h.path}`, data.subarray(0, 1000));
    const reader = new BlobStateFileReader(store, 'job/chk-2');
    await expect(reader.read(h)).rejects.toMatchObject({ code: 'TRUNCATED' });
    await expect(reader.readRange(h, 900, 200)).rejects.toMatchObject({ code: 'TRUNCATED' });
    expect((await reader.readRange(h, 0, 10)).length).toBe(10);
  });

  it('a range outside the recorded size → CORRUPT; a missing file → NOT_FOUND', async () => {
    const reader = new BlobStateFileReader(store, 'job/chk-2');
    await expect(reader.readRange(h, data.length - 5, 10)).rejects.toMatchObject({ code: 'CORRUPT' });
    await store.delete([`job/chk-2/${h.path}`]);
    await expect(reader.read(h)).rejects.toMatchObject({ code: 'NOT_FOUND' });
  });

  it('paths escaping the store root are refused; describe gives location + path', () => {
    const reader = new BlobStateFileReader(store, 'job/chk-2');
    const escaping = { ...h, path: '../../../etc/passwd' };
    expect(() => resolveHandlePath('job/chk-2', escaping.path)).toThrow(expect.objectContaining({ code: 'CORRUPT' }));
    expect(() => resolveHandlePath('job/chk-2', '/abs')).toThrow(expect.objectContaining({ code: 'CORRUPT' }));
    expect(resolveHandlePath('job/chk-2', '../shared/x')).toBe('job/shared/x');
    expect(reader.describe(h)).toBe(`${dir}/job/chk-2/${h.path}`);
    return expect(reader.read(escaping)).rejects.toMatchObject({ code: 'CORRUPT' });
  });
});
