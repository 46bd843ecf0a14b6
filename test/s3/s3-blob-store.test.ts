import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3BlobStore, s3BlobStoreFromUrl } from '../../src/storage/s3-blob-store.js';
import { expectRejectsCode, within } from '../support/errors.js';
import { startFaultProxy, type FaultProxy } from '../support/s3/fault-proxy.js';
import { S3RVER_CREDENTIALS, startS3rver, uniquePrefix, type S3rverFixture } from '../support/s3/s3rver-fixture.js';

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

/** Yields `data` in uneven chunks, like a snapshot writer would. */
async function* chunked(data: Buffer, sizes: number[]): AsyncGenerator<Uint8Array> {
  let at = 0;
  for (let i = 0; at < data.length; i++) {
    const n = sizes[i % sizes.length];
    yield data.subarray(at, at + n);
    at += n;
  }
}

/** A port nothing listens on: bind, note it, close. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

let s3: S3rverFixture;
let scratch: string;
beforeAll(async () => {
  s3 = await startS3rver();
  scratch = await mkdtemp(join(tmpdir(), 'ss-s3-test-'));
});
afterAll(async () => {
  await s3?.stop();
  await rm(scratch, { recursive: true, force: true });
});

describe('S3BlobStore: large objects', () => {
  it('streams a 12 MiB object as a 3-part multipart upload and reads it back byte for byte', async () => {
    const store = s3.makeStore(uniquePrefix('mp'), { multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB });
    const data = pattern(12 * MiB + 123, 11);
    const size = await store.putStream('job/chk-1/big', chunked(data, [700_000, 1, 65_536, 3 * MiB]));
    expect(size).toBe(data.length);
    const counts = store.requestCounts();
    expect(counts.CreateMultipartUpload).toBe(1);
    expect(counts.UploadPart).toBe(3);
    expect(counts.CompleteMultipartUpload).toBe(1);
    expect(counts.PutObject ?? 0).toBe(0);

    expect((await store.stat('job/chk-1/big'))?.size).toBe(data.length);
    expect(Buffer.compare(await store.get('job/chk-1/big'), data)).toBe(0);
    // Ranged reads across part boundaries.
    for (const [offset, length] of [
      [0, 1],
      [5 * MiB - 10, 20],
      [7 * MiB, 3 * MiB + 5],
      [data.length - 100, 1000],
    ]) {
      const got = await store.getRange('job/chk-1/big', offset, length);
      expect(Buffer.compare(got, data.subarray(offset, offset + length))).toBe(0);
    }
    const local = join(scratch, 'dl', 'big');
    await store.download('job/chk-1/big', local);
    expect(Buffer.compare(await readFile(local), data)).toBe(0);
  });

  it('streams below the multipart threshold go up as a single PutObject', async () => {
    const store = s3.makeStore(uniquePrefix('single'));
    const data = pattern(3 * MiB, 5);
    expect(await store.putStream('x', chunked(data, [100_000]))).toBe(data.length);
    expect(store.requestCounts().PutObject).toBe(1);
    expect(store.requestCounts().CreateMultipartUpload ?? 0).toBe(0);
    expect(Buffer.compare(await store.get('x'), data)).toBe(0);
  });

  it('a source that fails after the threshold aborts the upload, leaves no object, and rethrows the source error', async () => {
    const store = s3.makeStore(uniquePrefix('mp-src'), { multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB });
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield pattern(6 * MiB, 1);
      yield pattern(6 * MiB, 2);
      throw new Error('snapshot writer broke');
    }
    await expect(store.putStream('gone', failing())).rejects.toThrow('snapshot writer broke');
    expect(await store.stat('gone')).toBeNull();
    expect(await store.list('')).toEqual([]);
    expect(store.requestCounts().AbortMultipartUpload).toBe(1);
  });
});

describe('S3BlobStore: listing and deleting', () => {
  it('pages through listings with StartAfter (small MaxKeys) and returns every object once', async () => {
    const store = s3.makeStore(uniquePrefix('page'), { listPageSize: 7 });
    const names = Array.from({ length: 45 }, (_, i) => `job/chk-${i % 3}/f${String(i).padStart(3, '0')}`);
    await Promise.all(names.map((n) => store.put(n, Buffer.from(n))));
    const before = store.requestCounts().ListObjectsV2 ?? 0;
    const listed = await store.list('job/');
    expect(listed.map((b) => b.name)).toEqual([...names].sort());
    expect(listed.every((b) => b.size === b.name.length && typeof b.modified === 'number')).toBe(true);
    expect((store.requestCounts().ListObjectsV2 ?? 0) - before).toBe(Math.ceil(45 / 7));
    expect((await store.list('job/chk-1/')).length).toBe(15);
  });

  it('deletes in batches (deleteBatchSize) and ignores missing keys and duplicates', async () => {
    const store = s3.makeStore(uniquePrefix('del'), { deleteBatchSize: 10 });
    const names = Array.from({ length: 25 }, (_, i) => `d/${i}`);
    await Promise.all(names.map((n) => store.put(n, Buffer.from('x'))));
    await store.delete([...names, ...names.slice(0, 5), 'd/missing']);
    expect(store.requestCounts().DeleteObjects).toBe(3); // 26 distinct keys / 10
    expect(await store.list('d/')).toEqual([]);
  });

  it('does not see objects outside its prefix', async () => {
    const prefix = uniquePrefix('iso');
    const a = s3.makeStore(`${prefix}/a`);
    const ab = s3.makeStore(`${prefix}/ab`);
    await a.put('x', Buffer.from('a'));
    await ab.put('x', Buffer.from('ab'));
    expect((await a.list('')).map((b) => b.name)).toEqual(['x']);
    expect((await a.get('x')).toString()).toBe('a');
    expect(a.location).toBe(`s3://${s3.bucket}/${prefix}/a`);
  });
});

describe('S3BlobStore: entropy injection', () => {
  it('puts data files under random key prefixes, _metadata under the plain prefix, and lists both by name', async () => {
    const base = uniquePrefix('ent');
    const store = s3.makeStore(`_entropy_/${base}`, { entropy: { marker: '_entropy_', length: 4 } });
    expect(store.location).toBe(`s3://${s3.bucket}/_entropy_/${base}`);
    const dataNames = Array.from({ length: 6 }, (_, i) => store.dataFileName(`job/chk-1/data-${i}`));
    for (const n of dataNames) expect(n).toMatch(/^job\/chk-1\/~[a-z0-9]{4}~data-\d$/);
    expect(new Set(dataNames.map((n) => n.slice(10, 16))).size).toBeGreaterThan(1);

    await Promise.all(dataNames.map((n, i) => store.put(n, Buffer.from(`d${i}`))));
    await store.putAtomic('job/chk-1/_metadata', Buffer.from('meta'), { exclusive: true });
    await store.putStream(dataNames[0], chunked(Buffer.from('streamed'), [3]));

    // Physical keys, seen with a raw client.
    const raw = await store.client.send(new ListObjectsV2Command({ Bucket: s3.bucket }));
    const keys = (raw.Contents ?? []).map((o) => o.Key ?? '').filter((k) => k.includes(base));
    expect(keys).toContain(`${base}/job/chk-1/_metadata`);
    for (const n of dataNames) {
      const chars = /~([a-z0-9]{4})~/.exec(n)?.[1];
      expect(keys).toContain(`${chars}/${base}/${n}`);
    }
    expect(keys.some((k) => k.includes('_entropy_'))).toBe(false);

    // The logical view is unchanged.
    expect((await store.list('job/')).map((b) => b.name)).toEqual([...dataNames, 'job/chk-1/_metadata'].sort());
    expect((await store.get(dataNames[0])).toString()).toBe('streamed');
    expect((await store.getRange(dataNames[1], 1, 1)).toString()).toBe('1');
    expect((await store.stat(dataNames[2]))?.size).toBe(2);
    await store.delete(dataNames);
    expect((await store.list('job/')).map((b) => b.name)).toEqual(['job/chk-1/_metadata']);
  });

  it('without entropy configured, dataFileName returns the name unchanged', () => {
    const store = s3.makeStore(uniquePrefix('noent'));
    expect(store.dataFileName('job/chk-1/x')).toBe('job/chk-1/x');
    expect(store.entropyEnabled).toBe(false);
  });

  it('rejects a marker that is not in the prefix', async () => {
    await expectRejectsCode(
      () => s3.makeStore('plain/prefix', { entropy: { marker: '_entropy_' } }),
      'INVALID_ARGUMENT',
    );
  });
});

describe('S3BlobStore: bad input and unreachable services', () => {
  it('a missing bucket is NOT_FOUND naming the bucket, for reads, writes, lists and stat', async () => {
    const store = s3.makeStore('p', { bucket: 'no-such-bucket-here' });
    for (const work of [
      () => store.get('x'),
      () => store.put('x', Buffer.from('x')),
      () => store.list(''),
      () => store.stat('x'),
      () => store.putAtomic('x', Buffer.from('x'), { exclusive: true }),
    ]) {
      const err = await expectRejectsCode(work, 'NOT_FOUND');
      expect(err.message).toContain('no-such-bucket-here');
      expect(err.message).toMatch(/create it or fix the bucket name/);
    }
  });

  it('a missing key is NOT_FOUND naming the full key', async () => {
    const prefix = uniquePrefix('nokey');
    const store = s3.makeStore(prefix);
    const err = await expectRejectsCode(store.get('job/chk-9/_metadata'), 'NOT_FOUND');
    expect(err.message).toContain(`s3://${s3.bucket}/${prefix}/job/chk-9/_metadata`);
  });

  it('wrong credentials are STORAGE_IO "access denied"', async () => {
    const store = s3.makeStore(uniquePrefix('creds'), {
      credentials: { accessKeyId: 'WRONG', secretAccessKey: 'nope' },
    });
    const err = await expectRejectsCode(store.put('x', Buffer.from('x')), 'STORAGE_IO');
    expect(err.message).toMatch(/access denied/i);
    expect(err.message).toMatch(/check credentials/);
    expect((await expectRejectsCode(store.get('x'), 'STORAGE_IO')).message).toMatch(/access denied/i);
    expect((await expectRejectsCode(store.list(''), 'STORAGE_IO')).message).toMatch(/access denied/i);
    // (s3rver checks the access key id but not SigV4 signatures, so a wrong secret cannot be tested here.)
  });

  it('an unreachable endpoint fails with STORAGE_IO "cannot reach" after bounded retries', async () => {
    const endpoint = `http://127.0.0.1:${await closedPort()}`;
    const store = s3.makeStore('x', { endpoint, maxAttempts: 4, retryBaseDelayMs: 20, retryMaxDelayMs: 100 });
    const started = Date.now();
    const err = await within(
      expectRejectsCode(store.put('a', Buffer.from('a')), 'STORAGE_IO'),
      10_000,
      'unreachable endpoint',
    );
    expect(err.message).toContain(`cannot reach ${endpoint}`);
    expect(err.message).toMatch(/ECONNREFUSED/);
    expect(err.message).toMatch(/after 4 attempts/);
    expect(Date.now() - started).toBeLessThan(5_000);
    await within(expectRejectsCode(store.get('a'), 'STORAGE_IO'), 10_000, 'unreachable endpoint (get)');
    await within(expectRejectsCode(store.list(''), 'STORAGE_IO'), 10_000, 'unreachable endpoint (list)');
  });

  it('validates options and URLs with INVALID_ARGUMENT', async () => {
    await expectRejectsCode(() => new S3BlobStore({ bucket: 'Bad_Bucket!' }), 'INVALID_ARGUMENT');
    await expectRejectsCode(() => new S3BlobStore({ bucket: 'ok-bucket', partSizeBytes: MiB }), 'INVALID_ARGUMENT');
    await expectRejectsCode(() => new S3BlobStore({ bucket: 'ok-bucket', maxConcurrency: 0 }), 'INVALID_ARGUMENT');
    await expectRejectsCode(() => new S3BlobStore({ bucket: 'ok-bucket', deleteBatchSize: 5000 }), 'INVALID_ARGUMENT');
    await expectRejectsCode(() => new S3BlobStore({ bucket: 'ok-bucket', prefix: 'a/../b' }), 'INVALID_ARGUMENT');
    await expectRejectsCode(() => s3BlobStoreFromUrl('http://bucket/x'), 'INVALID_ARGUMENT');
    await expectRejectsCode(() => s3BlobStoreFromUrl('s3:///x'), 'INVALID_ARGUMENT');
  });

  it('s3BlobStoreFromUrl parses bucket and prefix and works against the server', async () => {
    const prefix = uniquePrefix('url');
    const store = s3BlobStoreFromUrl(`s3://${s3.bucket}/${prefix}/`, {
      endpoint: s3.endpoint,
      credentials: S3RVER_CREDENTIALS,
      forcePathStyle: true,
    });
    try {
      expect(store.location).toBe(`s3://${s3.bucket}/${prefix}`);
      await store.put('k', Buffer.from('v'));
      expect((await s3.makeStore(prefix).get('k')).toString()).toBe('v');
    } finally {
      await store.close();
    }
    await expectRejectsCode(store.get('k'), 'STORAGE_IO'); // closed
  });
});

describe('S3BlobStore: configuration from the standard AWS environment', () => {
  it('takes endpoint, region and credentials from AWS_ENDPOINT_URL_S3 / AWS_REGION / AWS_ACCESS_KEY_ID', async () => {
    const vars = ['AWS_ENDPOINT_URL_S3', 'AWS_REGION', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'] as const;
    const saved = vars.map((v) => process.env[v]);
    Object.assign(process.env, {
      AWS_ENDPOINT_URL_S3: s3.endpoint,
      AWS_REGION: 'eu-west-1',
      AWS_ACCESS_KEY_ID: 'S3RVER',
      AWS_SECRET_ACCESS_KEY: 'S3RVER',
    });
    const prefix = uniquePrefix('env');
    const store = new S3BlobStore({ bucket: s3.bucket, prefix, forcePathStyle: true });
    try {
      expect(store.endpoint).toBe(s3.endpoint);
      await store.put('k', Buffer.from('from env'));
      expect((await s3.makeStore(prefix).get('k')).toString()).toBe('from env');
      expect(await store.client.config.region()).toBe('eu-west-1');
    } finally {
      await store.close();
      vars.forEach((v, i) => (saved[i] === undefined ? delete process.env[v] : (process.env[v] = saved[i])));
    }
  });
});

describe('S3BlobStore: conditional writes', () => {
  let proxy: FaultProxy;
  beforeAll(async () => {
    proxy = await startFaultProxy({ target: s3.endpoint, seed: 7 });
  });
  afterAll(async () => {
    await proxy?.stop();
  });

  it('maps a 412 to an If-None-Match PUT (another writer won the race) to ALREADY_EXISTS', async () => {
    const store = s3.makeStore(uniquePrefix('cond'), { endpoint: proxy.endpoint });
    proxy.setRules([
      { fault: 'status', method: 'PUT', header: 'if-none-match', status: 412, code: 'PreconditionFailed' },
    ]);
    await expectRejectsCode(store.putAtomic('_metadata', Buffer.from('x'), { exclusive: true }), 'ALREADY_EXISTS');
    expect(await store.stat('_metadata')).toBeNull();
  });

  it('falls back to HEAD-then-PUT when the server answers 501 to If-None-Match', async () => {
    const store = s3.makeStore(uniquePrefix('cond501'), { endpoint: proxy.endpoint });
    proxy.resetStats();
    proxy.setRules([
      { fault: 'status', method: 'PUT', header: 'if-none-match', status: 501, code: 'NotImplemented', times: 5 },
    ]);
    await store.putAtomic('a/_metadata', Buffer.from('x'), { exclusive: true });
    await store.putAtomic('b/_metadata', Buffer.from('y'), { exclusive: true });
    expect((await store.get('a/_metadata')).toString()).toBe('x');
    expect((await store.get('b/_metadata')).toString()).toBe('y');
    expect(proxy.stats.faults.status).toBe(1); // the second write no longer sent the header
    await expectRejectsCode(store.putAtomic('a/_metadata', Buffer.from('z'), { exclusive: true }), 'ALREADY_EXISTS');
  });
});
