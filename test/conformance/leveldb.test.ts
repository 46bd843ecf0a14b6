import { describeBackendConformance } from 'streamstate/conformance';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { leveldb } from '../../backends/leveldb/index.js';

// The leveldb backend with native incremental checkpoints, and in full-snapshot mode (key-groups
// streams). Databases and checkpoints live in one temp directory per test.
for (const incremental of [true, false]) {
  describeBackendConformance(`leveldb (${incremental ? 'incremental' : 'full'})`, async () => {
    const root = await mkdtemp(join(tmpdir(), 'streamstate-leveldb-conformance-'));
    return {
      backend: leveldb({
        workingDir: join(root, 'work'),
        checkpointDir: join(root, 'checkpoints'),
        incremental,
        writeBufferBytes: 64 * 1024,
      }),
      cleanup: () => rm(root, { recursive: true, force: true }),
    };
  });
}
