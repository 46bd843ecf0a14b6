/**
 * `streamstate/conformance`: the compliance suites other implementations run to prove themselves
 * (like abstract-level's). Import it in a vitest test file (vitest is an optional peer dependency
 * of this entry only):
 *
 *   import { describeBlobStore } from 'streamstate/conformance';
 *   describeBlobStore('my store', async () => ({ store: new MyStore(), cleanup: async () => {} }), { putFile: true });
 *
 * docs/BACKENDS.md explains what a storage medium and a state backend must do.
 */
export { describeBlobStore, type BlobStoreFixture, type BlobStoreSupports } from './blob-store.js';
