import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeBackendConformance } from 'streamstate/conformance';
import { afterAll, beforeAll } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { startS3rver, uniquePrefix, type S3rverFixture } from '../support/s3/s3rver-fixture.js';

// The backend conformance suites with checkpoint storage on S3 (s3rver): every snapshot, restore
// and rescale goes through S3BlobStore. inlineThreshold 0 sends every stream to an object, so
// ranged reads and multipart-capable streams are exercised. s3rver costs milliseconds per request,
// so the heap backend runs a shorter rescaling matrix and LevelDB (incremental: shared files, uploads
// of local table files) the rescaling cases only; their full suites run on local storage elsewhere.
let s3: S3rverFixture;
beforeAll(async () => {
  s3 = await startS3rver();
});
afterAll(async () => {
  await s3?.stop();
});

const SHORT_RESCALING = [
  [4, 2],
  [2, 3],
] as const;

describeBackendConformance(
  'heap backend, checkpoints on S3',
  async () => ({
    // The preset's own directory is never touched: the harness writes to `storage`.
    backend: filesystem({ checkpointDir: join(tmpdir(), 'streamstate-unused') }),
    storage: new BlobCheckpointStorage(s3.makeStore(uniquePrefix('conf-heap')), { inlineThreshold: 0 }),
    cleanup: async () => undefined,
  }),
  { rescaling: SHORT_RESCALING },
);

const leveldbOnS3 = async () => {
  const root = await mkdtemp(join(tmpdir(), 'streamstate-leveldb-s3-'));
  return {
    backend: leveldb({
      workingDir: join(root, 'work'),
      checkpointDir: join(root, 'unused'),
      incremental: true,
      writeBufferBytes: 64 * 1024,
    }),
    storage: new BlobCheckpointStorage(s3.makeStore(uniquePrefix('conf-ldb')), { inlineThreshold: 0 }),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
};
describeBackendConformance('leveldb (incremental), checkpoints on S3', leveldbOnS3, {
  sections: ['rescaling'],
  rescaling: SHORT_RESCALING,
});
