import { describe, expect, it } from 'vitest';
import { KeyLayout } from '../../src/storage/s3/key-layout.js';
import { ConcurrencyLimiter, mapLimited } from '../../src/util/concurrency.js';
import { backoffDelay, JitterRetryStrategy } from '../../src/storage/s3/retry-strategy.js';
import { toStorageError } from '../../src/storage/s3/s3-errors.js';
import { parseS3Url } from '../../src/storage/s3/s3-url.js';
import { expectRejectsCode, expectThrowsCode } from '../support/errors.js';

describe('parseS3Url', () => {
  it('splits bucket and prefix and normalizes slashes', () => {
    expect(parseS3Url('s3://b-1/a/b/')).toEqual({ bucket: 'b-1', prefix: 'a/b' });
    expect(parseS3Url('s3://bucket')).toEqual({ bucket: 'bucket', prefix: '' });
    expect(parseS3Url('s3a://bucket//x//y')).toEqual({ bucket: 'bucket', prefix: 'x/y' });
  });
  it('rejects other schemes, empty and invalid buckets, and dot segments', () => {
    for (const bad of ['http://b/x', 's3://', 's3:///x', 's3://UPPER/x', 's3://b/../x', '/local/path']) {
      expectThrowsCode(() => parseS3Url(bad), 'INVALID_ARGUMENT');
    }
  });
});

describe('KeyLayout', () => {
  it('without entropy prepends the prefix', () => {
    const l = new KeyLayout('base/dir');
    expect(l.keyOf('job/chk-1/x')).toBe('base/dir/job/chk-1/x');
    expect(l.dataFileName('job/x')).toBe('job/x');
    const plan = l.listPlan('job/');
    expect(plan.scanPrefix).toBe('base/dir/job/');
    expect(plan.nameOf('base/dir/job/a')).toBe('job/a');
    expect(new KeyLayout('').keyOf('a')).toBe('a');
  });

  it.each([
    ['_entropy_/cp', 'cp/', (c: string) => `${c}/cp/`],
    ['cp/_entropy_', 'cp/', (c: string) => `cp/${c}/`],
    ['a/_entropy_/b', 'a/b/', (c: string) => `a/${c}/b/`],
    ['_entropy_', '', (c: string) => `${c}/`],
  ])(
    'with the marker in %s, data keys get random characters and other keys lose the marker',
    (prefix, plainBase, dataBase) => {
      const l = new KeyLayout(prefix, { marker: '_entropy_', length: 5 });
      const data = l.dataFileName('job/chk-2/file');
      const chars = /^job\/chk-2\/~([a-z0-9]{5})~file$/.exec(data)?.[1];
      expect(chars).toBeDefined();
      expect(l.keyOf(data)).toBe(`${dataBase(chars as string)}${data}`);
      expect(l.keyOf('job/chk-2/_metadata')).toBe(`${plainBase}job/chk-2/_metadata`);
      const plan = l.listPlan('job/');
      expect(plan.nameOf(l.keyOf(data))).toBe(data);
      expect(plan.nameOf(l.keyOf('job/chk-2/_metadata'))).toBe('job/chk-2/_metadata');
      expect(plan.nameOf(l.keyOf('other/x'))).toBeUndefined();
      expect(plan.nameOf(l.keyOf(l.dataFileName('other/y')))).toBeUndefined();
    },
  );

  it('draws fresh characters per data file', () => {
    const l = new KeyLayout('_e_', { marker: '_e_', length: 4 });
    expect(new Set(Array.from({ length: 50 }, () => l.dataFileName('x'))).size).toBeGreaterThan(40);
  });

  it('rejects bad entropy settings', () => {
    expectThrowsCode(() => new KeyLayout('no-marker', { marker: '_entropy_' }), 'INVALID_ARGUMENT');
    expectThrowsCode(() => new KeyLayout('_e_/_e_', { marker: '_e_' }), 'INVALID_ARGUMENT');
    expectThrowsCode(() => new KeyLayout('_e_', { marker: '_e_', length: 0 }), 'INVALID_ARGUMENT');
    expectThrowsCode(() => new KeyLayout('a/b', { marker: 'a/b' }), 'INVALID_ARGUMENT');
  });
});

