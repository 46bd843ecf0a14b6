import { afterAll, beforeAll } from 'vitest';
import { describeBlobStore } from '../storage/blob-store-compliance.js';
import { startS3rver, uniquePrefix, type S3rverFixture } from '../support/s3/s3rver-fixture.js';

let s3: S3rverFixture;
beforeAll(async () => {
  s3 = await startS3rver();
});
afterAll(async () => {
  await s3?.stop();
});

// Every test gets its own prefix in the shared bucket, so tests cannot see each other's objects.
describeBlobStore('S3BlobStore (s3rver)', async () => {
  const store = s3.makeStore(uniquePrefix('compliance'));
  return { store, cleanup: async () => undefined };
});

describeBlobStore('S3BlobStore (s3rver, small multipart threshold)', async () => {
  // Streams over 64 KiB go multipart (a single part below 5 MiB: lib-storage sends it as one PUT).
  const store = s3.makeStore(uniquePrefix('compliance-mp'), {
    multipartThresholdBytes: 64 * 1024,
    partSizeBytes: 5 * 1024 * 1024,
  });
  return { store, cleanup: async () => undefined };
});
