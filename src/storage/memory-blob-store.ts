import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { SnapshotError, StorageError, StreamStateError } from '../errors.js';
import type { BlobInfo, BlobStore, DownloadOptions } from './blob-store.js';
import {
  checkBlobName,
  checkBlobPrefix,
  checkRange,
  downloadLimit,
  downloadTooLarge,
  randomHex,
} from './blob-names.js';

export interface MemoryBlobStoreOptions {
  /** Registry name; `memory://<name>` is the location. Default: a fresh unique name. */
  readonly name?: string;
  /** Largest object put/putStream accept (bytes). Default: unlimited. */
  readonly maxObjectBytes?: number;
  /** ms clock for objects' modification times (BlobInfo.modified). Default Date.now; tests inject one to age files. */
  readonly clock?: () => number;
}

interface StoredObject {
  readonly data: Buffer;
  readonly modified: number;
}

/**
 * Objects in a Map, for tests and the in-process "memory" checkpoint storage. Stores are kept in a
 * process-wide registry by name, so a job restarted in the same process finds its checkpoints
 * with `MemoryBlobStore.named(name)`. Data is copied on the way in and out: callers may reuse
 * their buffers.
 */
export class MemoryBlobStore implements BlobStore {
  /** putStream copies every chunk as it arrives. */
  readonly releasesStreamChunks = true;
  private static readonly registry = new Map<string, MemoryBlobStore>();
  private static counter = 0;

  /** The store registered under `name`, created (with `opts`) if there is none yet. */
  static named(name: string, opts: Omit<MemoryBlobStoreOptions, 'name'> = {}): MemoryBlobStore {
    return MemoryBlobStore.registry.get(name) ?? new MemoryBlobStore({ ...opts, name });
  }

  /** Whether a store is registered under `name`. */
  static exists(name: string): boolean {
    return MemoryBlobStore.registry.has(name);
  }

  readonly name: string;
  readonly location: string;
  readonly maxObjectBytes: number;
  private readonly objects = new Map<string, StoredObject>();
  private readonly clock: () => number;

  constructor(opts: MemoryBlobStoreOptions = {}) {
    const name = opts.name ?? `mem-${++MemoryBlobStore.counter}-${randomHex(8)}`;
    if (!/^[A-Za-z0-9._-]+$/.test(name)) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `memory store name ${JSON.stringify(name)} may only contain letters, digits, ".", "_" and "-".`,
      );
    }
    if (MemoryBlobStore.registry.has(name)) {
      throw new StorageError(
        'ALREADY_EXISTS',
        `a memory store named "${name}" already exists in this process; use MemoryBlobStore.named("${name}") to get it, or pick another name.`,
      );
    }
    const max = opts.maxObjectBytes ?? Number.POSITIVE_INFINITY;
    if (!(max > 0)) {
      throw new StreamStateError('INVALID_ARGUMENT', `maxObjectBytes must be positive; got ${opts.maxObjectBytes}.`);
    }
    this.name = name;
    this.location = `memory://${name}`;
    this.maxObjectBytes = max;
    this.clock = opts.clock ?? Date.now;
    MemoryBlobStore.registry.set(name, this);
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    checkBlobName(name);
    this.checkSize(name, data.byteLength);
    this.objects.set(name, { data: Buffer.from(data), modified: this.clock() });
  }

  async putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    checkBlobName(name);
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of data) {
      size += chunk.byteLength;
      this.checkSize(name, size);
      chunks.push(Buffer.from(chunk));
    }
    this.objects.set(name, { data: Buffer.concat(chunks, size), modified: this.clock() });
    return size;
  }

  async putAtomic(name: string, data: Uint8Array, opts: { exclusive?: boolean } = {}): Promise<void> {
    checkBlobName(name);
    // A Map insert is atomic; only the exclusive check needs care (no await between check and set).
    if (opts.exclusive && this.objects.has(name)) {
      throw new StorageError(
        'ALREADY_EXISTS',
        `${this.describe(name)} already exists; it is never overwritten. Use a new name.`,
      );
    }
    this.objects.set(name, { data: Buffer.from(data), modified: this.clock() });
  }

  async get(name: string): Promise<Buffer> {
    return Buffer.from(this.require(name).data);
  }

  async getRange(name: string, offset: number, length: number): Promise<Buffer> {
    checkRange(name, offset, length);
    const { data } = this.require(name);
    const start = Math.min(offset, data.length);
    return Buffer.from(data.subarray(start, Math.min(data.length, start + length)));
  }

  async download(name: string, localPath: string, opts?: DownloadOptions): Promise<void> {
    const limit = downloadLimit(name, opts);
    const { data } = this.require(name);
    if (data.length > limit) throw downloadTooLarge(`${this.location}/${name}`, limit, data.length);
    await mkdir(dirname(localPath), { recursive: true });
    await writeFile(localPath, data);
  }

  async stat(name: string): Promise<BlobInfo | null> {
    checkBlobName(name);
    const obj = this.objects.get(name);
    return obj ? { name, size: obj.data.length, modified: obj.modified } : null;
  }

  async list(prefix: string): Promise<BlobInfo[]> {
    checkBlobPrefix(prefix);
    const out: BlobInfo[] = [];
    for (const [name, obj] of this.objects) {
      if (name.startsWith(prefix)) out.push({ name, size: obj.data.length, modified: obj.modified });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async delete(names: readonly string[]): Promise<void> {
    for (const name of names) checkBlobName(name);
    for (const name of names) this.objects.delete(name);
  }

  /** Nothing to release; the data stays so a restore in this process finds it (see destroy()). */
  async close(): Promise<void> {}

  /** Drops every object and removes the store from the registry. */
  destroy(): void {
    this.objects.clear();
    if (MemoryBlobStore.registry.get(this.name) === this) MemoryBlobStore.registry.delete(this.name);
  }

  /** Total bytes held (for tests and metrics). */
  get totalBytes(): number {
    let n = 0;
    for (const obj of this.objects.values()) n += obj.data.length;
    return n;
  }

  private require(name: string): StoredObject {
    checkBlobName(name);
    const obj = this.objects.get(name);
    if (!obj) {
      throw new StorageError(
        'NOT_FOUND',
        `${this.describe(name)} does not exist. Check the name, or whether it was deleted (e.g. by checkpoint retention).`,
      );
    }
    return obj;
  }

  private checkSize(name: string, size: number): void {
    if (size > this.maxObjectBytes) {
      throw new SnapshotError(
        'SNAPSHOT_TOO_LARGE',
        `${this.describe(name)} would be ${size} bytes, over the in-memory limit of ${this.maxObjectBytes} bytes per object; ` +
          'raise maxSnapshotBytes or use the filesystem backend.',
      );
    }
  }

  private describe(name: string): string {
    return `${this.location}/${name}`;
  }
}
