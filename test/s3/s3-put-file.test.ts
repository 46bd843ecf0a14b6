import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { BlobCheckpointStreamFactory, BlobStateFileReader } from '../../src/checkpoint/streams.js';
import { StorageError } from '../../src/errors.js';
import { expectRejectsCode, within } from '../support/errors.js';
import { startFaultProxy, type FaultProxy } from '../support/s3/fault-proxy.js';
import { startS3rver, uniquePrefix, type S3rverFixture } from '../support/s3/s3rver-fixture.js';

/**
 * S3BlobStore.putFile and the request shapes of S3 writes: one PutObject below the multipart
 * threshold (putFile and putStream alike), parallel parts above it, an abort when a part fails.
 */

const MiB = 1024 * 1024;

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

async function* chunked(data: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < data.length; at += size) yield data.subarray(at, at + size);
}

let s3: S3rverFixture;
let proxy: FaultProxy;
let scratch: string;
beforeAll(async () => {
  s3 = await startS3rver();
  proxy = await startFaultProxy({ target: s3.endpoint, seed: 7 });
  scratch = await mkdtemp(join(tmpdir(), 'ss-s3-putfile-'));
});
afterAll(async () => {
  await proxy?.stop();
  await s3?.stop();
  await rm(scratch, { recursive: true, force: true });
});
beforeEach(() => {
  proxy.setRules([]);
  proxy.resetStats();
});

async function localFile(name: string, data: Buffer): Promise<string> {
  const p = join(scratch, name);
  await writeFile(p, data);
  return p;
}

describe('S3BlobStore.putFile', () => {
  it('a file below the threshold is one PutObject (default threshold: a 16 MiB file), with its crc32', async () => {
    const store = s3.makeStore(uniquePrefix('pf-small'));
    const data = pattern(16 * MiB, 1);
    const r = await store.putFile('job/shared/a.ldb', await localFile('a', data));
    expect(r).toEqual({ size: data.length, crc32: crc32(data) });
    expect(store.requestCounts()).toEqual({ PutObject: 1 });
    expect(Buffer.compare(await store.get('job/shared/a.ldb'), data)).toBe(0);
  });

  it('a file above the threshold goes up in parallel parts: create, one UploadPart per part, complete', async () => {
    const store = s3.makeStore(uniquePrefix('pf-big'), { multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB });
    const data = pattern(12 * MiB + 5, 2);
    const r = await store.putFile('job/shared/b.ldb', await localFile('b', data));
    expect(r).toEqual({ size: data.length, crc32: crc32(data) });
    const counts = store.requestCounts();
    expect(counts.PutObject ?? 0).toBe(0);
    expect(counts.CreateMultipartUpload).toBe(1);
    expect(counts.UploadPart).toBe(3);
    expect(counts.CompleteMultipartUpload).toBe(1);
    expect(Buffer.compare(await store.get('job/shared/b.ldb'), data)).toBe(0);
  });

  it('an empty file is one PutObject of nothing', async () => {
    const store = s3.makeStore(uniquePrefix('pf-empty'));
    expect(await store.putFile('e', await localFile('e', Buffer.alloc(0)))).toEqual({ size: 0, crc32: 0 });
    expect((await store.get('e')).length).toBe(0);
  });

  it('a missing file is NOT_FOUND and nothing is sent', async () => {
    const store = s3.makeStore(uniquePrefix('pf-missing'));
    const err = await store.putFile('m', join(scratch, 'missing')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StorageError);
    expect(err).toMatchObject({ code: 'NOT_FOUND' });
    expect(store.requestCounts()).toEqual({});
  });

  it('a part that keeps failing aborts the multipart upload; no object, a StorageError', async () => {
    const store = s3.makeStore(uniquePrefix('pf-fail'), {
      endpoint: proxy.endpoint,
      multipartThresholdBytes: 5 * MiB,
      partSizeBytes: 5 * MiB,
      maxAttempts: 2,
    });
    proxy.setRules([
      { fault: 'reset-mid-request', method: 'PUT', query: 'partNumber=2', times: Number.POSITIVE_INFINITY },
    ]);
    const path = await localFile('f', pattern(11 * MiB, 3));
    const err = await within(expectRejectsCode(store.putFile('big', path), 'STORAGE_IO'), 20_000, 'putFile failure');
    expect(err).toBeInstanceOf(StorageError);
    expect(store.requestCounts().AbortMultipartUpload).toBe(1);
    expect(store.requestCounts().CompleteMultipartUpload ?? 0).toBe(0);
    expect(await store.stat('big')).toBeNull();
  });

  it('uploadFile through a checkpoint stream factory uses putFile; the reader verifies size and crc32', async () => {
    const store = s3.makeStore(uniquePrefix('pf-factory'));
    const data = pattern(3 * MiB + 1, 4);
    const f = new BlobCheckpointStreamFactory({
      store,
      baseDir: 'job/chk-1',
      sharedDir: 'job/shared',
      inlineThreshold: 0,
    });
    const h = await f.uploadFile(await localFile('g', data), 'shared', '000042.ldb', { immutable: true });
    expect(h).toMatchObject({ size: data.length, crc32: crc32(data) });
    expect(store.requestCounts()).toEqual({ PutObject: 1 });
    expect(Buffer.compare(await new BlobStateFileReader(store, 'job/chk-1').read(h), data)).toBe(0);
  });
});

describe('S3BlobStore.putStream request shapes with the default threshold', () => {
  it('a 16 MiB stream in 64 KiB chunks is one PutObject; a 40 MiB one is multipart', async () => {
    const store = s3.makeStore(uniquePrefix('ps-shape'));
    const small = pattern(16 * MiB, 5);
    expect(await store.putStream('s', chunked(small, 64 * 1024))).toBe(small.length);
    expect(store.requestCounts()).toEqual({ PutObject: 1 });
    const big = pattern(40 * MiB, 6);
    expect(await store.putStream('b', chunked(big, 64 * 1024))).toBe(big.length);
    const counts = store.requestCounts();
    expect(counts.PutObject).toBe(1);
    expect(counts.CreateMultipartUpload).toBe(1);
    expect(counts.UploadPart).toBe(5);
    expect(counts.CompleteMultipartUpload).toBe(1);
    expect(Buffer.compare(await store.get('b'), big)).toBe(0);
  });
});
