import { open, unlink } from 'node:fs/promises';
import { posix } from 'node:path';
import { crc32 } from 'node:zlib';
import type {
  CheckpointStreamFactory,
  StateFileReader,
  StateOutputStream,
  StateScope,
  UploadFileOptions,
} from '../backend/contract.js';
import type { FileStreamHandle, InlineStreamHandle, StreamHandle } from '../backend/handles.js';
import { FormatError, SnapshotError, StorageError, StreamStateError } from '../errors.js';
import type { BlobStore } from '../storage/blob-store.js';
import { randomHex } from '../storage/blob-names.js';
import { resolveHandlePath } from './handle-paths.js';

export const DEFAULT_INLINE_THRESHOLD = 20 * 1024;
/** Bytes gathered before a chunk goes to the store once a stream has switched to a file. */
const UPLOAD_BATCH_BYTES = 256 * 1024;
/**
 * Bytes queued for the upload before write() waits (backpressure). Snapshot writers hand over
 * ~1 MiB chunks: room for a few keeps serialization running while the store writes.
 */
const UPLOAD_HIGH_WATER = 16 * UPLOAD_BATCH_BYTES;
/**
 * Batch size when the store hands chunks back (BlobStore.releasesStreamChunks): every write is
 * copied into one of a few recycled 1 MiB buffers, so a snapshot touches no fresh memory per MiB.
 */
const RECYCLED_BATCH_BYTES = 1024 * 1024;
/**
 * Recycled batches shared by every stream of this process (a stream takes one out and puts it
 * back once the store released it; at most MAX_RECYCLED_BATCHES are kept). With a free list per
 * stream, every stream of a few MiB (a changelog segment) started on fresh memory: about 3 ms of
 * page faults per MiB in the turn that filled it, and off-heap churn that starts full GCs.
 */
const recycledBatches: Buffer[] = [];
const MAX_RECYCLED_BATCHES = 8;

export interface BlobStreamFactoryOptions {
  readonly store: BlobStore;
  /** Store-relative directory of the future _metadata; exclusive files go here. */
  readonly baseDir: string;
  /** Store-relative directory of shared files (a checkpoint's `<job>/shared`; a savepoint's own dir). */
  readonly sharedDir: string;
  /** Streams of at most this many bytes come back inline. Default 20 KiB; 0 = always files. */
  readonly inlineThreshold?: number;
  /** Name data files through store.dataFileName (entropy injection). Checkpoints only: savepoints stay relocatable. */
  readonly entropy?: boolean;
}

export { resolveHandlePath, snapshotFolders } from './handle-paths.js';

/**
 * The largest state file read() takes into memory whole: the largest single read the file system
 * does (2 GiB - 1). Larger files are read by range or downloaded.
 */
export const MAX_WHOLE_READ_BYTES = 2 ** 31 - 1;

/** Writes the state streams of one snapshot into a BlobStore. */
export class BlobCheckpointStreamFactory implements CheckpointStreamFactory {
  readonly store: BlobStore;
  readonly baseDir: string;
  readonly sharedDir: string;
  readonly inlineThreshold: number;
  private readonly entropy: boolean;

