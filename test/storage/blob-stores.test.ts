import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalBlobStore } from '../../src/storage/local-blob-store.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';
import { describeBlobStore } from 'streamstate/conformance';

describeBlobStore(
  'LocalBlobStore',
  async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ss-local-blob-'));
    return { store: new LocalBlobStore(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
  },
  { putFile: true },
);

describeBlobStore(
  'MemoryBlobStore',
  async () => {
    const store = new MemoryBlobStore();
    return { store, cleanup: async () => store.destroy() };
  },
  { putFile: false },
);
