/**
 * A BlobStore is the only thing a storage medium must provide: named byte objects under a root.
 * Checkpoint storage (src/checkpoint/checkpoint-storage.ts) builds the checkpoint layout on top of
 * it, so local disk, process memory and S3 share one implementation of everything else.
 *
 * Names are posix-style relative paths ("job/chk-3/_metadata"); never absolute, never "..".
 */
export interface BlobInfo {
  readonly name: string;
  readonly size: number;
  /** ms since epoch, when the store knows it */
  readonly modified?: number;
}

/** What putFile stored: its size and the crc32 (zlib) of its bytes. */
export interface PutFileResult {
  readonly size: number;
  readonly crc32: number;
}

export interface PutFileOptions {
  /**
   * The source file is never modified in place after this call (it may be deleted, or replaced by
   * a rename): a local store may then hard-link it instead of copying it (LevelDB table files).
   */
  readonly immutable?: boolean;
}

export interface DownloadOptions {
  /** The most bytes the caller accepts (a non-negative safe integer). Default: no bound. */
  readonly maxBytes?: number;
}

export interface BlobStore {
  /** Where the store is, for messages and pointers: an absolute directory, `memory://x`, `s3://bucket/prefix`. */
  readonly location: string;
  /** Writes a whole object (overwrites). */
  put(name: string, data: Uint8Array): Promise<void>;
  /**
   * Streams an object (large files, multipart on S3). Returns its size. Unless the store declares
   * releasesStreamChunks, it may keep the chunks it is handed until it resolves (S3 sends them
   * without a copy): a caller must not write to a chunk's memory again after yielding it.
   */
  putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number>;
  /**
   * Optional: true when putStream is done with a chunk once it asks the iterator for the next one
   * (or settles), so the caller may refill that chunk's memory. Checkpoint streams then recycle a
   * few batch buffers instead of a fresh Buffer per MiB (fresh memory costs page faults on the
   * event loop and drives full GCs through external-memory pressure). Absent: every chunk is new.
   */
  readonly releasesStreamChunks?: boolean;
  /**
   * Optional: stores a local file whole, with as little of its transfer on the event loop as the
   * medium allows (local disk: a link or a copy on a worker thread; S3: part-sized reads). Without
   * it, callers stream the file through putStream. Fails with a StorageError and leaves no object.
   */
  putFile?(name: string, localPath: string, opts?: PutFileOptions): Promise<PutFileResult>;
  /**
   * Writes an object so that readers see either nothing or all of it, even across a crash
   * (temp file + fsync + rename + dir fsync on disk; a single PUT on S3). Fails with ALREADY_EXISTS
   * when `exclusive` and the object exists.
   */
  putAtomic(name: string, data: Uint8Array, opts?: { exclusive?: boolean }): Promise<void>;
  /** The whole object. Throws StorageError NOT_FOUND when missing. */
  get(name: string): Promise<Buffer>;
  /**
   * `length` bytes from `offset` (ranged read), in a buffer of the caller's own that shares no
   * memory with what the store keeps (every built-in store reads or copies afresh): the heap
   * backend's restore keeps views into it as restored `bytes` values, which users may write to.
   */
  getRange(name: string, offset: number, length: number): Promise<Buffer>;
  /**
   * Streams the object to a local file. With `maxBytes`, an object larger than that fails with
   * FormatError CORRUPT, refused as soon as its size is known (at open, from the response headers)
   * or while reading: nothing past the bound is read or kept, and no local file is left. Restores
   * pass the size a handle records, so a replaced or crafted huge file costs no more than that
   * (and needs no separate stat or HEAD first).
   */
  download(name: string, localPath: string, opts?: DownloadOptions): Promise<void>;
  /** Size etc., or null when missing. */
  stat(name: string): Promise<BlobInfo | null>;
  /** Every object whose name starts with `prefix` (a "directory" prefix should end with "/"). */
  list(prefix: string): Promise<BlobInfo[]>;
  /** Deletes objects; missing ones are ignored (idempotent). */
  delete(names: readonly string[]): Promise<void>;
  /** Releases clients/handles. */
  close?(): Promise<void>;
  /**
   * Optional: the name to store a checkpoint data file under, given its plain name. Object stores
   * use it for entropy injection (S3: spreads data files over random key prefixes). It must keep the
   * directory part, so that handle paths stay relative. Not used for _metadata or savepoints.
   */
  dataFileName?(name: string): string;
}
