import { constants as fsConstants, type Stats } from 'node:fs';
import { constants } from 'node:buffer';
import { link, mkdir, open, readdir, rename, rmdir, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { FormatError, StorageError, StreamStateError } from '../errors.js';
import type { BlobInfo, BlobStore, DownloadOptions, PutFileOptions, PutFileResult } from './blob-store.js';
import {
  checkBlobName,
  checkBlobPrefix,
  checkRange,
  downloadLimit,
  downloadTooLarge,
  randomHex,
} from './blob-names.js';
import { TransferFailure, transferFile } from './file-transfer.js';

/** Temp files of putAtomic: `.<name>.tmp-<hex>`; list() never shows them. */
const TEMP_FILE = /^\..+\.tmp-[0-9a-f]+$/;
const DELETE_CONCURRENCY = 16;
/** A putAtomic temp file this old belongs to a crashed writer. */
const STALE_TEMP_MS = 60_000;

/** An open file (fs/promises FileHandle). */
type OpenFile = Awaited<ReturnType<typeof open>>;

/** One step that makes a write durable (LocalBlobStoreOptions.onDurabilityEvent). */
export interface DurabilityEvent {
  /** fsync of a file or a directory, or the rename/link that publishes a putAtomic. */
  readonly op: 'fsync-file' | 'fsync-dir' | 'rename' | 'link';
  /** Absolute local path (for rename/link: the target). */
  readonly path: string;
}

export interface LocalBlobStoreOptions {
  /**
   * fsync every file put/putStream write before reporting it written. Default true. Turning it off
   * is for measuring its cost only (bench/durability.ts): a completed _metadata may then point at
   * data a power failure loses.
   */
  readonly syncData?: boolean;
  /** Called after every fsync, rename and link the store makes (tests trace the durability order). */
  readonly onDurabilityEvent?: (event: DurabilityEvent) => void;
}

/**
 * A BlobStore over a local directory: blob "a/b/c" is the file <rootDir>/a/b/c. Directories are
 * created on write and removed again when a delete leaves them empty.
 *
 * Durability: put/putStream fsync the file before they resolve; the directory entries they (and
 * the directories they create) add are fsynced before the next putAtomic publishes anything, so
 * a _metadata (always written with putAtomic) never becomes durable before the files it names.
 */
export class LocalBlobStore implements BlobStore {
  /** putStream's file stream (high-water mark 1) writes each chunk before the next is pulled. */
  readonly releasesStreamChunks = true;
  readonly rootDir: string;
  readonly location: string;
  private readonly syncData: boolean;
  private readonly onDurabilityEvent: ((event: DurabilityEvent) => void) | undefined;
  /** Directories that gained entries since their last fsync. */
  private readonly dirtyDirs = new Set<string>();
  /** Directory fsyncs under way: a putAtomic waits for those another one started, too. */
  private readonly dirSyncs = new Set<Promise<void>>();
  /** Directories putFile created or found lately (a vanished one is noticed by ENOENT and made again). */
  private readonly knownDirs = new Set<string>();

  constructor(rootDir: string, opts: LocalBlobStoreOptions = {}) {
    if (typeof rootDir !== 'string' || rootDir.length === 0) {
      throw new StreamStateError('INVALID_ARGUMENT', 'LocalBlobStore needs a directory path; got an empty one.');
    }
    this.rootDir = resolve(rootDir);
    this.location = this.rootDir;
    this.syncData = opts.syncData ?? true;
    this.onDurabilityEvent = opts.onDurabilityEvent;
  }

  /** The local file path of a blob name (validated: relative, no escapes). */
  pathOf(name: string): string {
    checkBlobName(name);
    return join(this.rootDir, ...name.split('/'));
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    const file = this.pathOf(name);
    await this.withParentDir(file, async () => {
      const fh = await open(file, 'w');
      try {
        await writeFile(fh, data);
        await this.syncFile(fh, file);
      } finally {
        await fh.close();
      }
    });
    this.dirtyDirs.add(dirname(file));
  }

  async putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    const file = this.pathOf(name);
    let size = 0;
    async function* counted(): AsyncGenerator<Uint8Array> {
      for await (const chunk of data) {
        size += chunk.byteLength;
        yield chunk;
      }
    }
    // The source is consumed once: open the file (retrying a vanished parent) before streaming.
    const handle = await this.withParentDir(file, () => open(file, 'w'));
    try {
      // flush: the stream fsyncs the file before it closes the handle.
      // highWaterMark 1: every write waits for the disk before the next chunk is pulled
      // (releasesStreamChunks), at most one chunk in flight.
      await pipeline(counted(), handle.createWriteStream({ flush: this.syncData, highWaterMark: 1 }));
    } catch (err) {
      await unlink(file).catch(() => undefined);
      throw this.mapError(err, 'write', name);
    }
    if (this.syncData) this.onDurabilityEvent?.({ op: 'fsync-file', path: file });
    this.dirtyDirs.add(dirname(file));
    return size;
  }

  /**
   * Copies a local file in (or hard-links it, when `immutable` and on the same file system) on a
   * worker thread, with its crc32: the event loop only starts and finishes the transfer (one turn;
   * the worker creates a missing directory too), and transfers started in the same turn go to the
   * worker together. The target is fsynced like put's, and its directory entry before the next
   * putAtomic. A failure leaves no target file and is a StorageError (NOT_FOUND when the source is
   * missing).
   */
  async putFile(name: string, localPath: string, opts: PutFileOptions = {}): Promise<PutFileResult> {
    const file = this.pathOf(name);
    const source = resolve(localPath);
    const dir = dirname(file);
    for (let attempt = 0; ; attempt++) {
      try {
        const result = await transferFile({
          source,
          target: file,
          link: opts.immutable === true,
          sync: this.syncData,
          // A directory known to exist is not created again (a vanished one is noticed by ENOENT).
          makeDir: !this.knownDirs.has(dir),
        });
        if (result.createdDir !== undefined) this.noteCreatedDirs(result.createdDir, dir);
        this.rememberDir(dir);
        // Copied or linked, the worker fsynced the file's data; its directory entry goes before the next putAtomic.
        if (this.syncData) this.onDurabilityEvent?.({ op: 'fsync-file', path: file });
        this.dirtyDirs.add(dir);
        return { size: result.size, crc32: result.crc32 };
      } catch (err) {
        // The worker removed what it created. A concurrent delete may have removed the emptied directory: retry.
        if (!(err instanceof TransferFailure)) throw err;
        if (err.side === 'target' && err.code === 'ENOENT') {
          this.knownDirs.delete(dir);
          if (attempt < 3) continue;
        }
        const cause = Object.assign(new Error(err.message), { code: err.code });
        if (err.side === 'source') {
          throw new StorageError(
            err.code === 'ENOENT' ? 'NOT_FOUND' : 'STORAGE_IO',
            `cannot read local file ${source} to store it as ${file}: ${err.message}. It must exist and be readable while the snapshot runs.`,
            { cause },
          );
        }
        throw fsErrorToStorageError(cause, 'write', file, false);
      }
    }
  }

  async putAtomic(name: string, data: Uint8Array, opts: { exclusive?: boolean } = {}): Promise<void> {
    const file = this.pathOf(name);
    const dir = dirname(file);
    const temp = join(dir, `.${file.slice(dir.length + 1)}.tmp-${randomHex(12)}`);
    try {
      await this.withParentDir(temp, async () => {
        const fh = await open(temp, 'wx');
        try {
          await fh.writeFile(data);
          await fh.sync();
          this.onDurabilityEvent?.({ op: 'fsync-file', path: temp });
        } finally {
          await fh.close();
        }
      });
      // Every file written before (and every directory created for it) is durable before this one appears.
      await this.syncDirtyDirs();
      if (opts.exclusive) {
        // link() fails with EEXIST when the target exists: a true exclusive create, unlike rename().
        await link(temp, file);
        this.onDurabilityEvent?.({ op: 'link', path: file });
        await unlink(temp);
      } else {
        await rename(temp, file);
        this.onDurabilityEvent?.({ op: 'rename', path: file });
      }
      this.dirtyDirs.delete(dir);
      await fsyncDir(dir, this.onDurabilityEvent);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new StorageError(
          'ALREADY_EXISTS',
          `${file} already exists and is never overwritten. Use a new name, or delete it first.`,
        );
      }
      throw this.mapError(err, 'write', name);
    }
  }

  async get(name: string): Promise<Buffer> {
    return this.readRegular(name, 0, Number.POSITIVE_INFINITY);
  }

  async getRange(name: string, offset: number, length: number): Promise<Buffer> {
    checkRange(name, offset, length);
    return this.readRegular(name, offset, length);
  }

  /**
   * Reads up to `length` bytes at `offset` of a regular file. The buffer is sized by the file's
   * size at open (fstat), never by `length` alone: a crafted length or a file that keeps growing
   * cannot make it allocate more than the file holds, and reads go in chunks the fs accepts.
   */
  private async readRegular(name: string, offset: number, length: number): Promise<Buffer> {
    const file = this.pathOf(name);
    try {
      const { fh, size } = await openRegularFile(file);
      try {
        const want = Math.max(0, Math.min(length, size - offset));
        if (want > MAX_BUFFER_BYTES) {
          throw new FormatError(
            'CORRUPT',
            `${file} holds ${size} bytes, more than fits in memory at once (${MAX_BUFFER_BYTES}); it is not a file streamstate reads whole.`,
          );
        }
        const buf = Buffer.allocUnsafe(want);
        let filled = 0;
        while (filled < want) {
          const chunk = Math.min(want - filled, MAX_READ_CHUNK);
          const { bytesRead } = await fh.read(buf, filled, chunk, offset + filled);
          if (bytesRead === 0) break; // shrank meanwhile: return what exists
          filled += bytesRead;
        }
        return filled === want ? buf : buf.subarray(0, filled);
      } finally {
        await fh.close();
      }
    } catch (err) {
      throw this.mapError(err, 'read', name);
    }
  }

  /**
   * Copies the blob to a local file on a worker thread (never a link: the copy may be written to,
   * e.g. a restored LevelDB's log, and the checkpoint's file must not change). The worker refuses
   * a file that is not regular or holds more than `maxBytes` before copying anything, and stops
   * when it grows past that while being copied; a failed copy leaves no local file.
   */
  async download(name: string, localPath: string, opts?: DownloadOptions): Promise<void> {
    const file = this.pathOf(name);
    const limit = downloadLimit(name, opts);
    const target = resolve(localPath);
    try {
      await transferFile({
        source: file,
        target,
        // The worker creates the local directory: no event-loop turn of its own.
        makeDir: true,
        link: false,
        sync: false,
        ...(Number.isFinite(limit) ? { maxBytes: limit } : {}),
      });
    } catch (err) {
      if (!(err instanceof TransferFailure)) throw err;
      const cause = Object.assign(new Error(err.message), { code: err.code });
      if (err.side === 'source') {
        if (err.code === 'EFBIG') throw downloadTooLarge(file, limit);
        if (err.code === 'ENOTREG') throw notRegularFile(file, err.message);
        throw this.mapError(cause, 'read', name);
      }
      throw this.mapError(cause, 'download', name, localPath);
    }
  }

  async stat(name: string): Promise<BlobInfo | null> {
    const file = this.pathOf(name);
    try {
      const st = await stat(file);
      if (st.isFile()) return { name, size: st.size, modified: st.mtimeMs };
      if (st.isDirectory()) return null; // a folder is no blob
      throw notRegular(file, st);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return null;
      throw this.mapError(err, 'stat', name);
    }
  }

  async list(prefix: string): Promise<BlobInfo[]> {
    checkBlobPrefix(prefix);
    // Walk only the deepest directory the prefix names, not the whole root.
    const slash = prefix.lastIndexOf('/');
    const startName = slash < 0 ? '' : prefix.slice(0, slash);
    const out: BlobInfo[] = [];
    await this.walk(startName, prefix, out);
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  private async walk(dirName: string, prefix: string, out: BlobInfo[]): Promise<void> {
    const dir = dirName === '' ? this.rootDir : join(this.rootDir, ...dirName.split('/'));
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw this.mapError(err, 'list', dirName || '.');
    }
    const nested: Promise<void>[] = [];
    for (const entry of entries) {
      const name = dirName === '' ? entry.name : `${dirName}/${entry.name}`;
      if (entry.isDirectory()) {
        // Descend only where names can still match the prefix.
        if (name.startsWith(prefix) || prefix.startsWith(`${name}/`)) nested.push(this.walk(name, prefix, out));
      } else if (entry.isFile() && !TEMP_FILE.test(entry.name) && name.startsWith(prefix)) {
        nested.push(
          stat(join(dir, entry.name)).then(
            (st) => void out.push({ name, size: st.size, modified: st.mtimeMs }),
            (err: unknown) => {
              if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw this.mapError(err, 'stat', name);
            },
          ),
        );
      }
    }
    await Promise.all(nested);
  }

  async delete(names: readonly string[]): Promise<void> {
    const files = names.map((n) => this.pathOf(n));
    const dirs = new Set<string>();
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < files.length) {
        const i = next++;
        try {
          await unlink(files[i]);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'ENOENT' && code !== 'ENOTDIR') throw this.mapError(err, 'delete', names[i]);
        }
        dirs.add(dirname(files[i]));
      }
    };
    await Promise.all(Array.from({ length: Math.min(DELETE_CONCURRENCY, files.length) }, worker));
    // Deepest first, so a parent is tried after its children.
    for (const dir of [...dirs].sort((a, b) => b.length - a.length)) await this.removeEmptyDirs(dir);
  }

  /** Removes `dir` and its parents while they are empty, never the root itself. */
  private async removeEmptyDirs(dir: string): Promise<void> {
    let current = dir;
    while (current !== this.rootDir && isInside(this.rootDir, current)) {
      try {
        await rmdir(current);
      } catch (err) {
        // Not empty: it may hold only temp files a crashed putAtomic left behind; those go too.
        if ((err as NodeJS.ErrnoException).code !== 'ENOTEMPTY' || !(await this.removeStaleTempFiles(current))) return;
        try {
          await rmdir(current);
        } catch {
          return;
        }
      }
      current = dirname(current);
    }
  }

  /**
   * Deletes `dir`'s entries when every one is a putAtomic temp file older than STALE_TEMP_MS (a live
   * putAtomic finishes within milliseconds). Returns whether the directory is now empty.
   */
  private async removeStaleTempFiles(dir: string): Promise<boolean> {
    try {
      const entries = await readdir(dir);
      const now = Date.now();
      for (const entry of entries) {
        if (!TEMP_FILE.test(entry) || now - (await stat(join(dir, entry))).mtimeMs < STALE_TEMP_MS) return false;
      }
      for (const entry of entries) await unlink(join(dir, entry));
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Runs a create in `file`'s directory, creating it first. A concurrent delete may remove an
   * emptied directory between mkdir and the create (ENOENT): then recreate it and retry.
   */
  private async withParentDir<T>(file: string, create: () => Promise<T>): Promise<T> {
    const dir = dirname(file);
    for (let attempt = 0; ; attempt++) {
      try {
        const created = await mkdir(dir, { recursive: true });
        if (created !== undefined) this.noteCreatedDirs(created, dir);
        return await create();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && attempt < 3) continue;
        throw this.mapError(err, 'write', relative(this.rootDir, file).split(sep).join('/'));
      }
    }
  }

  private rememberDir(dir: string): void {
    if (this.knownDirs.size >= 64) this.knownDirs.clear();
    this.knownDirs.add(dir);
  }

  /** fsync of a data file just written (unless syncData is off). */
  private async syncFile(fh: OpenFile, file: string): Promise<void> {
    if (!this.syncData) return;
    await fh.sync();
    this.onDurabilityEvent?.({ op: 'fsync-file', path: file });
  }

  /** mkdir created `first` .. `last` (an ancestor chain): each one's entry in its parent must become durable. */
  private noteCreatedDirs(first: string, last: string): void {
    for (let d = last; d.length >= first.length && d !== dirname(d); d = dirname(d)) this.dirtyDirs.add(dirname(d));
  }

  /** fsyncs every directory that gained entries, and waits for such fsyncs other calls started. */
  private async syncDirtyDirs(): Promise<void> {
    const dirs = [...this.dirtyDirs];
    this.dirtyDirs.clear();
    const mine = Promise.all(dirs.map((d) => fsyncDir(d, this.onDurabilityEvent, true))).then(() => undefined);
    this.dirSyncs.add(mine);
    try {
      await Promise.all([...this.dirSyncs]);
    } catch (err) {
      for (const d of dirs) this.dirtyDirs.add(d);
      throw err;
    } finally {
      this.dirSyncs.delete(mine);
    }
  }

  private mapError(err: unknown, op: string, name: string, localPath?: string): unknown {
    return fsErrorToStorageError(
      err,
      op,
      localPath ?? join(this.rootDir, ...name.split('/')),
      op !== 'write' && op !== 'download',
    );
  }
}

