// The BlobStore compliance suite ships in the package (src/conformance/blob-store.ts); tests run it through the published entry.
export { describeBlobStore, type BlobStoreFixture, type BlobStoreSupports } from 'streamstate/conformance';
