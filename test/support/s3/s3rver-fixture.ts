import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';
import { S3BlobStore, type S3BlobStoreOptions } from '../../../src/storage/s3-blob-store.js';

/**
 * An in-process s3rver on 127.0.0.1 (free port, temp directory) with one bucket, and stores that
 * talk to it with the settings s3rver needs (platform-notes.md): path-style, fixed credentials,
 * and checksums only when required (otherwise stream bodies are stored with their aws-chunked
 * framing). Stores made here use short retry delays so fault tests stay fast.
 */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

export type StoreOverrides = Partial<Omit<S3BlobStoreOptions, 'bucket'>> & { bucket?: string };

export interface S3rverFixture {
  /** http://127.0.0.1:<port> */
  readonly endpoint: string;
  readonly port: number;
  readonly bucket: string;
  /** A store on the fixture's bucket under `prefix`; closed by stop(). `overrides` may point it elsewhere (e.g. a proxy). */
  makeStore(prefix: string, overrides?: StoreOverrides): S3BlobStore;
  /** The client settings a store needs for this server (for building stores by hand). */
  storeOptions(prefix: string, overrides?: StoreOverrides): S3BlobStoreOptions;
  stop(): Promise<void>;
}

let counter = 0;

/** A prefix no other test in this process uses. */
export function uniquePrefix(label: string): string {
  return `${label}-${process.pid}-${++counter}-${Date.now().toString(36)}`;
}

export async function startS3rver(opts: { bucket?: string } = {}): Promise<S3rverFixture> {
  process.env.AWS_EC2_METADATA_DISABLED = 'true';
  const bucket = opts.bucket ?? 'streamstate-test';
  const directory = await mkdtemp(join(tmpdir(), 'ss-s3rver-'));
  const server = new S3rver({
    address: '127.0.0.1',
    port: 0,
    silent: true,
    directory,
    configureBuckets: [{ name: bucket }],
  });
  const address = await server.run();
  const endpoint = `http://127.0.0.1:${address.port}`;
  const stores: S3BlobStore[] = [];

  const storeOptions = (prefix: string, overrides: StoreOverrides = {}): S3BlobStoreOptions => ({
    bucket,
    prefix,
    endpoint,
    region: 'us-east-1',
    credentials: S3RVER_CREDENTIALS,
    forcePathStyle: true,
    checksums: 'WHEN_REQUIRED',
    retryBaseDelayMs: 5,
    retryMaxDelayMs: 50,
    requestTimeoutMs: 10_000,
    ...overrides,
  });

  return {
    endpoint,
    port: address.port,
    bucket,
    storeOptions,
    makeStore(prefix, overrides) {
      const store = new S3BlobStore(storeOptions(prefix, overrides));
      stores.push(store);
      return store;
    },
    async stop() {
      await Promise.all(stores.map((s) => s.close()));
      await server.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}
