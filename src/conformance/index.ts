/**
 * `streamstate/conformance`: the compliance suites other implementations run to prove themselves
 * (like abstract-level's), and the same entry streamstate's own backends and stores run them
 * through. Import it in a vitest test file; vitest (and, for the backend suite's model-based
 * section, fast-check) are optional peer dependencies of this entry only:
 *
 *   import { describeBackendConformance, describeBlobStore } from 'streamstate/conformance';
 *   describeBackendConformance('my backend', () => myBackend(), { supports: { canonicalSavepoints: false } });
 *   describeBlobStore('my store', async () => ({ store: new MyStore(), cleanup: async () => {} }), { putFile: true });
 *
 * docs/BACKENDS.md explains what a storage medium and a state backend must do.
 */
export { describeBlobStore, type BlobStoreFixture, type BlobStoreSupports } from './blob-store.js';
export {
  describeBackendConformance,
  CONFORMANCE_SECTIONS,
  type BackendConformanceOptions,
  type BackendUnderTest,
  type ConformanceSection,
} from './backend/index.js';
export type { ModelSuiteOptions } from './backend/model-suite.js';
export { PARITY_BEHAVIOURS, type ParityBehaviour } from './backend/parity/behaviours.js';
export { BACKEND_CAPABILITIES, type BackendCapability, type BackendSupports } from './backend/supports.js';
export { BACKEND_ERROR_CLASSES, type BackendErrorCode } from './backend/parity/error-classes.js';
