import { describeBackendConformance } from 'streamstate/conformance';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { filesystem } from '../../backends/filesystem/index.js';
import { changelog } from '../../src/changelog/index.js';

// changelog(filesystem) with the default materialization interval: checkpoints are the restored
// (or empty) base + log segments; every segment and snapshot stream is a file (inlineThreshold 0).
describeBackendConformance('changelog(filesystem)', async () => {
  const checkpointDir = await mkdtemp(join(tmpdir(), 'streamstate-changelog-conformance-'));
  return {
    backend: changelog({ backend: filesystem({ checkpointDir, inlineThreshold: 0 }) }),
    cleanup: () => rm(checkpointDir, { recursive: true, force: true }),
  };
});
