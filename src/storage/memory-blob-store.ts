import { mkdir, open } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
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
  /** The bytes in order: one buffer for a whole-object put; pages (the last one partial) for a stream. */
  readonly parts: readonly Buffer[];
  readonly size: number;
  readonly modified: number;
  /** Written by putStream: its full-size pages go back to the free list when the object goes. */
  readonly paged: boolean;
  /** Downloads reading the parts right now: the pages are not recycled under them. */
  readers: number;
}

/**
 * putStream copies into pages of this size. A stream's chunks used to be copied into fresh
 * buffers and concatenated at the end: at 1 GB a fresh MiB per chunk plus one 1 GB copy in a
 * single event-loop turn. Pages live in SharedArrayBuffers, which V8 does not count as the
 * isolate's external memory (BackingStore::PerIsolateAccountingLength): retained checkpoints are
 * memory the store manages itself (pages are recycled, not collected), and counted they started a
 * full collection of the whole heap per 64 MB written, each marking step on the event loop.
 */
const PAGE_BYTES = 1024 * 1024;

/** Prefaulted pages kept ready, process-wide (at most this much memory waits unused). */
const PREFAULT_AHEAD = 16;
/**
 * Allocates the pages it is asked for and writes a byte into each 4 KiB (a new page's first write
 * faults in its 256 memory pages). The allocation is here too: a SharedArrayBuffer's memory is a
 * fresh mapping, and mapping memory on the loop while this thread faults pages in waits for the
 * process's memory map (about 1 ms per page in the 1 GB benchmark's profile, on the loop).
 */
