import { describeBackendConformance } from 'streamstate/conformance';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { leveldb } from '../../backends/leveldb/index.js';
import { changelog } from '../../src/changelog/index.js';

// changelog(leveldb, incremental): materialize at every checkpoint with changes, so materializations
// are the wrapped backend's incremental snapshots (shared table files) under the changelog handle.
describeBackendConformance('changelog(leveldb)', async () => {
  const root = await mkdtemp(join(tmpdir(), 'streamstate-changelog-leveldb-'));
  return {
    backend: changelog({
      backend: leveldb({
        workingDir: join(root, 'work'),
        checkpointDir: join(root, 'checkpoints'),
        incremental: true,
        writeBufferBytes: 64 * 1024,
      }),
      materializationIntervalMs: 0,
      preemptivePersistBytes: 8192,
    }),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
});
