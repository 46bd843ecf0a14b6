import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { S3BlobStore } from '../../src/storage/s3-blob-store.js';
import { expectRejectsCode, within } from '../support/errors.js';
import { startFaultProxy, type FaultProxy } from '../support/s3/fault-proxy.js';
import { startS3rver, uniquePrefix, type S3rverFixture, type StoreOverrides } from '../support/s3/s3rver-fixture.js';

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
beforeAll(async () => {
  s3 = await startS3rver();
  proxy = await startFaultProxy({ target: s3.endpoint, seed: 42 });
});
afterAll(async () => {
  await proxy?.stop();
  await s3?.stop();
});
beforeEach(() => {
  proxy.setRules([]);
  proxy.resetStats();
});

/** A store that talks to s3rver through the fault proxy. */
function faultyStore(label: string, overrides: StoreOverrides = {}): S3BlobStore {
  return s3.makeStore(uniquePrefix(label), { endpoint: proxy.endpoint, ...overrides });
}

describe('S3BlobStore under injected faults', () => {
  it('retries 503 SlowDown on every kind of request and ends with the right bytes', async () => {
    const store = faultyStore('slowdown', { maxAttempts: 8, listPageSize: 5 });
    proxy.setRules([{ fault: 'slowdown', probability: 0.3, times: 200 }]);
    const objects = Array.from({ length: 20 }, (_, i) => [`job/f${i}`, pattern(1000 + i, i + 1)] as const);
    await Promise.all(objects.map(([n, d]) => store.put(n, d)));
    for (const [n, d] of objects) expect(Buffer.compare(await store.get(n), d)).toBe(0);
    expect((await store.list('job/')).length).toBe(20);
    expect(Buffer.compare(await store.getRange('job/f3', 10, 20), objects[3][1].subarray(10, 30))).toBe(0);
    await store.putAtomic('job/_metadata', Buffer.from('m'), { exclusive: true });
    await store.delete(objects.map(([n]) => n));
    expect((await store.list('job/')).map((b) => b.name)).toEqual(['job/_metadata']);
    expect(proxy.stats.faults.slowdown).toBeGreaterThan(5);
  });

  it('retries connection resets before the request, halfway through an upload, and halfway through a download', async () => {
    const store = faultyStore('reset');
    const data = pattern(300_000, 3);
    proxy.setRules([
      { fault: 'reset', method: 'PUT', times: 2 },
      { fault: 'reset-mid-request', method: 'PUT', times: 2 },
    ]);
    await store.put('a', data);
    expect(proxy.stats.faults.reset).toBe(2);
    expect(proxy.stats.faults['reset-mid-request']).toBe(2);

    proxy.setRules([{ fault: 'reset-mid-response', method: 'GET', times: 2 }]);
    expect(Buffer.compare(await store.get('a'), data)).toBe(0);
    expect(proxy.stats.faults['reset-mid-response']).toBe(2);

    proxy.setRules([{ fault: 'reset-mid-response', method: 'GET', times: 1 }]);
    expect(Buffer.compare(await store.getRange('a', 1000, 50_000), data.subarray(1000, 51_000))).toBe(0);
    expect(proxy.stats.faults['reset-mid-response']).toBe(3);
  });

  it('a response slower than requestTimeoutMs times out and is retried', async () => {
    const store = faultyStore('slow', { requestTimeoutMs: 200 });
    await store.put('x', Buffer.from('payload'));
    proxy.setRules([{ fault: 'delay', method: 'GET', delayMs: 600, times: 1 }]);
    const started = Date.now();
    expect((await store.get('x')).toString()).toBe('payload');
    expect(proxy.stats.faults.delay).toBe(1);
    expect(proxy.stats.byKind['GET object']).toBeGreaterThanOrEqual(2);
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it('persistent throttling gives up after maxAttempts with a typed error', async () => {
    const store = faultyStore('throttled', { maxAttempts: 3 });
    proxy.setRules([{ fault: 'slowdown', times: Number.POSITIVE_INFINITY }]);
    const err = await within(
      expectRejectsCode(store.put('x', Buffer.from('x')), 'STORAGE_IO'),
      10_000,
      'persistent 503',
    );
    expect(err.message).toMatch(/throttling after 3 attempts/);
    expect(proxy.stats.requests).toBe(3);
  });

  it('a multipart upload whose part keeps failing aborts cleanly and leaves no object', async () => {
    const store = faultyStore('mp-fail', { multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB, maxAttempts: 3 });
    proxy.setRules([
      { fault: 'reset-mid-request', method: 'PUT', query: 'partNumber=2', times: Number.POSITIVE_INFINITY },
    ]);
    const err = await within(
      expectRejectsCode(store.putStream('big', chunked(pattern(16 * MiB, 9), MiB)), 'STORAGE_IO'),
      20_000,
      'multipart failure',
    );
    expect(err.message).toContain('big');
    expect(err.message).toMatch(/cannot reach|ECONNRESET|EPIPE/);
    expect(proxy.stats.byKind['PUT uploadId+partNumber']).toBeGreaterThanOrEqual(3);
    // The abort was sent (s3rver refuses it with 405, which is why it is best effort), and nothing completed.
    expect(store.requestCounts().AbortMultipartUpload).toBe(1);
    expect(store.requestCounts().CompleteMultipartUpload ?? 0).toBe(0);
    expect(proxy.stats.byKind['POST uploadId'] ?? 0).toBe(0);
    expect(await store.stat('big')).toBeNull();
    expect(await store.list('')).toEqual([]);
  });

  it('a multipart upload survives a part failing once, and the object is byte-identical', async () => {
    const store = faultyStore('mp-retry', { multipartThresholdBytes: 5 * MiB, partSizeBytes: 5 * MiB });
    proxy.setRules([
      { fault: 'reset-mid-request', method: 'PUT', query: 'partNumber=2', times: 1 },
      { fault: 'slowdown', method: 'PUT', query: 'partNumber=3', times: 1 },
      { fault: 'internal-error', method: 'POST', query: 'uploadId', times: 1 },
    ]);
    const data = pattern(13 * MiB + 7, 4);
    expect(await store.putStream('big', chunked(data, 256 * 1024))).toBe(data.length);
    expect(proxy.stats.faults).toEqual({ 'reset-mid-request': 1, slowdown: 1, 'internal-error': 1 });
    expect(Buffer.compare(await store.get('big'), data)).toBe(0);
  });
});