  constructor(opts: BlobStreamFactoryOptions) {
    const threshold = opts.inlineThreshold ?? DEFAULT_INLINE_THRESHOLD;
    if (!Number.isSafeInteger(threshold) || threshold < 0) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `inlineThreshold must be a non-negative integer (bytes); got ${opts.inlineThreshold}.`,
      );
    }
    this.store = opts.store;
    this.baseDir = posix.normalize(opts.baseDir);
    this.sharedDir = posix.normalize(opts.sharedDir);
    this.inlineThreshold = threshold;
    this.entropy = opts.entropy === true && typeof opts.store.dataFileName === 'function';
  }

  createOutputStream(scope: StateScope): StateOutputStream {
    return new BlobStateOutputStream(this, this.newFile(scope));
  }

  async uploadFile(
    localPath: string,
    scope: StateScope,
    name?: string,
    opts: UploadFileOptions = {},
  ): Promise<FileStreamHandle> {
    if (
      name !== undefined &&
      (name.length === 0 || name.includes('/') || name.includes('\\') || name === '.' || name === '..')
    ) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `uploadFile name ${JSON.stringify(name)} must be a single file name without "/".`,
      );
    }
    // Random prefix: two subtasks may upload equally named files into one shared/savepoint dir.
    const target = this.newFile(scope, name);
    if (this.store.putFile !== undefined) {
      // The store moves the bytes itself (off the event loop on local disk): see BlobStore.putFile.
      try {
        const { size, crc32: crc } = await this.store.putFile(target.name, localPath, {
          immutable: opts.immutable === true,
        });
        return { type: 'file', path: target.path, size, crc32: crc };
      } catch (err) {
        await this.store.delete([target.name]).catch(() => undefined);
        throw err;
      }
    }
    let source;
    try {
      source = await open(localPath, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new StorageError(
        code === 'ENOENT' ? 'NOT_FOUND' : 'STORAGE_IO',
        `cannot upload local file ${localPath}: ${code ?? String(err)}. It must exist and be readable while the snapshot runs.`,
        { cause: err },
      );
    }
    let crc = 0;
    async function* checksummed(stream: AsyncIterable<Buffer>): AsyncGenerator<Uint8Array> {
      for await (const chunk of stream) {
        crc = crc32(chunk, crc);
        yield chunk;
      }
    }
    try {
      const size = await this.store.putStream(
        target.name,
        checksummed(source.createReadStream({ highWaterMark: 1024 * 1024 })),
      );
      return { type: 'file', path: target.path, size, crc32: crc };
    } catch (err) {
      await this.store.delete([target.name]).catch(() => undefined);
      throw err;
    } finally {
      await source.close().catch(() => undefined);
    }
  }

  async discardFiles(files: readonly FileStreamHandle[]): Promise<void> {
    if (files.length === 0) return;
    await this.store.delete(files.map((f) => resolveHandlePath(this.baseDir, f.path)));
  }

  /** A new random file name in the scope's directory: its store name and its path relative to baseDir. */
  private newFile(scope: StateScope, suffix?: string): { name: string; path: string } {
    const file = suffix === undefined ? randomHex(32) : `${randomHex(16)}-${suffix}`;
    const dir = scope === 'shared' ? this.sharedDir : this.baseDir;
    const plain = posix.join(dir, file);
    const name = this.entropy ? this.store.dataFileName!(plain) : plain;
    return { name, path: posix.relative(this.baseDir, name) };
  }
}

/**
 * A stream that stays in memory up to the inline threshold and then streams into a new file.
 * Chunks are copied (callers may reuse their buffers); the crc32 is computed as bytes arrive.
 */
class BlobStateOutputStream implements StateOutputStream {
  private bytes = 0;
  private crc = 0;
  private buffer: Buffer | null = null;
  private buffered = 0;
  private upload: { channel: ChunkChannel; done: Promise<number> } | null = null;
  private state: 'open' | 'closed' | 'discarded' = 'open';
  /** Batch buffers the store handed back (only when it releases chunks), ready to be refilled. */
  private readonly free: Buffer[] | null;

  constructor(
    private readonly factory: BlobCheckpointStreamFactory,
    private readonly file: { name: string; path: string },
  ) {
    this.free = factory.store.releasesStreamChunks === true ? recycledBatches : null;
  }

  get position(): number {
    return this.bytes;
  }

  async write(chunk: Uint8Array): Promise<void> {
    this.checkOpen('write to');
    const n = chunk.byteLength;
    if (n === 0) return;
    this.crc = crc32(chunk, this.crc);
    this.bytes += n;
    if (this.upload === null && this.bytes > this.factory.inlineThreshold) this.startUpload();
    if (this.upload !== null && n >= UPLOAD_BATCH_BYTES && this.free === null) {
      // Large chunk: flush what is gathered, then send a copy of the chunk as it is.
      await this.flushBatch();
      await this.upload.channel.push(Buffer.from(chunk));
      return;
    }
    let off = 0;
    while (off < n) {
      if (this.buffer === null) this.buffer = this.newBatch();
      const take = Math.min(n - off, this.buffer.length - this.buffered);
      this.buffer.set(chunk.subarray(off, off + take), this.buffered);
      this.buffered += take;
      off += take;
      if (this.buffered === this.buffer.length && this.upload !== null) await this.flushBatch();
    }
  }

