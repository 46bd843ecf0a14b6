import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { JobLease, readLease } from '../../src/checkpoint/lease.js';
import { expectRejectsCode } from '../support/errors.js';
import { startS3rver, uniquePrefix, type S3rverFixture } from '../support/s3/s3rver-fixture.js';
import { JOB, fencedWhileWritingScenario, secondInstanceScenario } from '../checkpoint/fencing-scenarios.js';

/**
 * Fencing on S3 (s3rver): the lease needs only PUT and a strongly consistent LIST (s3rver ignores
 * If-None-Match, so no conditional create is relied on); the same scenarios as on local disk.
 */
let s3: S3rverFixture;
beforeAll(async () => {
  s3 = await startS3rver();
}, 30_000);
afterAll(async () => {
  await s3?.stop();
});

describe('fencing on S3', () => {
  it('a second instance: the older cannot complete, delete or gc (FENCED); the newer keeps its in-flight files', async () => {
    await secondInstanceScenario(
      new BlobCheckpointStorage(s3.makeStore(uniquePrefix('fence')), { inlineThreshold: 0 }),
    );
  });

  it('fenced between the lease check and _metadata: the complete checkpoint stays; one whose files are gone is removed again', async () => {
    await fencedWhileWritingScenario(s3.makeStore(uniquePrefix('fence')));
    await fencedWhileWritingScenario(s3.makeStore(uniquePrefix('fence')), { filesGone: true });
  });

  it('two stores (two processes) starting at once: one holder, the other fenced at once or at its next check', async () => {
    const prefix = uniquePrefix('fence');
    const one = s3.makeStore(prefix);
    const two = s3.makeStore(prefix);
    const results = await Promise.allSettled([JobLease.acquire(one, JOB), JobLease.acquire(two, JOB)]);
    const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const holder = await readLease(one, JOB);
    expect(started.filter((l) => l.marker === holder?.marker)).toHaveLength(1);
    for (const l of started) if (l.marker !== holder?.marker) await expectRejectsCode(l.check('test'), 'FENCED');
    expect(holder?.renewedAt).toBeGreaterThan(0); // S3 LastModified
  });
});
