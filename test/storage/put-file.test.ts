import { existsSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobCheckpointStreamFactory, BlobStateFileReader } from '../../src/checkpoint/streams.js';
import { StorageError } from '../../src/errors.js';
import type { BlobStore } from '../../src/storage/blob-store.js';
import { ForwardingBlobStore } from '../../src/storage/forwarding-blob-store.js';
import { LocalBlobStore, type DurabilityEvent } from '../../src/storage/local-blob-store.js';

/** LocalBlobStore.putFile: a local file copied or hard-linked into the store off the event loop. */

let scratch: string;
let root: string;

beforeEach(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'streamstate-putfile-src-'));
  root = await mkdtemp(join(tmpdir(), 'streamstate-putfile-store-'));
});

afterEach(async () => {
  await rm(scratch, { recursive: true, force: true });
  await rm(root, { recursive: true, force: true });
});

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) | 0;
    b[i] = x >>> 24;
  }
  return b;
}

/** Every regular file under `dir`, relative. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true }))
    if (e.isFile()) out.push(join(e.parentPath ?? e.path, e.name));
  return out;
}

describe('LocalBlobStore.putFile', () => {
  it('copies a file (larger than one transfer chunk) with its size and crc32; the copy is a file of its own', async () => {
    const data = pattern(9 * 1024 * 1024 + 17, 1);
    const src = join(scratch, 'a.bin');
    await writeFile(src, data);
    const store = new LocalBlobStore(root);
    const r = await store.putFile('job/shared/a.bin', src);
    expect(r).toEqual({ size: data.length, crc32: crc32(data) });
    expect(Buffer.compare(await store.get('job/shared/a.bin'), data)).toBe(0);
    expect(statSync(store.pathOf('job/shared/a.bin')).ino).not.toBe(statSync(src).ino);
    // Writing the source afterwards does not change the stored file.
    await writeFile(src, 'changed');
    expect(Buffer.compare(await store.get('job/shared/a.bin'), data)).toBe(0);
  });

  it('hard-links an immutable file; the stored file survives the source being deleted', async () => {
    const data = pattern(300_000, 2);
    const src = join(scratch, '000007.ldb');
    await writeFile(src, data);
    const store = new LocalBlobStore(root);
    const r = await store.putFile('job/shared/x-000007.ldb', src, { immutable: true });
    expect(r).toEqual({ size: data.length, crc32: crc32(data) });
    const stored = store.pathOf('job/shared/x-000007.ldb');
    expect(statSync(stored).ino).toBe(statSync(src).ino);
    await unlink(src);
    expect(Buffer.compare(await store.get('job/shared/x-000007.ldb'), data)).toBe(0);
  });

  it('an empty file is stored empty', async () => {
    const src = join(scratch, 'empty');
    await writeFile(src, Buffer.alloc(0));
    const store = new LocalBlobStore(root);
    expect(await store.putFile('e', src)).toEqual({ size: 0, crc32: 0 });
    expect((await store.get('e')).length).toBe(0);
  });

  it('an immutable file on another file system (no hard link possible) is copied instead', async () => {
    // /dev/shm is a tmpfs on Linux: link() from there into the store's disk fails with EXDEV.
    const shm = '/dev/shm';
    const otherDevice = existsSync(shm) && statSync(shm).dev !== statSync(root).dev;
    if (!otherDevice) {
      // Without a second file system, force the copy path through the mutable route instead.
      const src = join(scratch, 'f');
      await writeFile(src, pattern(1000, 3));
      expect(await new LocalBlobStore(root).putFile('f', src)).toEqual({ size: 1000, crc32: crc32(pattern(1000, 3)) });
      return;
    }
    const dir = await mkdtemp(join(shm, 'streamstate-putfile-'));
    try {
      const data = pattern(200_000, 4);
      const src = join(dir, '000009.ldb');
      await writeFile(src, data);
      const store = new LocalBlobStore(root);
      const r = await store.putFile('job/shared/000009.ldb', src, { immutable: true });
      expect(r).toEqual({ size: data.length, crc32: crc32(data) });
      expect(statSync(store.pathOf('job/shared/000009.ldb')).dev).not.toBe(statSync(src).dev);
      expect(Buffer.compare(await store.get('job/shared/000009.ldb'), data)).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a missing source fails with NOT_FOUND and leaves no file', async () => {
    const store = new LocalBlobStore(root);
    for (const immutable of [false, true]) {
      const err = await store.putFile('job/shared/m', join(scratch, 'missing'), { immutable }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StorageError);
      expect(err).toMatchObject({ code: 'NOT_FOUND' });
      expect((err as Error).message).toContain(join(scratch, 'missing'));
    }
    expect(await filesUnder(root)).toEqual([]);
  });

  it('a source that cannot be read (a directory) fails with STORAGE_IO and removes the partial target', async () => {
    const src = join(scratch, 'adir');
    await mkdir(src);
    const store = new LocalBlobStore(root);
    for (const immutable of [false, true]) {
      const err = await store.putFile('job/shared/d', src, { immutable }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StorageError);
      expect(err).toMatchObject({ code: 'STORAGE_IO' });
    }
    expect(await filesUnder(root)).toEqual([]);
  });

  it('a target that cannot be created fails with a StorageError naming it', async () => {
    const src = join(scratch, 's');
    await writeFile(src, 'abc');
    const store = new LocalBlobStore(root);
    // A directory where the target file should go.
    await mkdir(store.pathOf('job/t'), { recursive: true });
    const err = await store.putFile('job/t', src).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect((err as Error).message).toContain(store.pathOf('job/t'));
    expect((await stat(store.pathOf('job/t'))).isDirectory()).toBe(true);
  });

  it('the stored file is fsynced, and its directory before the next putAtomic publishes anything', async () => {
    const events: DurabilityEvent[] = [];
    const store = new LocalBlobStore(root, { onDurabilityEvent: (e) => events.push(e) });
    const src = join(scratch, 'l');
    await writeFile(src, pattern(5000, 5));
    await store.putFile('job/shared/l', src, { immutable: true });
    await store.putAtomic('job/chk-1/_metadata', Buffer.from('m'));
    const target = store.pathOf('job/shared/l');
    const fileSync = events.findIndex((e) => e.op === 'fsync-file' && e.path === target);
    const dirSync = events.findIndex((e) => e.op === 'fsync-dir' && e.path === join(root, 'job', 'shared'));
    const publish = events.findIndex((e) => e.op === 'rename');
    expect(fileSync).toBeGreaterThanOrEqual(0);
    expect(dirSync).toBeGreaterThan(fileSync);
    expect(publish).toBeGreaterThan(dirSync);
  });

  it('transfers run concurrently and each gets its own bytes', async () => {
    const store = new LocalBlobStore(root);
    const datas = Array.from({ length: 6 }, (_, i) => pattern(100_000 + i * 999, 10 + i));
    await Promise.all(datas.map((d, i) => writeFile(join(scratch, `c${i}`), d)));
    const results = await Promise.all(
      datas.map((_, i) => store.putFile(`c/${i}`, join(scratch, `c${i}`), { immutable: i % 2 === 0 })),
    );
    for (let i = 0; i < datas.length; i++) {
      expect(results[i]).toEqual({ size: datas[i].length, crc32: crc32(datas[i]) });
      expect(Buffer.compare(await readFile(store.pathOf(`c/${i}`)), datas[i])).toBe(0);
    }
  });
});

describe('uploadFile through putFile', () => {
  it("BlobCheckpointStreamFactory.uploadFile uses the store's putFile; the reader verifies the handle", async () => {
    const store = new LocalBlobStore(root);
    const data = pattern(2_000_000, 6);
    const src = join(scratch, '000123.ldb');
    await writeFile(src, data);
    const f = new BlobCheckpointStreamFactory({
      store,
      baseDir: 'job/chk-1',
      sharedDir: 'job/shared',
      inlineThreshold: 0,
    });
    const h = await f.uploadFile(src, 'shared', '000123.ldb', { immutable: true });
    expect(h).toMatchObject({ type: 'file', size: data.length, crc32: crc32(data) });
    expect(statSync(join(root, 'job', 'chk-1', h.path)).ino).toBe(statSync(src).ino);
    await unlink(src);
    const reader = new BlobStateFileReader(store, 'job/chk-1');
    expect(Buffer.compare(await reader.read(h), data)).toBe(0);
  });

  it('a failed putFile leaves nothing behind and surfaces the StorageError', async () => {
    const store = new LocalBlobStore(root);
    const f = new BlobCheckpointStreamFactory({
      store,
      baseDir: 'job/chk-1',
      sharedDir: 'job/shared',
      inlineThreshold: 0,
    });
    await expect(f.uploadFile(join(scratch, 'nope'), 'shared', 'x.ldb', { immutable: true })).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
    expect(await store.list('')).toEqual([]);
  });

  it('ForwardingBlobStore forwards putFile unless a subclass watches putStream (then uploads stream through it)', async () => {
    const inner = new LocalBlobStore(root);
    expect(typeof new ForwardingBlobStore(inner).putFile).toBe('function');
    const streamed: string[] = [];
    class Watching extends ForwardingBlobStore {
      override putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
        streamed.push(name);
        return super.putStream(name, data);
      }
    }
    const watched: BlobStore = new Watching(inner);
    expect(watched.putFile).toBeUndefined();
    const src = join(scratch, 'w');
    await writeFile(src, pattern(30_000, 7));
    const f = new BlobCheckpointStreamFactory({
      store: watched,
      baseDir: 'job/chk-1',
      sharedDir: 'job/shared',
      inlineThreshold: 0,
    });
    const h = await f.uploadFile(src, 'exclusive', undefined, { immutable: true });
    expect(streamed).toHaveLength(1);
    expect(h.crc32).toBe(crc32(pattern(30_000, 7)));
  });
});