  /** The next batch buffer: a recycled one when the store hands chunks back, else a new one. */
  private newBatch(): Buffer {
    if (this.upload === null) return Buffer.allocUnsafe(Math.max(this.factory.inlineThreshold, 1));
    if (this.free === null) return Buffer.allocUnsafe(UPLOAD_BATCH_BYTES);
    return this.free.pop() ?? Buffer.allocUnsafeSlow(RECYCLED_BATCH_BYTES);
  }

  async closeAndGetHandle(): Promise<StreamHandle | null> {
    this.checkOpen('close');
    this.state = 'closed';
    if (this.upload === null) {
      const size = this.bytes;
      const data = this.buffer === null ? null : this.buffer.subarray(0, this.buffered);
      this.buffer = null;
      if (data === null || size === 0) return null;
      const handle: InlineStreamHandle = { type: 'inline', data: data.toString('base64'), size, crc32: this.crc };
      return handle;
    }
    try {
      await this.flushBatch();
      this.upload.channel.end();
      const size = await this.upload.done;
      if (size !== this.bytes) {
        throw new SnapshotError(
          'SNAPSHOT_FAILED',
          `${this.describe()}: the store took ${size} of ${this.bytes} bytes. Retry the checkpoint.`,
        );
      }
      return { type: 'file', path: this.file.path, size, crc32: this.crc };
    } catch (err) {
      await this.deleteFile();
      throw err;
    }
  }

  async discard(): Promise<void> {
    if (this.state !== 'open') return; // after closeAndGetHandle the file belongs to the handle's owner
    this.state = 'discarded';
    this.buffer = null;
    if (this.upload !== null) {
      this.upload.channel.abort(this.cancelled());
      await this.upload.done.catch(() => undefined);
      await this.deleteFile();
    }
  }

  private startUpload(): void {
    const free = this.free;
    // A recycled batch goes back to the free list once the store asked for the chunk after it.
    const channel = new ChunkChannel(
      free === null
        ? undefined
        : (chunk) => {
            if (
              chunk.byteOffset === 0 &&
              chunk.buffer.byteLength === RECYCLED_BATCH_BYTES &&
              free.length < MAX_RECYCLED_BATCHES
            )
              free.push(Buffer.from(chunk.buffer, 0, RECYCLED_BATCH_BYTES));
          },
    );
    const done = this.factory.store.putStream(this.file.name, channel);
    // Keep the failure observable by write()/close() without an unhandled rejection meanwhile.
    done.catch((err: unknown) => channel.abort(err));
    this.upload = { channel, done };
    // What was buffered for inlining becomes the start of the file.
    if (this.buffer !== null && this.buffered > 0) {
      const head = this.buffer.subarray(0, this.buffered);
      this.buffer = null;
      this.buffered = 0;
      channel.pushNoWait(head);
    } else {
      this.buffer = null;
    }
  }

  private async flushBatch(): Promise<void> {
    if (this.upload === null || this.buffer === null || this.buffered === 0) return;
    const batch = this.buffer.subarray(0, this.buffered);
    this.buffer = null; // ownership moves to the channel (and back through `free` when recycled)
    this.buffered = 0;
    await this.upload.channel.push(batch);
  }

  private async deleteFile(): Promise<void> {
    await this.factory.store.delete([this.file.name]).catch(() => undefined);
  }

  private checkOpen(what: string): void {
    if (this.state === 'discarded') throw this.cancelled();
    if (this.state === 'closed') {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `cannot ${what} a state stream that was already closed (${this.describe()}); create a new stream.`,
      );
    }
  }

  private cancelled(): SnapshotError {
    return new SnapshotError(
      'SNAPSHOT_CANCELLED',
      `the state stream ${this.describe()} was discarded (snapshot cancelled or backend closed).`,
    );
  }

  private describe(): string {
    return `${this.factory.store.location}/${this.file.name}`;
  }
}

/**
 * A single-producer single-consumer queue of chunks that the store's putStream iterates. push()
 * waits while more than UPLOAD_HIGH_WATER bytes are queued; abort() fails both sides.
 */
