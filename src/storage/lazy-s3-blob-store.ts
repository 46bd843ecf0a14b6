import { AWS_SDK, loadOptional } from '../util/optional-dependency.js';
import type { BlobInfo, BlobStore, DownloadOptions, PutFileOptions, PutFileResult } from './blob-store.js';
import { checkBlobName } from './blob-names.js';
import type { S3BlobStore, S3BlobStoreOptions } from './s3-blob-store.js';
import { KeyLayout } from './s3/key-layout.js';
import { checkBucketName, formatS3Url, normalizePrefix } from './s3/s3-url.js';

/**
 * An S3BlobStore that loads the AWS SDK on first use. The core reaches S3 only through this
 * (s3:// paths in the CLI, savepoint targets and restore pointers), so `import 'streamstate'`
 * never loads the SDK, and a missing SDK is DEPENDENCY_MISSING when an s3:// path is used.
 * Option errors of S3BlobStore surface at the first call.
 */
export class LazyS3BlobStore implements BlobStore {
  readonly location: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly endpoint: string;
  private readonly layout: KeyLayout;
  private store: Promise<S3BlobStore> | null = null;
  private closed = false;

  constructor(private readonly options: S3BlobStoreOptions) {
    this.bucket = checkBucketName(options.bucket);
    this.prefix = normalizePrefix(options.prefix ?? '');
    this.location = formatS3Url(this.bucket, this.prefix);
    this.layout = new KeyLayout(this.prefix, options.entropy);
    this.endpoint =
      options.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL ?? 'the AWS S3 endpoint';
  }

  /** The real store (loads the SDK the first time). */
  loaded(): Promise<S3BlobStore> {
    this.store ??= loadOptional(AWS_SDK, () => import('./s3-blob-store.js')).then(
      (m) => new m.S3BlobStore(this.options),
    );
    return this.store;
  }

  dataFileName(name: string): string {
    checkBlobName(name);
    return this.layout.dataFileName(name);
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    return (await this.loaded()).put(name, data);
  }
  async putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    return (await this.loaded()).putStream(name, data);
  }
  async putFile(name: string, localPath: string, _opts?: PutFileOptions): Promise<PutFileResult> {
    return (await this.loaded()).putFile(name, localPath);
  }
  async putAtomic(name: string, data: Uint8Array, opts?: { exclusive?: boolean }): Promise<void> {
    return (await this.loaded()).putAtomic(name, data, opts);
  }
  async get(name: string): Promise<Buffer> {
    return (await this.loaded()).get(name);
  }
  async getRange(name: string, offset: number, length: number): Promise<Buffer> {
    return (await this.loaded()).getRange(name, offset, length);
  }
  async download(name: string, localPath: string, opts?: DownloadOptions): Promise<void> {
    return (await this.loaded()).download(name, localPath, opts);
  }
  async stat(name: string): Promise<BlobInfo | null> {
    return (await this.loaded()).stat(name);
  }
  async list(prefix: string): Promise<BlobInfo[]> {
    return (await this.loaded()).list(prefix);
  }
  async delete(names: readonly string[]): Promise<void> {
    return (await this.loaded()).delete(names);
  }
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Never loads the SDK just to close a store that was never used.
    if (this.store !== null) await (await this.store.catch(() => null))?.close();
  }
}
