import type { BlobInfo, BlobStore, DownloadOptions, PutFileOptions, PutFileResult } from './blob-store.js';

/**
 * A BlobStore that passes every call to `inner`, optional ones included. Extend it and override
 * the calls you watch or change (fault injection, counting, tracing, kill points in tests).
 */
export class ForwardingBlobStore implements BlobStore {
  readonly dataFileName?: (name: string) => string;
  readonly putFile?: (name: string, localPath: string, opts?: PutFileOptions) => Promise<PutFileResult>;
  readonly releasesStreamChunks?: boolean;

  constructor(protected readonly inner: BlobStore) {
    // Entropy injection (S3) stays the inner store's: wrapped checkpoints get the same names.
    if (inner.dataFileName !== undefined) this.dataFileName = (name) => inner.dataFileName!(name);
    // File uploads bypass putStream when forwarded: only while a subclass does not watch putStream
    // (fault injection, kill points), so that it keeps seeing every upload.
    if (inner.putFile !== undefined && this.putStream === ForwardingBlobStore.prototype.putStream) {
      this.putFile = (name, localPath, opts) => inner.putFile!(name, localPath, opts);
    }
    // Chunk reuse only while putStream is the inner store's: a subclass watching it may keep chunks.
    if (inner.releasesStreamChunks === true && this.putStream === ForwardingBlobStore.prototype.putStream)
      this.releasesStreamChunks = true;
  }

  get location(): string {
    return this.inner.location;
  }

  put(name: string, data: Uint8Array): Promise<void> {
    return this.inner.put(name, data);
  }

  putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    return this.inner.putStream(name, data);
  }

  putAtomic(name: string, data: Uint8Array, opts?: { exclusive?: boolean }): Promise<void> {
    return this.inner.putAtomic(name, data, opts);
  }

  get(name: string): Promise<Buffer> {
    return this.inner.get(name);
  }

  getRange(name: string, offset: number, length: number): Promise<Buffer> {
    return this.inner.getRange(name, offset, length);
  }

  download(name: string, localPath: string, opts?: DownloadOptions): Promise<void> {
    return this.inner.download(name, localPath, opts);
  }

  stat(name: string): Promise<BlobInfo | null> {
    return this.inner.stat(name);
  }

  list(prefix: string): Promise<BlobInfo[]> {
    return this.inner.list(prefix);
  }

  delete(names: readonly string[]): Promise<void> {
    return this.inner.delete(names);
  }

  close(): Promise<void> {
    return this.inner.close?.() ?? Promise.resolve();
  }
}
