import { describeBackendConformance } from 'streamstate/conformance';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { filesystem } from '../../backends/filesystem/index.js';

// The filesystem preset: heap state, checkpoints in a temp directory. inlineThreshold 0 sends every
// snapshot stream to a file, so ranged reads, crc checks and file cleanup are all exercised.
describeBackendConformance('filesystem', async () => {
  const checkpointDir = await mkdtemp(join(tmpdir(), 'streamstate-conformance-'));
  return {
    backend: filesystem({ checkpointDir, inlineThreshold: 0 }),
    cleanup: () => rm(checkpointDir, { recursive: true, force: true }),
  };
});