class ChunkChannel implements AsyncIterable<Uint8Array> {
  private readonly queue: Uint8Array[] = [];

  /** `released`: called with each chunk once the consumer asked for the next one (or ended). */
  constructor(private readonly released?: (chunk: Uint8Array) => void) {}
  private queuedBytes = 0;
  private ended = false;
  private failure: { error: unknown } | null = null;
  private wakeConsumer: (() => void) | null = null;
  private wakeProducer: (() => void) | null = null;

  pushNoWait(chunk: Uint8Array): void {
    if (this.failure) throw this.failure.error;
    this.queue.push(chunk);
    this.queuedBytes += chunk.byteLength;
    this.wake('consumer');
  }

  async push(chunk: Uint8Array): Promise<void> {
    this.pushNoWait(chunk);
    while (this.queuedBytes > UPLOAD_HIGH_WATER && this.failure === null) {
      await new Promise<void>((resolve) => (this.wakeProducer = resolve));
    }
    if (this.failure) throw this.failure.error;
  }

  end(): void {
    this.ended = true;
    this.wake('consumer');
  }

  abort(error: unknown): void {
    if (this.failure === null) this.failure = { error };
    this.wake('consumer');
    this.wake('producer');
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    for (;;) {
      if (this.failure) throw this.failure.error;
      const chunk = this.queue.shift();
      if (chunk !== undefined) {
        this.queuedBytes -= chunk.byteLength;
        if (this.queuedBytes <= UPLOAD_HIGH_WATER) this.wake('producer');
        yield chunk;
        this.released?.(chunk);
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.wakeConsumer = resolve));
    }
  }

  private wake(who: 'consumer' | 'producer'): void {
    const fn = who === 'consumer' ? this.wakeConsumer : this.wakeProducer;
    if (who === 'consumer') this.wakeConsumer = null;
    else this.wakeProducer = null;
    fn?.();
  }
}

/** Reads the files of one checkpoint or savepoint (handle paths relative to `baseDir`). */
export class BlobStateFileReader implements StateFileReader {
  constructor(
    readonly store: BlobStore,
    readonly baseDir: string,
  ) {}

  async read(file: FileStreamHandle): Promise<Buffer> {
    const name = resolveHandlePath(this.baseDir, file.path);
    checkDeclaredSize(file, this.describe(file));
    if (file.size > MAX_WHOLE_READ_BYTES) {
      throw new FormatError(
        'CORRUPT',
        `${this.describe(file)}: the handle declares ${file.size} bytes, more than a stream streamstate reads whole (${MAX_WHOLE_READ_BYTES}); the _metadata is damaged.`,
      );
    }
    // One byte more than declared: a longer file shows as such, and nothing past it is loaded.
    const data = await this.store.getRange(name, 0, file.size + 1);
    verifyBytes(data, file, this.describe(file));
    return data;
  }

  async readRange(file: FileStreamHandle, offset: number, length: number): Promise<Buffer> {
    const name = resolveHandlePath(this.baseDir, file.path);
    checkDeclaredSize(file, this.describe(file));
    if (length > MAX_WHOLE_READ_BYTES) {
      throw new FormatError(
        'CORRUPT',
        `${this.describe(file)}: a single read of ${length} bytes was asked for, more than any block streamstate writes; the snapshot's index is damaged.`,
      );
    }
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 0 ||
      offset + length > file.size
    ) {
      throw new FormatError(
        'CORRUPT',
        `${this.describe(file)}: range [${offset}, +${length}) lies outside the file's ${file.size} bytes; the snapshot's index is damaged.`,
      );
    }
    const data = await this.store.getRange(name, offset, length);
    if (data.length !== length) {
      throw new FormatError(
        'TRUNCATED',
        `${this.describe(file)} is shorter than recorded (read ${data.length} of ${length} bytes at offset ${offset}); ` +
          'the file was cut short. Restore from another checkpoint.',
      );
    }
    return data;
  }

  async download(file: FileStreamHandle, localPath: string): Promise<void> {
    const name = resolveHandlePath(this.baseDir, file.path);
    checkDeclaredSize(file, this.describe(file));
    // Bounded by the recorded size while copying (no stat first: one request less per file on S3),
    // so a file far larger than its handle says is not copied.
    await this.store.download(name, localPath, { maxBytes: file.size });
    try {
      const { size, crc } = await checksumLocalFile(localPath);
      verifySizeAndCrc(size, crc, file, this.describe(file));
    } catch (err) {
      await unlink(localPath).catch(() => undefined);
      throw err;
    }
  }

  describe(file: FileStreamHandle): string {
    let name: string;
    try {
      name = resolveHandlePath(this.baseDir, file.path);
    } catch {
      name = `${this.baseDir}/${file.path}`;
    }
    return `${this.store.location}/${name}`;
  }
}

