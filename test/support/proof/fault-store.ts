import { closeSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { ForwardingBlobStore } from '../../../src/storage/forwarding-blob-store.js';
import { fsErrorToStorageError, type LocalBlobStore } from '../../../src/storage/local-blob-store.js';

export type FaultErrno = 'ENOSPC' | 'EACCES';

const MESSAGES: Record<FaultErrno, { errno: number; text: string }> = {
  ENOSPC: { errno: -28, text: 'no space left on device' },
  EACCES: { errno: -13, text: 'permission denied' },
};

/** An error as node:fs raises it for `code` on `path`. */
export function errnoError(code: FaultErrno, syscall: string, path: string): NodeJS.ErrnoException {
  const e: NodeJS.ErrnoException = new Error(`${code}: ${MESSAGES[code].text}, ${syscall} '${path}'`);
  e.code = code;
  e.errno = MESSAGES[code].errno;
  e.syscall = syscall;
  e.path = path;
  return e;
}

/**
 * A LocalBlobStore whose writes fail with ENOSPC or EACCES while `fault` is set, the way the disk
 * would make them fail: ENOSPC part-way through a data file (after its first chunk reached the
 * file, so the store's own cleanup of the partial file runs), EACCES before anything is written;
 * _metadata writes (putAtomic) fail whole. Reads, lists and deletes keep working (they do on a full
 * disk). Every error it caused, as the store reported it, is kept in `thrown`.
 */
export class FaultyBlobStore extends ForwardingBlobStore {
  fault: FaultErrno | null = null;
  readonly thrown: unknown[] = [];
  /** Writes attempted while the fault was set. */
  faultedWrites = 0;

  constructor(private readonly local: LocalBlobStore) {
    super(local);
  }

  override async put(name: string, data: Uint8Array): Promise<void> {
    if (this.fault !== null) this.fail(this.fault, 'open', name);
    return this.inner.put(name, data);
  }

  override async putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    const current = this.fault;
    if (current === null) return this.inner.putStream(name, data);
    const fault: FaultErrno = current;
    this.faultedWrites++;
    const path = this.local.pathOf(name);
    async function* failing(): AsyncGenerator<Uint8Array> {
      let chunks = 0;
      for await (const chunk of data) {
        if (fault === 'EACCES' || chunks > 0) throw errnoError(fault, 'write', path);
        chunks++;
        yield chunk;
      }
      throw errnoError(fault, 'write', path);
    }
    try {
      return await this.inner.putStream(name, failing());
    } catch (err) {
      this.thrown.push(err);
      throw err;
    }
  }

  override async putAtomic(name: string, data: Uint8Array, opts?: { exclusive?: boolean }): Promise<void> {
    if (this.fault !== null) this.fail(this.fault, this.fault === 'ENOSPC' ? 'write' : 'open', name);
    return this.inner.putAtomic(name, data, opts);
  }

  private fail(code: FaultErrno, syscall: string, name: string): never {
    this.faultedWrites++;
    const err = fsErrorToStorageError(
      errnoError(code, syscall, this.local.pathOf(name)),
      'write',
      this.local.pathOf(name),
      false,
    );
    this.thrown.push(err);
    throw err;
  }
}

/**
 * A LocalBlobStore on a real small file system (a tmpfs) that a filler file fills up while
 * `full` is set. The ENOSPC comes from the kernel; this wrapper only keeps the disk full: the
 * coordinator's retention deletes give space back at moments a test cannot time, so the filler
 * takes it back before every write and after every delete.
 */
export class FullDiskStore extends ForwardingBlobStore {
  private isFull = false;

  constructor(
    inner: LocalBlobStore,
    /** The filler file, on the same file system as the store. */
    private readonly filler: string,
  ) {
    super(inner);
  }

  get full(): boolean {
    return this.isFull;
  }

  set full(on: boolean) {
    this.isFull = on;
    if (on) fillUp(this.filler);
    else unlinkSync(this.filler);
  }

  private refill(): void {
    if (this.isFull) fillUp(this.filler);
  }

  override async put(name: string, data: Uint8Array): Promise<void> {
    this.refill();
    return this.inner.put(name, data);
  }

  override async putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    this.refill();
    return this.inner.putStream(name, data);
  }

  override async putAtomic(name: string, data: Uint8Array, opts?: { exclusive?: boolean }): Promise<void> {
    this.refill();
    return this.inner.putAtomic(name, data, opts);
  }

  override async delete(names: readonly string[]): Promise<void> {
    await this.inner.delete(names);
    this.refill();
  }
}

/** Appends zeros to `file` until its file system is full (synchronously, so nothing else writes meanwhile). */
function fillUp(file: string): void {
  const fd = openSync(file, 'a');
  const chunk = Buffer.alloc(64 * 1024);
  try {
    for (;;) {
      try {
        writeSync(fd, chunk);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        // The last partial block: smaller and smaller writes.
        for (let size = chunk.length >> 1; size >= 512; size >>= 1) {
          try {
            writeSync(fd, chunk.subarray(0, size));
          } catch {
            // next smaller size
          }
        }
        return;
      }
    }
  } finally {
    closeSync(fd);
  }
}