const PREFAULT_WORKER = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', (n) => {
  for (let i = 0; i < n; i++) {
    const sab = new SharedArrayBuffer(${PAGE_BYTES});
    const bytes = new Uint8Array(sab);
    for (let at = 0; at < bytes.length; at += 4096) bytes[at] = 0;
    parentPort.postMessage(sab);
  }
});`;

/**
 * Fresh pages with their memory already faulted in, by a worker thread. The first write to a
 * fresh MiB faults in 256 memory pages: 2-8 ms of kernel time on the shared 2-vCPU machine, on
 * the event loop in the middle of a checkpoint's flush (a store copy the snapshot's time slicer
 * counts as others' time), against ~0.1 ms to copy into a touched page. The pages are
 * SharedArrayBuffers, so the worker allocates and touches them while the loop processes records
 * (the loop only asks for a number of pages); the store takes a ready one when it has one and
 * falls back to a fresh one (allocated and faulted on the loop as before). Pages come zeroed.
 */
class PagePrefaulter {
  private static shared: PagePrefaulter | null = null;
  /** The process-wide prefaulter (one worker for every store), started on first use. */
  static get(): PagePrefaulter {
    PagePrefaulter.shared ??= new PagePrefaulter();
    return PagePrefaulter.shared;
  }

  private worker: Worker | null = null;
  private failed = false;
  private readonly ready: Buffer[] = [];
  private inFlight = 0;
  private waiters: (() => void)[] = [];
  /** Pages handed out already faulted in (tests and metrics). */
  taken = 0;

  /** A page of PAGE_BYTES zeros: faulted in when one is ready, else fresh. Asks for more. */
  take(): Buffer {
    const page = this.ready.pop();
    this.topUp();
    if (page === undefined) return Buffer.from(new SharedArrayBuffer(PAGE_BYTES));
    this.taken++;
    return page;
  }

  /** Resolves once no page is being faulted in (tests). */
  settled(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    // Someone waits for the worker: it keeps the process alive until it replied.
    this.worker?.ref();
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  private topUp(): void {
    if (this.failed) return;
    try {
      if (this.worker === null) {
        const w = new Worker(PREFAULT_WORKER, { eval: true });
        w.on('message', (sab: SharedArrayBuffer) => this.arrived(sab));
        w.on('error', () => this.stop());
        w.on('exit', () => this.stop());
        // Never keeps the process alive (after the listeners: adding a 'message' one refs it
        // again); a failed worker only means pages fault on the loop again.
        w.unref();
        this.worker = w;
      }
      const wanted = PREFAULT_AHEAD - this.ready.length - this.inFlight;
      if (wanted > 0) {
        this.worker.postMessage(wanted);
        this.inFlight += wanted;
      }
    } catch {
      this.stop();
    }
  }

  private arrived(sab: SharedArrayBuffer): void {
    this.inFlight--;
    this.ready.push(Buffer.from(sab));
    if (this.inFlight === 0) this.wake();
  }

  private stop(): void {
    this.failed = true;
    this.worker = null;
    this.inFlight = 0;
    this.wake();
  }

  private wake(): void {
    this.worker?.unref();
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

/**
 * Objects in a Map, for tests and the in-process "memory" checkpoint storage. Stores are kept in a
 * process-wide registry by name, so a job restarted in the same process finds its checkpoints
 * with `MemoryBlobStore.named(name)`. Data is copied on the way in and out: callers may reuse
 * their buffers. Streams are kept as 1 MiB pages; the pages of deleted or overwritten streams are
 * reused by later ones (the free list holds at most as many as the largest stream took), so
 * checkpoints that replace each other (retention) run on memory already touched.
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
  /** Pages of objects that are gone, ready for the next stream. */
  private readonly freePages: Buffer[] = [];
  /** Pages the largest stream so far took: the most the free list keeps. */
  private maxFreePages = 0;
  /** Pages allocated so far (not taken from the free list), for tests and metrics. */
  pagesAllocated = 0;

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
    this.store(name, [Buffer.from(data)], data.byteLength, false);
  }

  async putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    checkBlobName(name);
    const pages: Buffer[] = [];
    let size = 0;
    try {
      for await (const chunk of data) {
        this.checkSize(name, size + chunk.byteLength);
        for (let at = 0; at < chunk.byteLength; ) {
          const used = size % PAGE_BYTES;
          if (used === 0) pages.push(this.freePages.pop() ?? this.newPage());
          const n = Math.min(chunk.byteLength - at, PAGE_BYTES - used);
          pages[pages.length - 1].set(chunk.subarray(at, at + n), used);
          at += n;
          size += n;
        }
      }
    } catch (err) {
      this.recycle(pages);
      throw err;
    }
    this.maxFreePages = Math.max(this.maxFreePages, pages.length);
    const tail = size % PAGE_BYTES;
    if (tail > 0) {
      const last = pages[pages.length - 1];
      if (tail < PAGE_BYTES / 2) {
        // A small tail gets a buffer of its own (an ordinary one); the page goes back: small streams keep no MiB each.
        pages[pages.length - 1] = Buffer.from(last.subarray(0, tail));
        this.recycle([last]);
      } else pages[pages.length - 1] = last.subarray(0, tail);
    }
    this.store(name, pages, size, true);
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
    this.store(name, [Buffer.from(data)], data.byteLength, false);
  }

  async get(name: string): Promise<Buffer> {
    const obj = this.require(name);
    return Buffer.concat(obj.parts, obj.size);
  }

  async getRange(name: string, offset: number, length: number): Promise<Buffer> {
    checkRange(name, offset, length);
    const obj = this.require(name);
    const start = Math.min(offset, obj.size);
    const out = Buffer.allocUnsafe(Math.min(obj.size, start + length) - start);
    let partStart = 0;
    let filled = 0;
    for (const part of obj.parts) {
      if (filled === out.length) break;
      const partEnd = partStart + part.length;
      if (partEnd > start + filled) filled += part.copy(out, filled, start + filled - partStart);
      partStart = partEnd;
    }
    return out;
  }

  async download(name: string, localPath: string, opts?: DownloadOptions): Promise<void> {
    const limit = downloadLimit(name, opts);
    const obj = this.require(name);
    if (obj.size > limit) throw downloadTooLarge(`${this.location}/${name}`, limit, obj.size);
    obj.readers++;
    try {
      await mkdir(dirname(localPath), { recursive: true });
      const fh = await open(localPath, 'w');
      try {
        for (const part of obj.parts) await fh.write(part);
      } finally {
        await fh.close();
      }
    } finally {
      obj.readers--;
    }
  }

  async stat(name: string): Promise<BlobInfo | null> {
    checkBlobName(name);
    const obj = this.objects.get(name);
    return obj ? { name, size: obj.size, modified: obj.modified } : null;
  }

  async list(prefix: string): Promise<BlobInfo[]> {
    checkBlobPrefix(prefix);
    const out: BlobInfo[] = [];
    for (const [name, obj] of this.objects) {
      if (name.startsWith(prefix)) out.push({ name, size: obj.size, modified: obj.modified });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async delete(names: readonly string[]): Promise<void> {
    for (const name of names) checkBlobName(name);
    for (const name of names) this.drop(name);
  }

  /** Nothing to release; the data stays so a restore in this process finds it (see destroy()). */
  async close(): Promise<void> {}

  /** Drops every object and removes the store from the registry. */
  destroy(): void {
    this.objects.clear();
    this.freePages.length = 0;
    if (MemoryBlobStore.registry.get(this.name) === this) MemoryBlobStore.registry.delete(this.name);
  }

  /** Total bytes held (for tests and metrics). */
  get totalBytes(): number {
    let n = 0;
    for (const obj of this.objects.values()) n += obj.size;
    return n;
  }

  /** Sets `name` (overwriting: the old object's pages go to the free list). */
  private store(name: string, parts: readonly Buffer[], size: number, paged: boolean): void {
    this.drop(name);
    this.objects.set(name, { parts, size, modified: this.clock(), paged, readers: 0 });
  }

  private drop(name: string): void {
    const obj = this.objects.get(name);
    if (obj === undefined) return;
    this.objects.delete(name);
    // A download still writing the pages keeps them: they are left to the garbage collector.
    if (obj.paged && obj.readers === 0) this.recycle(obj.parts);
  }

  private newPage(): Buffer {
    this.pagesAllocated++;
    return PagePrefaulter.get().take();
  }

  /** Pages any store took already faulted in (process-wide; tests and metrics). */
  static get prefaultedPages(): number {
    return PagePrefaulter.get().taken;
  }

  /** Resolves once the prefaulting worker has no page in hand (tests). */
  static prefaultSettled(): Promise<void> {
    return PagePrefaulter.get().settled();
  }

  /** Full-size pages back to the free list, up to what the largest stream took. */
  private recycle(parts: readonly Buffer[]): void {
    for (const part of parts) {
      if (this.freePages.length >= this.maxFreePages) return;
      if (part.buffer instanceof SharedArrayBuffer) this.freePages.push(Buffer.from(part.buffer));
    }
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
