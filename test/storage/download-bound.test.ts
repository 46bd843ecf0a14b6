/**
 * BlobStore.download's maxBytes on local disk and in memory (S3: test/s3/s3-download-bound.test.ts):
 * an object larger than the bound is CORRUPT and leaves no local file, an object of exactly the
 * bound downloads whole, a bad bound is INVALID_ARGUMENT. The local copy is a file of its own.
 */
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BlobStore } from '../../src/storage/blob-store.js';
import { ForwardingBlobStore } from '../../src/storage/forwarding-blob-store.js';
import { LocalBlobStore } from '../../src/storage/local-blob-store.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';
import { expectRejectsCode } from '../support/errors.js';

let scratch: string;
beforeEach(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'ss-dl-bound-'));
});
afterEach(async () => {
  await rm(scratch, { recursive: true, force: true });
});

const data = Buffer.from(Array.from({ length: 70_000 }, (_, i) => (i * 13 + (i >> 8)) & 0xff));

const stores: Array<[string, () => BlobStore]> = [
  ['local', () => new LocalBlobStore(join(scratch, 'store'))],
  ['memory', () => new MemoryBlobStore()],
  ['forwarding(local)', () => new ForwardingBlobStore(new LocalBlobStore(join(scratch, 'store')))],
];

describe.each(stores)('%s store: download with maxBytes', (_label, make) => {
  it('exactly maxBytes downloads whole; one byte more is CORRUPT naming the file, nothing left locally', async () => {
    const store = make();
    await store.put('sp/f', data);
    await store.download('sp/f', join(scratch, 'ok', 'f'), { maxBytes: data.length });
    expect(Buffer.compare(await readFile(join(scratch, 'ok', 'f')), data)).toBe(0);

    const out = join(scratch, 'out');
    const err = await expectRejectsCode(
      store.download('sp/f', join(out, 'f'), { maxBytes: data.length - 1 }),
      'CORRUPT',
    );
    expect(err.message).toContain('sp');
    expect(err.message).toContain(`${data.length - 1}`);
    expect(await readdir(out).catch(() => [])).toEqual([]);
  });

  it('a bad maxBytes is INVALID_ARGUMENT; no maxBytes means no bound; a missing object is NOT_FOUND', async () => {
    const store = make();
    await store.put('g', data);
    for (const maxBytes of [-1, 0.5, Number.NaN]) {
      const err = await expectRejectsCode(store.download('g', join(scratch, 'bad'), { maxBytes }), 'INVALID_ARGUMENT');
      expect(err.message).toContain('maxBytes');
    }
    await store.download('g', join(scratch, 'unbounded'));
    expect((await readFile(join(scratch, 'unbounded'))).length).toBe(data.length);
    await expectRejectsCode(store.download('nope', join(scratch, 'x'), { maxBytes: 10 }), 'NOT_FOUND');
  });
});

describe('local store download', () => {
  it('is a copy, never a link: writing the local file leaves the stored blob unchanged', async () => {
    const store = new LocalBlobStore(join(scratch, 'store'));
    await store.put('chk/000005.log', data);
    const local = join(scratch, 'restore', '000005.log');
    await store.download('chk/000005.log', local, { maxBytes: data.length });
    expect((await stat(local)).nlink).toBe(1);
    await writeFile(local, 'appended by a restored database', { flag: 'a' });
    expect(Buffer.compare(await store.get('chk/000005.log'), data)).toBe(0);
  });

  it('a directory in place of the blob is NOT_FOUND, as before', async () => {
    const store = new LocalBlobStore(join(scratch, 'store'));
    await store.put('d/inner', data);
    await expectRejectsCode(store.download('d', join(scratch, 'x'), { maxBytes: 10 }), 'NOT_FOUND');
  });
});