/** The largest _metadata read (a few KiB is usual; inline state is capped by inlineThreshold per stream). */
export const MAX_METADATA_BYTES = 64 * 1024 * 1024;

/**
 * Reads a _metadata file, never more than MAX_METADATA_BYTES (+1 to see that it is larger): a
 * crafted or runaway file is refused without loading it. Missing → the store's NOT_FOUND.
 */
export async function readMetadataBytes(store: BlobStore, name: string, what: string): Promise<Buffer> {
  const bytes = await store.getRange(name, 0, MAX_METADATA_BYTES + 1);
  if (bytes.length > MAX_METADATA_BYTES) {
    throw new FormatError(
      'CORRUPT',
      `${what} is larger than ${MAX_METADATA_BYTES} bytes, far beyond any _metadata streamstate writes; it is damaged or not a _metadata. Restore from another checkpoint.`,
    );
  }
  return bytes;
}

/** The bytes of any stream handle: inline ones are decoded here, files read through `files`. Verifies size and crc32. */
export async function readStreamHandle(handle: StreamHandle, files: StateFileReader): Promise<Buffer> {
  if (handle.type === 'file') return files.read(handle);
  if (handle.type !== 'inline' || typeof handle.data !== 'string') {
    throw new FormatError(
      'CORRUPT',
      `unknown stream handle type ${JSON.stringify((handle as { type?: unknown }).type)}; the _metadata is damaged or newer.`,
    );
  }
  const data = Buffer.from(handle.data, 'base64');
  verifyBytes(data, handle, 'inline state in _metadata');
  return data;
}

/** A file handle's declared size must be a size read() can honour; checked before any read. */
function checkDeclaredSize(file: FileStreamHandle, what: string): void {
  if (!Number.isSafeInteger(file.size) || file.size < 0) {
    throw new FormatError(
      'CORRUPT',
      `${what}: the handle declares size ${String(file.size)}, not a byte count; the _metadata is damaged.`,
    );
  }
}

function verifyBytes(data: Buffer, expected: { size: number; crc32: number }, what: string): void {
  if (data.length !== expected.size) verifySizeAndCrc(data.length, 0, expected, what);
  verifySizeAndCrc(data.length, crc32(data), expected, what);
}

function verifySizeAndCrc(size: number, crc: number, expected: { size: number; crc32: number }, what: string): void {
  if (size < expected.size) {
    throw new FormatError(
      'TRUNCATED',
      `${what} has ${size} bytes but ${expected.size} were written; the file was cut short. Restore from another checkpoint.`,
    );
  }
  if (size > expected.size) {
    throw new FormatError(
      'CORRUPT',
      `${what} has ${size} bytes but ${expected.size} were written; it was modified or replaced. Restore from another checkpoint.`,
    );
  }
  if (crc !== expected.crc32 >>> 0) {
    throw new FormatError(
      'CHECKSUM_MISMATCH',
      `${what}: crc32 is ${crc.toString(16)}, expected ${(expected.crc32 >>> 0).toString(16)}; the file is corrupt. Restore from another checkpoint.`,
    );
  }
}

async function checksumLocalFile(path: string): Promise<{ size: number; crc: number }> {
  const fh = await open(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(1024 * 1024);
    let size = 0;
    let crc = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, size);
      if (bytesRead === 0) return { size, crc };
      crc = crc32(buf.subarray(0, bytesRead), crc);
      size += bytesRead;
    }
  } finally {
    await fh.close();
  }
}
