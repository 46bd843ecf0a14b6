/**
 * BlobStore.download's maxBytes on S3: the bound a restore relies on instead of a HEAD per file.
 * An object larger than the bound is refused with CORRUPT and leaves no local file; a restore's
 * download of a state file is one GetObject.
 */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobStateFileReader } from '../../src/checkpoint/streams.js';
import { expectRejectsCode } from '../support/errors.js';
import { startS3rver, uniquePrefix, type S3rverFixture } from '../support/s3/s3rver-fixture.js';

let s3: S3rverFixture;
let scratch: string;
beforeAll(async () => {
  s3 = await startS3rver();
  scratch = await mkdtemp(join(tmpdir(), 'ss-s3-dl-bound-'));
});
afterAll(async () => {
  await s3?.stop();
  await rm(scratch, { recursive: true, force: true });
});

const data = Buffer.from(Array.from({ length: 100_000 }, (_, i) => (i * 7 + (i >> 9)) & 0xff));

describe('S3BlobStore.download with maxBytes', () => {
  it('an object of exactly maxBytes downloads; one byte more is CORRUPT, with no local file left', async () => {
    const store = s3.makeStore(uniquePrefix('dl-bound'));
    await store.put('sp/f', data);
    const dir = join(scratch, 'exact');
    await store.download('sp/f', join(dir, 'f'), { maxBytes: data.length });
    expect(Buffer.compare(await readFile(join(dir, 'f')), data)).toBe(0);

    const small = join(scratch, 'small');
    const err = await expectRejectsCode(
      store.download('sp/f', join(small, 'f'), { maxBytes: data.length - 1 }),
      'CORRUPT',
    );
    expect(err.message).toContain(`${data.length} bytes`);
    expect(err.message).toContain('sp/f');
    expect(await readdir(small)).toEqual([]); // neither the target nor its temp file
  });

  it('maxBytes 0 accepts only an empty object; a bad maxBytes is INVALID_ARGUMENT before any request', async () => {
    const store = s3.makeStore(uniquePrefix('dl-bound-0'));
    await store.put('empty', Buffer.alloc(0));
    await store.put('one', Buffer.from([1]));
    await store.download('empty', join(scratch, 'zero', 'e'), { maxBytes: 0 });
    expect((await readFile(join(scratch, 'zero', 'e'))).length).toBe(0);
    await expectRejectsCode(store.download('one', join(scratch, 'zero', 'o'), { maxBytes: 0 }), 'CORRUPT');
    const before = store.requestCounts().GetObject ?? 0;
    for (const maxBytes of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      const err = await expectRejectsCode(
        store.download('one', join(scratch, 'bad'), { maxBytes }),
        'INVALID_ARGUMENT',
      );
      expect(err.message).toContain('maxBytes');
    }
    expect(store.requestCounts().GetObject ?? 0).toBe(before);
  });

  it("a restore's download of a state file is one GetObject and no HeadObject; a replaced larger file is CORRUPT", async () => {
    const store = s3.makeStore(uniquePrefix('dl-reader'));
    await store.put('job/chk-1/t.ldb', data);
    const reader = new BlobStateFileReader(store, 'job/chk-1');
    const handle = { type: 'file' as const, path: 't.ldb', size: data.length, crc32: crc32(data) };
    const before = { ...store.requestCounts() };
    await reader.download(handle, join(scratch, 'restored', 't.ldb'));
    const after = store.requestCounts();
    expect((after.GetObject ?? 0) - (before.GetObject ?? 0)).toBe(1);
    expect((after.HeadObject ?? 0) - (before.HeadObject ?? 0)).toBe(0);
    expect(Buffer.compare(await readFile(join(scratch, 'restored', 't.ldb')), data)).toBe(0);

    await store.put('job/chk-1/t.ldb', Buffer.concat([data, data]));
    await expectRejectsCode(reader.download(handle, join(scratch, 'replaced', 't.ldb')), 'CORRUPT');
    expect(await readdir(join(scratch, 'replaced'))).toEqual([]);
  });
});
