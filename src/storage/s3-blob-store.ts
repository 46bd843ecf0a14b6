import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32 } from 'node:zlib';
import {
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type GetObjectCommandOutput,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { StorageError, StreamStateError } from '../errors.js';
import type { BlobInfo, BlobStore, DownloadOptions, PutFileResult } from './blob-store.js';
import {
  checkBlobName,
  checkBlobPrefix,
  checkRange,
  downloadLimit,
  downloadTooLarge,
  randomHex,
} from './blob-names.js';
import { KeyLayout, type EntropyOptions } from './s3/key-layout.js';
import { ConcurrencyLimiter, mapLimited } from '../util/concurrency.js';
import { UploadTracker } from './s3/upload-tracker.js';
import { backoffDelay, JitterRetryStrategy, type RetryPolicy } from './s3/retry-strategy.js';
import {
  isNotFound,
  isNotImplemented,
  isPreconditionFailed,
  networkErrorCode,
  toStorageError,
  type S3ErrorContext,
} from './s3/s3-errors.js';
import { checkBucketName, formatS3Url, normalizePrefix, parseS3Url } from './s3/s3-url.js';

const MiB = 1024 * 1024;
/** S3's floor for every multipart part but the last. */
const MIN_PART_SIZE = 5 * MiB;
const MAX_DELETE_BATCH = 1000;
/**
 * One PutObject up to here: below a few parts' size, multipart only adds requests (create + parts +
 * complete) while the files of one checkpoint already upload in parallel (bench/s3-storage.ts).
 */
const DEFAULT_MULTIPART_THRESHOLD = 32 * MiB;

export interface S3BlobStoreOptions {
  readonly bucket: string;
  /** Key prefix inside the bucket ("" = bucket root). May hold the entropy marker. */
  readonly prefix?: string;
  /** e.g. http://127.0.0.1:9000. Default: the SDK's resolution (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, config, AWS). */
  readonly endpoint?: string;
  /** Default: the SDK's resolution (AWS_REGION, profile); "us-east-1" when an endpoint is given and nothing else is. */
  readonly region?: string;
  /** Default: the SDK's credential chain (env, profile, SSO, instance metadata...). */
  readonly credentials?: S3ClientConfig['credentials'];
  /** Path-style URLs (http://host/bucket/key), needed by most S3-compatible servers. */
  readonly forcePathStyle?: boolean;
  /** Requests in flight per store (every request, including multipart parts). Default 8. */
  readonly maxConcurrency?: number;
  /**
   * putStream and putFile upload at least this many bytes as multipart (parts in parallel); smaller
   * objects as one PutObject, which costs one request instead of at least three. Default 32 MiB.
   */
  readonly multipartThresholdBytes?: number;
  /** Multipart part size, at least 5 MiB. Default 8 MiB. */
  readonly partSizeBytes?: number;
  /** Parts of one multipart upload in flight (also bounded by maxConcurrency). Default 4. */
  readonly uploadQueueSize?: number;
  /** Tries per request, first included (503 SlowDown, 5xx, throttling, timeouts, resets). Default 5. */
  readonly maxAttempts?: number;
  /** Backoff base, ms: retry n waits uniform [0, min(max, base * 2^n)]. Default 100. */
  readonly retryBaseDelayMs?: number;
  /** Backoff cap, ms. Default 5000. */
  readonly retryMaxDelayMs?: number;
  /** A request (or response body) that makes no progress for this long fails, and is retried. Default 30 000. */
  readonly requestTimeoutMs?: number;
  /** TCP connect timeout, ms. Default 5000. */
  readonly connectionTimeoutMs?: number;
  /** ListObjectsV2 MaxKeys. Default 1000. */
  readonly listPageSize?: number;
  /** Keys per DeleteObjects request, at most 1000. Default 1000. */
  readonly deleteBatchSize?: number;
  /** Exclusive putAtomic also sends If-None-Match: * (closes the HEAD-then-PUT race where supported). Default true. */
  readonly conditionalWrites?: boolean;
  /** SDK checksum mode. WHEN_REQUIRED (default) keeps stream bodies plain; some S3-compatible servers store aws-chunked framing otherwise. */
  readonly checksums?: 'WHEN_REQUIRED' | 'WHEN_SUPPORTED';
  /** Entropy injection for data files (see KeyLayout); the marker must occur once in `prefix`. */
  readonly entropy?: EntropyOptions;
  /** A client to use instead of building one (its own settings then apply; close() leaves it open). */
  readonly client?: S3Client;
}

/** Counts of S3 requests sent, by command (retries not included), for benchmarks and tests. */
export type S3RequestCounts = Readonly<Record<string, number>>;

/**
 * A BlobStore over S3 (or any S3-compatible server). Single-shot writes are one PutObject (S3
 * makes an object visible all at once, which is what putAtomic needs); streams go through
 * @aws-sdk/lib-storage's multipart Upload. Every request passes one concurrency limiter and the
 * bounded retry strategy; every failure surfaces as a StorageError naming bucket, key and cause.
 */
export class S3BlobStore implements BlobStore {
  readonly location: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly endpoint: string;
  readonly client: S3Client;

  private readonly ownsClient: boolean;
  private readonly layout: KeyLayout;
  private readonly limiter: ConcurrencyLimiter;
  private readonly retry: RetryPolicy;
  private readonly multipartThreshold: number;
  private readonly partSize: number;
  private readonly uploadQueueSize: number;
  private readonly listPageSize: number;
  private readonly deleteBatchSize: number;
  private conditionalWrites: boolean;
  private bucketVerified = false;
  private readonly exclusiveWrites = new Map<string, Promise<void>>();
  private closed = false;
  private readonly counts = new Map<string, number>();

  constructor(opts: S3BlobStoreOptions) {
    this.bucket = checkBucketName(opts.bucket);
    this.prefix = normalizePrefix(opts.prefix ?? '');
    this.layout = new KeyLayout(this.prefix, opts.entropy);
    const maxConcurrency = positiveInt(opts.maxConcurrency ?? 8, 'maxConcurrency');
    this.retry = {
      maxAttempts: positiveInt(opts.maxAttempts ?? 5, 'maxAttempts'),
      baseDelayMs: nonNegative(opts.retryBaseDelayMs ?? 100, 'retryBaseDelayMs'),
      maxDelayMs: nonNegative(opts.retryMaxDelayMs ?? 5_000, 'retryMaxDelayMs'),
    };
    this.partSize = positiveInt(opts.partSizeBytes ?? 8 * MiB, 'partSizeBytes');
    if (this.partSize < MIN_PART_SIZE) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `partSizeBytes must be at least 5 MiB (S3's minimum part size); got ${this.partSize}.`,
      );
    }
    this.multipartThreshold = positiveInt(
      opts.multipartThresholdBytes ?? DEFAULT_MULTIPART_THRESHOLD,
      'multipartThresholdBytes',
    );
    this.uploadQueueSize = positiveInt(opts.uploadQueueSize ?? 4, 'uploadQueueSize');
    this.listPageSize = positiveInt(opts.listPageSize ?? 1000, 'listPageSize');
    this.deleteBatchSize = positiveInt(opts.deleteBatchSize ?? MAX_DELETE_BATCH, 'deleteBatchSize');
    if (this.deleteBatchSize > MAX_DELETE_BATCH) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `deleteBatchSize may be at most 1000 (the DeleteObjects limit); got ${this.deleteBatchSize}.`,
      );
    }
    this.conditionalWrites = opts.conditionalWrites ?? true;
    this.limiter = new ConcurrencyLimiter(maxConcurrency);
    this.endpoint =
      opts.endpoint ?? process.env.AWS_ENDPOINT_URL_S3 ?? process.env.AWS_ENDPOINT_URL ?? 'the AWS S3 endpoint';
    this.location = formatS3Url(this.bucket, this.prefix);

    this.ownsClient = opts.client === undefined;
    this.client = opts.client ?? new S3Client(this.clientConfig(opts, maxConcurrency));
  }

  private clientConfig(opts: S3BlobStoreOptions, maxConcurrency: number): S3ClientConfig {
    const checksums = opts.checksums ?? 'WHEN_REQUIRED';
    const config: S3ClientConfig = {
      maxAttempts: this.retry.maxAttempts,
      retryStrategy: new JitterRetryStrategy(this.retry),
      requestChecksumCalculation: checksums,
      responseChecksumValidation: checksums,
      requestHandler: {
        // An inactivity timeout (the SDK's requestTimeout caps total time, which would fail big parts on slow links).
        socketTimeout: positiveInt(opts.requestTimeoutMs ?? 30_000, 'requestTimeoutMs'),
        connectionTimeout: positiveInt(opts.connectionTimeoutMs ?? 5_000, 'connectionTimeoutMs'),
        // Sockets beyond the limiter's bound would only sit idle; a few spare absorb aborted ones.
        httpAgent: { keepAlive: true, maxSockets: maxConcurrency + 4 },
        httpsAgent: { keepAlive: true, maxSockets: maxConcurrency + 4 },
      },
    };
    // Only set what was given: the SDK resolves absent fields from the environment and config files.
    if (opts.endpoint !== undefined) config.endpoint = opts.endpoint;
    if (opts.forcePathStyle !== undefined) config.forcePathStyle = opts.forcePathStyle;
    if (opts.credentials !== undefined) config.credentials = opts.credentials;
    if (opts.region !== undefined) config.region = opts.region;
    else if (
      opts.endpoint !== undefined &&
      process.env.AWS_REGION === undefined &&
      process.env.AWS_DEFAULT_REGION === undefined
    ) {
      config.region = 'us-east-1';
    }
    return config;
  }

  /**
   * The name to write a new checkpoint data file under. With entropy injection on, the name carries
   * random characters that put the object under a random key prefix; record the returned name (not
   * the one passed in) in the handle. Without entropy it returns `name`.
   */
  dataFileName(name: string): string {
    checkBlobName(name);
    return this.layout.dataFileName(name);
  }

  get entropyEnabled(): boolean {
    return this.layout.entropyEnabled;
  }

  /** S3 requests sent so far, by command name. */
  requestCounts(): S3RequestCounts {
    return Object.fromEntries(this.counts);
  }

  // ------------------------------------------------------------------ writes

  async put(name: string, data: Uint8Array): Promise<void> {
    const key = this.keyOf(name);
    await this.send(this.context('writing', key), 'PutObject', () =>
      this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: data, ContentLength: data.byteLength }),
      ),
    );
  }

  /**
   * Keeps the chunks it is handed, without a copy (no releasesStreamChunks: see BlobStore.putStream;
   * checkpoint streams hand over fresh batches). A copy per chunk before the copy that joins them
   * into one PutObject body cost about a fifth of a checkpoint's CPU time (bench/s3-storage.ts).
   */
  async putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    return this.putChunks(name, data);
  }

  /**
   * Uploads a local file: below the multipart threshold one read and one PutObject, above it
   * part-sized reads straight into parallel parts, so the upload needs few event-loop turns. The
   * crc32 is computed as the bytes are read.
   */
  async putFile(name: string, localPath: string): Promise<PutFileResult> {
    const key = this.keyOf(name);
    let fh;
    try {
      fh = await open(localPath, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new StorageError(
        code === 'ENOENT' ? 'NOT_FOUND' : 'STORAGE_IO',
        `cannot read local file ${localPath} to upload it to s3://${this.bucket}/${key}: ${code ?? String(err)}. It must exist and be readable while the snapshot runs.`,
        { cause: err },
      );
    }
    let crc = 0;
    const readSize = this.partSize;
    const file = fh;
    let readError: unknown;
    async function* chunks(): AsyncGenerator<Uint8Array> {
      for (let position = 0; ; ) {
        // A fresh buffer per read: the upload keeps the chunks it is handed (no copy, see putChunks).
        const buf = Buffer.allocUnsafe(readSize);
        let n: number;
        try {
          ({ bytesRead: n } = await file.read(buf, 0, readSize, position));
        } catch (err) {
          readError = err;
          throw err;
        }
        if (n === 0) return;
        const chunk = buf.subarray(0, n);
        crc = crc32(chunk, crc);
        position += n;
        yield chunk;
      }
    }
    try {
      const size = await this.putChunks(name, chunks());
      return { size, crc32: crc };
    } catch (err) {
      if (readError !== undefined) {
        throw new StorageError(
          'STORAGE_IO',
          `cannot read local file ${localPath} to upload it: ${(readError as Error).message}`,
          { cause: readError },
        );
      }
      throw err;
    } finally {
      await file.close().catch(() => undefined);
    }
  }

  /** The chunks are fresh buffers nobody writes again (putStream's contract), so they are kept without a copy. */
  private async putChunks(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    const key = this.keyOf(name);
    const source = data[Symbol.asyncIterator]();
    // Buffer up to the threshold: a small stream becomes one PUT (retryable, one request).
    const head: Buffer[] = [];
    let headSize = 0;
    let ended = false;
    const keep = (chunk: Uint8Array): Buffer => Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    while (headSize < this.multipartThreshold) {
      const next = await source.next();
      if (next.done === true) {
        ended = true;
        break;
      }
      head.push(keep(next.value));
      headSize += next.value.byteLength;
    }
    if (ended) {
      await this.put(name, head.length === 1 ? head[0] : Buffer.concat(head, headSize));
      return headSize;
    }
    return this.multipartUpload(key, head, headSize, source, keep);
  }

  private async multipartUpload(
    key: string,
    head: Buffer[],
    headSize: number,
    rest: AsyncIterator<Uint8Array>,
    keep: (chunk: Uint8Array) => Buffer,
  ): Promise<number> {
    let size = headSize;
    const body = Readable.from(
      (async function* (): AsyncGenerator<Buffer> {
        yield* head;
        for (let next = await rest.next(); next.done !== true; next = await rest.next()) {
          size += next.value.byteLength;
          // lib-storage holds chunks until a part is full: they are the caller's fresh chunks, not copies.
          yield keep(next.value);
        }
      })(),
      { objectMode: false },
    );
    const tracker = new UploadTracker(this, key);
    const abortController = new AbortController();
    tracker.onFirstFailure = () => abortController.abort();
    const upload = new Upload({
      client: tracker.client,
      params: { Bucket: this.bucket, Key: key, Body: body },
      partSize: this.partSize,
      queueSize: this.uploadQueueSize,
      // We abort ourselves, after in-flight parts settle, and with the real error kept.
      leavePartsOnError: true,
      abortController,
    });
    try {
      await upload.done();
      return size;
    } catch (err) {
      body.destroy();
      await tracker.settled();
      await tracker.abortMultipart();
      // No request failed: the caller's source did, and its error is the caller's to see, unchanged.
      // Otherwise lib-storage reports its own "Upload aborted." (we aborted); the request error is the cause.
      if (tracker.firstError === undefined && (err as { name?: string } | null)?.name !== 'AbortError') throw err;
      throw toStorageError(tracker.firstError ?? err, this.context('writing (multipart)', key));
    }
  }

  async putAtomic(name: string, data: Uint8Array, opts: { exclusive?: boolean } = {}): Promise<void> {
    const key = this.keyOf(name);
    if (opts.exclusive !== true) {
      await this.put(name, data);
      return;
    }
    // One exclusive write per key at a time in this process, so HEAD-then-PUT is exact here.
    const previous = this.exclusiveWrites.get(key) ?? Promise.resolve();
    const mine = previous.then(() => this.putExclusive(key, data));
    const settled = mine.then(
      () => undefined,
      () => undefined,
    );
    this.exclusiveWrites.set(key, settled);
    try {
      await mine;
    } finally {
      if (this.exclusiveWrites.get(key) === settled) this.exclusiveWrites.delete(key);
    }
  }

  private async putExclusive(key: string, data: Uint8Array): Promise<void> {
    // HEAD first: servers that ignore If-None-Match (s3rver, older MinIO) still refuse the common
    // case. Another process could still write between our HEAD and PUT; If-None-Match closes that
    // race where it is honoured (AWS S3 since 2024, current MinIO). On servers that ignore it, two
    // processes writing the same _metadata at once (two coordinators of one job) can both "win".
    if ((await this.headObject(key)) !== null) throw this.alreadyExists(key);
    const md5 = createHash('md5').update(data).digest('hex');
    for (;;) {
      const conditional = this.conditionalWrites;
      try {
        await this.send(this.context('writing', key), 'PutObject', () =>
          this.client.send(
            new PutObjectCommand({
              Bucket: this.bucket,
              Key: key,
              Body: data,
              ContentLength: data.byteLength,
              ...(conditional ? { IfNoneMatch: '*' } : {}),
            }),
          ),
        );
        return;
      } catch (err) {
        const cause = err instanceof StreamStateError ? err.cause : err;
        if (conditional && isNotImplemented(cause)) {
          this.conditionalWrites = false; // this server has no conditional PUT: fall back to HEAD-then-PUT
          continue;
        }
        if (conditional && isPreconditionFailed(cause)) {
          // A retried PUT can meet the object its own earlier attempt wrote: same bytes = ours.
          const existing = await this.headObject(key);
          if (existing !== null && existing.etag === md5) return;
          throw this.alreadyExists(key);
        }
        throw err;
      }
    }
  }

  // ------------------------------------------------------------------ reads

  async get(name: string): Promise<Buffer> {
    const key = this.keyOf(name);
    return this.readObject('reading', key);
  }

  async getRange(name: string, offset: number, length: number): Promise<Buffer> {
    checkRange(name, offset, length);
    const key = this.keyOf(name);
    if (length === 0) {
      if ((await this.statKey(key, name)) === null) throw toStorageError(notFound(), this.context('reading', key));
      return Buffer.alloc(0);
    }
    // Like the other stores, a range reaching past the end returns the bytes that exist.
    return this.readObject('reading (range)', key, { offset, length });
  }

  /**
   * One GetObject streamed to a temp file beside the target, then renamed. With `maxBytes`, a
   * larger object is refused from its Content-Length before any of its body is read, and the
   * count of bytes received is checked as they arrive (a server that sends more than it declared).
   */
  async download(name: string, localPath: string, opts?: DownloadOptions): Promise<void> {
    const key = this.keyOf(name);
    const limit = downloadLimit(name, opts);
    const where = `s3://${this.bucket}/${key}`;
    const target = resolve(localPath);
    await mkdir(dirname(target), { recursive: true });
    // Written beside the target and renamed: the local file is whole or absent.
    const temp = `${target}.${randomHex(8)}.part`;
    const ctx = this.context('downloading', key);
    try {
      await this.withBodyRetries(ctx, async () => {
        const out = await this.sendRaw('GetObject', async () => {
          try {
            return await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
          } catch (err) {
            throw new RequestFailed(await this.attributeNotFound(err));
          }
        });
        const body = out.Body;
        if (out.ContentLength !== undefined && out.ContentLength > limit) {
          if (body instanceof Readable) body.destroy();
          throw downloadTooLarge(where, limit, out.ContentLength);
        }
        let written = 0;
        const counter = async function* (chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
          for await (const chunk of chunks) {
            written += chunk.byteLength;
            if (written > limit) throw downloadTooLarge(where, limit);
            yield chunk;
          }
        };
        if (body instanceof Readable) await pipeline(body, counter, createWriteStream(temp));
        else await pipeline(Readable.from([Buffer.from(await bodyBytes(out))]), counter, createWriteStream(temp));
        if (out.ContentLength !== undefined && written !== out.ContentLength)
          throw shortBody(written, out.ContentLength);
      });
      await rename(temp, target);
    } catch (err) {
      await rm(temp, { force: true }).catch(() => undefined);
      throw toStorageError(err instanceof RequestFailed ? err.cause : err, ctx);
    }
  }

  async stat(name: string): Promise<BlobInfo | null> {
    return this.statKey(this.keyOf(name), name);
  }

  async list(prefix: string): Promise<BlobInfo[]> {
    checkBlobPrefix(prefix);
    this.checkOpen();
    const plan = this.layout.listPlan(prefix);
    const ctx = this.context('listing', plan.scanPrefix);
    const out: BlobInfo[] = [];
    // Paged with StartAfter rather than continuation tokens: portable, and s3rver's tokens need a
    // legacy OpenSSL cipher.
    let startAfter: string | undefined;
    for (;;) {
      const page = await this.send(ctx, 'ListObjectsV2', () =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: plan.scanPrefix.length > 0 ? plan.scanPrefix : undefined,
            MaxKeys: this.listPageSize,
            StartAfter: startAfter,
          }),
        ),
      );
      const contents = page.Contents ?? [];
      for (const obj of contents) {
        if (obj.Key === undefined) continue;
        const name = plan.nameOf(obj.Key);
        // Keys ending in "/" are console "folders", not blobs.
        if (name === undefined || name.endsWith('/')) continue;
        out.push(
          obj.LastModified !== undefined
            ? { name, size: obj.Size ?? 0, modified: obj.LastModified.getTime() }
            : { name, size: obj.Size ?? 0 },
        );
      }
      const last = contents.at(-1)?.Key;
      if (page.IsTruncated !== true || last === undefined) break;
      startAfter = last;
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  // ------------------------------------------------------------------ deletes

  async delete(names: readonly string[]): Promise<void> {
    const keys = [...new Set(names.map((n) => this.keyOf(n)))];
    if (keys.length === 0) return;
    const batches: string[][] = [];
    for (let i = 0; i < keys.length; i += this.deleteBatchSize) batches.push(keys.slice(i, i + this.deleteBatchSize));
    const failures: string[] = [];
    let failed = 0;
    await mapLimited(batches, this.limiter.limit, async (batch) => {
      const ctx = this.context(`deleting ${batch.length} objects`, batch[0]);
      const out = await this.send(ctx, 'DeleteObjects', () =>
        this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.bucket,
            Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
          }),
        ),
      );
      for (const e of out.Errors ?? []) {
        if (e.Code === 'NoSuchKey') continue; // already gone: deletes are idempotent
        failed++;
        if (failures.length < 5) failures.push(`${e.Key ?? '?'}: ${e.Code ?? 'Error'} ${e.Message ?? ''}`.trim());
      }
    });
    if (failed > 0) {
      throw new StorageError(
        'STORAGE_IO',
        `S3 refused to delete ${failed} of ${keys.length} objects in s3://${this.bucket} (${failures.join('; ')}${failed > failures.length ? '; ...' : ''}): ` +
          'check the delete permission (s3:DeleteObject) and object locks; deleting again is safe.',
      );
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsClient) this.client.destroy();
  }

  // ------------------------------------------------------------------ internals

  private keyOf(name: string): string {
    checkBlobName(name);
    this.checkOpen();
    return this.layout.keyOf(name);
  }

  private checkOpen(): void {
    if (this.closed) {
      throw new StorageError('STORAGE_IO', `${this.location} is closed; create a new S3BlobStore to keep using it.`);
    }
  }

  /** @internal Error context for a key (used by the upload tracker too). */
  context(op: string, key?: string): S3ErrorContext {
    return key === undefined
      ? { op, bucket: this.bucket, endpoint: this.endpoint }
      : { op, bucket: this.bucket, key, endpoint: this.endpoint };
  }

  /** @internal Counts a request and runs it under the limiter. Errors come back raw. */
  async sendRaw<T>(commandName: string, run: () => Promise<T>): Promise<T> {
    this.counts.set(commandName, (this.counts.get(commandName) ?? 0) + 1);
    return this.limiter.run(run);
  }

  /** Runs one SDK call under the limiter; failures become StorageErrors. */
  private async send<O>(ctx: S3ErrorContext, command: string, call: () => Promise<O>): Promise<O> {
    try {
      return await this.sendRaw(command, call);
    } catch (err) {
      throw toStorageError(await this.attributeNotFound(err), ctx);
    }
  }

  /** GetObject with the body read inside the limiter; resets while the body streams are retried too. */
  private async readObject(op: string, key: string, range?: { offset: number; length: number }): Promise<Buffer> {
    const rangeHeader = range === undefined ? undefined : `bytes=${range.offset}-${range.offset + range.length - 1}`;
    const ctx = this.context(op, key);
    try {
      return await this.withBodyRetries(ctx, async () => {
        const out = await this.sendRaw('GetObject', async () => {
          let response: GetObjectCommandOutput;
          try {
            response = await this.client.send(
              new GetObjectCommand({ Bucket: this.bucket, Key: key, Range: rangeHeader }),
            );
          } catch (err) {
            if (range !== undefined && (err as { name?: string }).name === 'InvalidRange')
              return { bytes: Buffer.alloc(0), expected: 0, partial: true };
            throw new RequestFailed(err);
          }
          return {
            bytes: await bodyBytes(response),
            expected: response.ContentLength,
            partial: response.ContentRange !== undefined,
          };
        });
        if (out.expected !== undefined && out.bytes.byteLength !== out.expected)
          throw shortBody(out.bytes.byteLength, out.expected);
        if (range === undefined) return out.bytes;
        // A server that ignored the Range header (s3rver does for "bytes=0-0") sent the whole object.
        const slice = out.partial ? out.bytes : out.bytes.subarray(range.offset);
        return slice.byteLength > range.length ? slice.subarray(0, range.length) : slice;
      });
    } catch (err) {
      throw toStorageError(await this.attributeNotFound(err instanceof RequestFailed ? err.cause : err), ctx);
    }
  }

  /**
   * The SDK retries requests but not a body that breaks off after the headers arrived: retry those
   * here, with the same bounded backoff. Request failures (already retried) pass straight through.
   */
  private async withBodyRetries<T>(ctx: S3ErrorContext, attempt: () => Promise<T>): Promise<T> {
    for (let n = 1; ; n++) {
      try {
        return await attempt();
      } catch (err) {
        if (err instanceof RequestFailed || n >= this.retry.maxAttempts || networkErrorCode(err) === undefined)
          throw err;
        if (this.closed) throw toStorageError(err, ctx);
        await sleep(backoffDelay(this.retry, n));
      }
    }
  }

  private async statKey(key: string, name: string): Promise<BlobInfo | null> {
    const head = await this.headObject(key);
    if (head === null) return null;
    return head.modified !== undefined ? { name, size: head.size, modified: head.modified } : { name, size: head.size };
  }

  private async headObject(key: string): Promise<{ size: number; modified?: number; etag?: string } | null> {
    const ctx = this.context('checking', key);
    try {
      const out = await this.sendRaw('HeadObject', () =>
        this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key })),
      );
      return {
        size: out.ContentLength ?? 0,
        ...(out.LastModified !== undefined ? { modified: out.LastModified.getTime() } : {}),
        ...(out.ETag !== undefined ? { etag: out.ETag.replace(/"/g, '') } : {}),
      };
    } catch (err) {
      const attributed = await this.attributeNotFound(err);
      if (isNotFound(attributed)) return null;
      throw toStorageError(attributed, ctx);
    }
  }

  /**
   * A 404 without a body (HEAD) cannot tell a missing object from a missing bucket. The first
   * time, ask HeadBucket; a missing bucket then surfaces as NoSuchBucket instead of "no object".
   */
  private async attributeNotFound(err: unknown): Promise<unknown> {
    if (this.bucketVerified || !isNotFound(err)) return err;
    try {
      await this.sendRaw('HeadBucket', () => this.client.send(new HeadBucketCommand({ Bucket: this.bucket })));
      this.bucketVerified = true;
      return err;
    } catch (bucketErr) {
      if (isNotFound(bucketErr) || (bucketErr as { name?: string }).name === 'NoSuchBucket') {
        return Object.assign(new Error(`bucket ${this.bucket} does not exist`), { name: 'NoSuchBucket', cause: err });
      }
      return err;
    }
  }

  private alreadyExists(key: string): StorageError {
    return new StorageError(
      'ALREADY_EXISTS',
      `s3://${this.bucket}/${key} already exists and is never overwritten: a checkpoint or savepoint with this id was already written; use a new id or directory.`,
    );
  }
}

