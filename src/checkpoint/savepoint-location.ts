import { basename, dirname, resolve, sep } from 'node:path';
import { StorageError, StreamStateError } from '../errors.js';
import type { BlobStore } from '../storage/blob-store.js';
import { randomHex } from '../storage/blob-names.js';
import { LocalBlobStore } from '../storage/local-blob-store.js';
import { LazyS3BlobStore } from '../storage/lazy-s3-blob-store.js';
import type { S3BlobStoreOptions } from '../storage/s3-blob-store.js';
import { parseS3Url } from '../storage/s3/s3-url.js';

/**
 * Where savepoints go when they do not go into the job's checkpoint storage, and where a restore
 * pointer outside that storage is read from: local directories and s3:// URLs, turned into a
 * BlobStore and a directory inside it. (Deciding which pointers are outside the storage is here
 * too; mounting them into the coordinator's view is mounted-storage.ts.)
 */

/** How to reach S3 for s3:// savepoint targets and restore pointers. Unset fields come from the SDK's usual sources (AWS_* env vars). */
export type S3Connection = Omit<S3BlobStoreOptions, 'bucket' | 'prefix' | 'client' | 'entropy'>;

export interface SavepointLocationOptions {
  /**
   * The default savepoint location (Flink's `state.savepoints.dir`): a local directory or an
   * s3:// URL. A savepoint triggered without `target` goes to `<dir>/savepoint-<job6>-<12 hex>/`.
   * Unset: into the checkpoint storage's root, as before.
   */
  readonly dir?: string;
  /** Relative local paths (targets, pointers, `dir`) resolve against this. Default process.cwd(). */
  readonly cwd?: string;
  /** Settings for s3:// targets and pointers (endpoint, region, credentials, path style). */
  readonly s3?: S3Connection;
}

/** A snapshot directory outside the checkpoint storage: a store and the directory inside it. */
export interface ExternalLocation {
  readonly store: BlobStore;
  /** Store-relative directory of the snapshot (never ""). */
  readonly dir: string;
  /** The absolute path or s3:// URL of the directory, as the user should see (and pass back) it. */
  readonly display: string;
}

const URL_SCHEME = /^[a-z][a-z0-9+.-]*:\/\//i;
const S3_SCHEME = /^s3[an]?:\/\//i;

/**
 * Whether `pointer` names something outside checkpoint storage at `storageLocation`: an absolute
 * path, file:// or other URL that does not start with the storage's location. Relative pointers
 * are store-relative, as they always were.
 */
export function isOutsideStorage(pointer: string, storageLocation: string): boolean {
  if (typeof pointer !== 'string') return false;
  const location = storageLocation.replace(/\/+$/, '');
  const p =
    pointer.startsWith('file://') && !location.startsWith('file://') ? pointer.slice('file://'.length) : pointer;
  if (p === location || p.startsWith(`${location}/`)) return false;
  return p.startsWith('/') || URL_SCHEME.test(p);
}

/**
 * The stores external locations are opened with, one per local directory or S3 bucket, so that
 * many savepoints to one bucket share one client. close() releases them all.
 */
export class ExternalStores {
  private readonly stores = new Map<string, BlobStore>();

  constructor(private readonly options: SavepointLocationOptions = {}) {}

  get cwd(): string {
    return this.options.cwd ?? process.cwd();
  }

  /** The location of directory `path` (local path, file:// or s3:// URL). */
  locate(path: string, what: string): ExternalLocation {
    if (typeof path !== 'string' || path.trim() === '')
      throw new StreamStateError('INVALID_ARGUMENT', `${what} must be a non-empty local path or s3:// URL.`);
    if (S3_SCHEME.test(path)) {
      const { bucket, prefix } = parseS3Url(path);
      if (prefix === '') {
        throw new StreamStateError(
          'INVALID_ARGUMENT',
          `${what} ${path} names a bucket; give a directory inside it, e.g. s3://${bucket}/savepoints/sp-1.`,
        );
      }
      const key = `s3:${bucket}`;
      let store = this.stores.get(key);
      if (store === undefined) {
        // Savepoints never use entropy injection (they must stay relocatable): none is configured.
        store = new LazyS3BlobStore({ ...(this.options.s3 ?? {}), bucket, prefix: '' });
        this.stores.set(key, store);
      }
      return { store, dir: prefix, display: `s3://${bucket}/${prefix}` };
    }
    if (URL_SCHEME.test(path) && !path.startsWith('file://')) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `${what} ${path}: streamstate reads and writes local paths and s3:// URLs only.`,
      );
    }
    const abs = resolve(this.cwd, path.startsWith('file://') ? path.slice('file://'.length) : path);
    if (dirname(abs) === abs)
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `${what} ${path} is the file-system root; give a directory below it.`,
      );
    const parent = dirname(abs);
    const key = `file:${parent}`;
    let store = this.stores.get(key);
    if (store === undefined) {
      store = new LocalBlobStore(parent);
      this.stores.set(key, store);
    }
    return { store, dir: basename(abs), display: abs };
  }

  /** A new savepoint directory `savepoint-<job6>-<12 hex>` under `parent` (the default savepoint location). */
  newSavepointUnder(parent: string, jobId: string): ExternalLocation {
    const name = `savepoint-${jobId.slice(0, 6)}-${randomHex(12)}`;
    if (S3_SCHEME.test(parent)) return this.locate(`${parent.replace(/\/+$/, '')}/${name}`, 'the savepoint directory');
    return this.locate(
      resolve(this.cwd, parent.startsWith('file://') ? parent.slice('file://'.length) : parent, name),
      'the savepoint directory',
    );
  }

  async close(): Promise<void> {
    const all = [...this.stores.values()];
    this.stores.clear();
    await Promise.allSettled(all.map((s) => s.close?.() ?? Promise.resolve()));
  }
}

/**
 * A savepoint target must be a new or empty directory: a savepoint never writes into or over
 * existing files (and an aborted one must be able to remove everything under its directory).
 * Throws StorageError SAVEPOINT_TARGET_NOT_EMPTY otherwise; reads only.
 */
export async function checkSavepointTarget(loc: ExternalLocation): Promise<void> {
  const [under, asFile] = await Promise.all([loc.store.list(`${loc.dir}/`), loc.store.stat(loc.dir)]);
  if (under.length === 0 && asFile === null) return;
  const what =
    asFile !== null
      ? 'is an existing file'
      : `holds ${under.length} file(s) (e.g. ${under[0].name.slice(loc.dir.length + 1)})`;
  throw new StorageError(
    'SAVEPOINT_TARGET_NOT_EMPTY',
    `savepoint target ${loc.display} ${what}; a savepoint goes into a new or empty directory and never writes over existing files. ` +
      'Nothing was written. Pick another target, or leave it out to use the default savepoint location.',
  );
}

/** A local target inside the job's own checkpoint directory would be deleted by the job's garbage collection. */
export function checkNotInJobDirectory(loc: ExternalLocation, storageLocation: string, jobId: string): void {
  if (!(loc.store instanceof LocalBlobStore)) return;
  const jobDir = resolve(storageLocation, jobId);
  const target = resolve(loc.store.rootDir, loc.dir);
  if (target === jobDir || target.startsWith(`${jobDir}${sep}`)) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `savepoint target ${loc.display} lies inside job ${jobId}'s checkpoint directory, whose unreferenced files the job deletes. Put savepoints elsewhere.`,
    );
  }
}