describe('retry strategy', () => {
  it('full jitter stays within an exponentially growing, capped window', () => {
    const policy = { maxAttempts: 5, baseDelayMs: 100, maxDelayMs: 1000 };
    expect(backoffDelay(policy, 1, () => 0.999)).toBe(199);
    expect(backoffDelay(policy, 3, () => 0.999)).toBe(799);
    expect(backoffDelay(policy, 10, () => 0.999)).toBe(999);
    expect(backoffDelay(policy, 3, () => 0)).toBe(0);
  });

  it('retries transient errors and throttling up to maxAttempts, never client errors or 501', async () => {
    const s = new JitterRetryStrategy({ maxAttempts: 3, baseDelayMs: 1, maxDelayMs: 1 });
    let token = await s.acquireInitialRetryToken('');
    token = await s.refreshRetryTokenForRetry(token, { errorType: 'THROTTLING' });
    token = await s.refreshRetryTokenForRetry(token, { errorType: 'TRANSIENT' });
    expect(token.getRetryCount()).toBe(2);
    await expect(s.refreshRetryTokenForRetry(token, { errorType: 'TRANSIENT' })).rejects.toThrow();
    const first = await s.acquireInitialRetryToken('');
    await expect(s.refreshRetryTokenForRetry(first, { errorType: 'CLIENT_ERROR' })).rejects.toThrow();
    await expect(s.refreshRetryTokenForRetry(first, { errorType: 'SERVER_ERROR' })).rejects.toThrow();
  });
});

describe('error mapping', () => {
  const ctx = { op: 'reading', bucket: 'bkt', key: 'p/k', endpoint: 'http://h:1' };
  it('gives each failure a code and an actionable message', async () => {
    const cases: Array<[unknown, string, RegExp]> = [
      [
        { name: 'NoSuchBucket', $metadata: { httpStatusCode: 404 } },
        'NOT_FOUND',
        /bucket "bkt".*create it or fix the bucket name/,
      ],
      [{ name: 'NoSuchKey', $metadata: { httpStatusCode: 404 } }, 'NOT_FOUND', /s3:\/\/bkt\/p\/k not found/],
      [
        { name: 'InvalidAccessKeyId', $metadata: { httpStatusCode: 403 } },
        'STORAGE_IO',
        /access denied.*check credentials/,
      ],
      [
        { name: 'Error', code: 'ECONNREFUSED', $metadata: { attempts: 5 } },
        'STORAGE_IO',
        /cannot reach http:\/\/h:1 \(ECONNREFUSED after 5 attempts\)/,
      ],
      [
        { name: 'SlowDown', $metadata: { httpStatusCode: 503, attempts: 5 } },
        'STORAGE_IO',
        /kept throttling after 5 attempts/,
      ],
      [{ name: 'InternalError', $metadata: { httpStatusCode: 500 } }, 'STORAGE_IO', /server error/],
      [new Error('Region is missing'), 'INVALID_ARGUMENT', /AWS_REGION/],
    ];
    for (const [raw, code, message] of cases) {
      const err = await expectRejectsCode(Promise.reject(toStorageError(raw, ctx)), code as 'NOT_FOUND');
      expect(err.message).toMatch(message);
      expect(err.cause).toBe(raw);
    }
  });
});

describe('limiter', () => {
  it('never runs more than the limit at once and keeps FIFO order', async () => {
    const limiter = new ConcurrencyLimiter(3);
    let running = 0;
    let peak = 0;
    const started: number[] = [];
    await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        limiter.run(async () => {
          started.push(i);
          running++;
          peak = Math.max(peak, running);
          await new Promise((r) => setTimeout(r, 2));
          running--;
        }),
      ),
    );
    expect(peak).toBe(3);
    expect(started).toEqual([...started].sort((a, b) => a - b));
  });

  it('mapLimited keeps order and reports the first failure', async () => {
    expect(await mapLimited([1, 2, 3, 4], 2, async (x) => x * 2)).toEqual([2, 4, 6, 8]);
    await expect(
      mapLimited([1, 2, 3], 2, async (x) => (x === 2 ? Promise.reject(new Error('two')) : x)),
    ).rejects.toThrow('two');
  });
});