/**
 * An fs error as a StorageError: missing → NOT_FOUND naming the path (when `missingIsNotFound`;
 * a write into a vanished directory is an I/O failure), anything else → STORAGE_IO with the errno.
 * StreamStateErrors pass through unchanged.
 */
export function fsErrorToStorageError(err: unknown, op: string, path: string, missingIsNotFound = true): unknown {
  if (err instanceof StreamStateError) return err;
  const e = err as NodeJS.ErrnoException | undefined;
  switch (e?.code) {
    case 'ENOENT':
    case 'ENOTDIR':
    case 'EISDIR':
      if (!missingIsNotFound) break;
      return new StorageError(
        'NOT_FOUND',
        `${path} does not exist. Check the path, or whether it was deleted (e.g. by checkpoint retention).`,
        { cause: err },
      );
    case 'ENOSPC':
      return new StorageError(
        'STORAGE_IO',
        `cannot ${op} ${path}: disk full (ENOSPC). Free space or point storage elsewhere.`,
        { cause: err },
      );
    case 'EACCES':
    case 'EPERM':
      return new StorageError(
        'STORAGE_IO',
        `cannot ${op} ${path}: permission denied (${e.code}). Fix the directory's permissions or owner.`,
        { cause: err },
      );
  }
  return new StorageError('STORAGE_IO', `cannot ${op} ${path}: ${e?.code ?? 'error'} ${e?.message ?? String(err)}`, {
    cause: err,
  });
}

