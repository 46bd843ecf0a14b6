/**
 * `streamstate/s3`: checkpoint and savepoint storage on S3 and S3-compatible object stores.
 * Needs the optional peer dependencies @aws-sdk/client-s3 and @aws-sdk/lib-storage; the core
 * (`streamstate`) never loads them (s3:// paths it is given load the SDK on first use).
 */
export {
  S3BlobStore,
  s3BlobStoreFromUrl,
  type S3BlobStoreOptions,
  type S3RequestCounts,
} from './storage/s3-blob-store.js';
export type { EntropyOptions } from './storage/s3/key-layout.js';
export { BlobCheckpointStorage } from './checkpoint/checkpoint-storage.js';