/** Builds a store from `s3://bucket/prefix`; `opts` supplies everything else. */
export function s3BlobStoreFromUrl(url: string, opts: Omit<S3BlobStoreOptions, 'bucket' | 'prefix'> = {}): S3BlobStore {
  const { bucket, prefix } = parseS3Url(url);
  return new S3BlobStore({ ...opts, bucket, prefix });
}

// ------------------------------------------------------------------ helpers

/** A request the SDK already retried; withBodyRetries must not retry it again. */
class RequestFailed extends Error {
  constructor(override readonly cause: unknown) {
    super('request failed');
  }
}

async function bodyBytes(out: GetObjectCommandOutput): Promise<Buffer> {
  if (out.Body === undefined) return Buffer.alloc(0);
  const bytes = await out.Body.transformToByteArray();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function shortBody(got: number, expected: number): Error {
  // Shaped as a connection reset so it is retried like one.
  return Object.assign(new Error(`response body ended after ${got} of ${expected} bytes`), { code: 'ECONNRESET' });
}

function notFound(): Error {
  return Object.assign(new Error('not found'), { name: 'NotFound', $metadata: { httpStatusCode: 404 } });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function positiveInt(value: number, what: string): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `S3BlobStore option ${what} must be a positive integer; got ${value}.`,
    );
  }
  return value;
}

function nonNegative(value: number, what: string): number {
  if (!Number.isFinite(value) || value < 0) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `S3BlobStore option ${what} must be a non-negative number; got ${value}.`,
    );
  }
  return value;
}