/** The largest single fs read (libuv takes at most INT32_MAX bytes per call). */
const MAX_READ_CHUNK = 1024 * 1024 * 1024;
const MAX_BUFFER_BYTES = constants.MAX_LENGTH;

/**
 * Opens `file` for reading if it is a regular file. O_NONBLOCK: opening a FIFO with no writer
 * returns at once instead of hanging; fstat on the open handle then refuses FIFOs, devices
 * (a _metadata symlinked to /dev/zero), sockets and directories, with no race against a swap.
 */
async function openRegularFile(file: string): Promise<{ fh: FileHandle; size: number }> {
  const fh = await open(file, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  try {
    const st = await fh.stat();
    // A folder is no blob: NOT_FOUND, as before (fsErrorToStorageError maps EISDIR).
    if (st.isDirectory()) throw Object.assign(new Error(`EISDIR: ${file} is a directory`), { code: 'EISDIR' });
    if (!st.isFile()) throw notRegular(file, st);
    return { fh, size: st.size };
  } catch (err) {
    await fh.close().catch(() => undefined);
    throw err;
  }
}

function notRegular(file: string, st: Stats): FormatError {
  const kind = st.isFIFO()
    ? 'a FIFO'
    : st.isCharacterDevice() || st.isBlockDevice()
      ? 'a device'
      : st.isSocket()
        ? 'a socket'
        : st.isDirectory()
          ? 'a directory'
          : 'not a regular file';
  return notRegularFile(file, kind);
}

/** `kind` (or a message naming it) says what the file is instead: "a FIFO", "a device", ... */
function notRegularFile(file: string, kind: string): FormatError {
  return new FormatError(
    'CORRUPT',
    `${file} is ${kind}, not a regular file; streamstate reads only regular files from a snapshot. Replace it with the file the snapshot wrote, or restore from another checkpoint.`,
  );
}

/**
 * fsync of a directory: makes the entries created in it (files, renames, links, subdirectories)
 * durable. Exported for code that renames whole directories into place (convert). Some platforms
 * refuse fsync on directories; that is not fatal. `missingOk`: a directory deleted meanwhile is
 * nothing to make durable.
 */
export async function fsyncDir(
  dir: string,
  onEvent?: (event: DurabilityEvent) => void,
  missingOk = false,
): Promise<void> {
  let fh: OpenFile;
  try {
    fh = await open(dir, 'r');
  } catch (err) {
    if (missingOk && (err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  try {
    await fh.sync();
    onEvent?.({ op: 'fsync-dir', path: dir });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EPERM') throw err;
  } finally {
    await fh.close();
  }
}

function isInside(root: string, p: string): boolean {
  const rel = relative(root, p);
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel);
}
