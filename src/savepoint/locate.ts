import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, posix, relative, resolve, sep } from 'node:path';
import {
  BlobCheckpointStorage,
  localCheckpointStorage,
  METADATA_FILE,
  SHARED_DIR,
} from '../checkpoint/checkpoint-storage.js';
import type { CheckpointStorage, ResolvedSnapshot } from '../checkpoint/storage.js';
import { FormatError, StorageError, StreamStateError } from '../errors.js';
import type { BlobStore } from '../storage/blob-store.js';
import { LazyS3BlobStore } from '../storage/lazy-s3-blob-store.js';
import type { S3BlobStoreOptions } from '../storage/s3-blob-store.js';
import { parseS3Url } from '../storage/s3/s3-url.js';

/**
 * Where a user-given path leads: which checkpoint storage holds it and the pointer inside it.
 * This is the one place that turns paths into storage: local paths (and file://) become a
 * LocalBlobStore, s3:// URLs an S3BlobStore (loaded on first use, so the core never loads the AWS
 * SDK); everything above works on the storage only.
 */

/** How to reach S3 for s3:// paths. Unset fields come from the SDK's usual sources (AWS_* env vars, config files). */
export type S3ConnectionOptions = Omit<S3BlobStoreOptions, 'bucket' | 'prefix' | 'client'>;

export interface LocateOptions {
  /** Relative local paths resolve against this. Default process.cwd(). */
  readonly cwd?: string;
  /** Settings for s3:// paths. */
  readonly s3?: S3ConnectionOptions;
}

export interface LocatedSnapshot {
  readonly storage: CheckpointStorage;
  /** Store-relative directory of the _metadata. */
  readonly pointer: string;
  readonly snapshot: ResolvedSnapshot;
  /** The path as the user should see it in messages. */
  readonly display: string;
  /** Releases the storage's connections (S3 clients); the snapshot cannot be read afterwards. */
  close(): Promise<void>;
}

export interface LocatedCheckpointDir {
  readonly storage: CheckpointStorage;
  /** The jobs to look at (store-relative job directory names). */
  readonly jobs: readonly string[];
  readonly display: string;
  close(): Promise<void>;
}

/** Where a new snapshot directory goes in a blob store (convert's s3:// destination). */
export interface SnapshotDestination {
  readonly store: BlobStore;
  /** Store-relative directory the snapshot's objects go under. */
  readonly dir: string;
  readonly display: string;
  close(): Promise<void>;
}

/** A URL-style path of another scheme than file:// (s3://, gs://, ...). */
export function isRemotePath(path: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(path) && !path.startsWith('file://');
}

/** An S3 URL (s3://, also s3a:// and s3n://). */
export function isS3Path(path: string): boolean {
  return /^s3[an]?:\/\//i.test(path);
}

function optionsOf(opts: string | LocateOptions | undefined): LocateOptions {
  return typeof opts === 'string' ? { cwd: opts } : (opts ?? {});
}

function localPath(path: string, cwd: string): string {
  if (isRemotePath(path)) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `${path}: streamstate reads local paths and s3:// URLs only; copy the snapshot to a local directory or to S3 first.`,
    );
  }
  return resolve(cwd, path.startsWith('file://') ? path.slice('file://'.length) : path);
}

async function statOrNull(path: string): Promise<Awaited<ReturnType<typeof stat>> | null> {
  try {
    return await stat(path);
  } catch {
    return null;
  }
}

const CHK = /^chk-(0|[1-9][0-9]*)$/;

/**
 * How many directories above the snapshot directory the store root lies: a checkpoint
 * (`<job>/chk-<n>`) also reads its job's shared/ and taskowned/, so its root is above the job
 * directory; a savepoint reads only its own directory. Decided by the path the user gave, never by
 * the handle paths inside (those are confined to the snapshot: checkpoint/handle-paths.ts).
 */
function rootLevels(snapshotDirName: string): number {
  return CHK.test(snapshotDirName) ? 2 : 1;
}

/** A directory entry name that only a job's checkpoint directory has. */
function isJobDirEntry(name: string): boolean {
  return CHK.test(name) || name === SHARED_DIR;
}

const noop = async (): Promise<void> => undefined;

/**
 * Resolves a checkpoint or savepoint given as its directory or its _metadata file (local path or
 * s3:// URL). The store root is the parent of a savepoint directory, or the parent of the job
 * directory of a checkpoint (`<job>/chk-<n>`, whose files may lie in `<job>/shared/`); handle
 * paths never move it (they must stay inside the snapshot).
 * `opts` may be the cwd (as before s3 support).
 */
export async function locateSnapshot(path: string, opts?: string | LocateOptions): Promise<LocatedSnapshot> {
  const o = optionsOf(opts);
  if (isS3Path(path)) return locateS3Snapshot(path, o.s3 ?? {});
  const abs = localPath(path, o.cwd ?? process.cwd());
  const st = await statOrNull(abs);
  if (st === null) throw new StorageError('NOT_FOUND', `${path}: no such file or directory. Check the path.`);
  let dir: string;
  if (st.isDirectory()) dir = abs;
  else if (basename(abs) === METADATA_FILE) dir = dirname(abs);
  else {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `${path} is a file, not a checkpoint or savepoint: pass the directory that holds _metadata (or the _metadata file itself).`,
    );
  }
  if ((await statOrNull(resolve(dir, METADATA_FILE))) === null) {
    const hint = (await looksLikeCheckpointRoot(dir))
      ? ` It looks like a checkpoint directory: run \`streamstate list ${path}\` to see its checkpoints.`
      : '';
    throw new FormatError(
      'METADATA_MISSING',
      `${path} is not a checkpoint or savepoint (it has no _metadata file): it is incomplete or not a snapshot.${hint}`,
    );
  }
  if (dirname(dir) === dir)
    throw new StreamStateError('INVALID_ARGUMENT', `${path}: a snapshot cannot be the file-system root.`);
  let root = dirname(dir);
  if (rootLevels(basename(dir)) === 2 && dirname(root) !== root) root = dirname(root);
  const storage = localCheckpointStorage(root);
  const snapshot = await storage.resolve(relative(root, dir).split(sep).join('/'));
  return { storage, pointer: snapshot.pointer, snapshot, display: path, close: noop };
}

async function looksLikeCheckpointRoot(dir: string): Promise<boolean> {
  try {
    const names = await readdir(dir);
    return names.some(isJobDirEntry);
  } catch {
    return false;
  }
}

/**
 * Resolves a checkpoint directory (local path or s3:// URL): either one job's directory (holding
 * chk-<n>/ and shared/) or the storage root holding several job directories.
 */
export async function locateCheckpointDir(path: string, opts?: string | LocateOptions): Promise<LocatedCheckpointDir> {
  const o = optionsOf(opts);
  if (isS3Path(path)) return locateS3CheckpointDir(path, o.s3 ?? {});
  const abs = localPath(path, o.cwd ?? process.cwd());
  const st = await statOrNull(abs);
  if (st === null) throw new StorageError('NOT_FOUND', `${path}: no such directory. Check the path.`);
  if (!st.isDirectory())
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `${path} is a file; pass a checkpoint directory (a job's directory or the storage root).`,
    );
  if (await looksLikeCheckpointRoot(abs)) {
    const root = dirname(abs);
    return { storage: localCheckpointStorage(root), jobs: [basename(abs)], display: path, close: noop };
  }
  const jobs: string[] = [];
  for (const entry of await readdir(abs, { withFileTypes: true })) {
    if (entry.isDirectory() && (await looksLikeCheckpointRoot(resolve(abs, entry.name)))) jobs.push(entry.name);
  }
  jobs.sort();
  return { storage: localCheckpointStorage(abs), jobs, display: path, close: noop };
}

/**
 * Where `convert` writes a new savepoint given as an s3:// URL: a store at the bucket root and the
 * URL's key prefix as the directory. Savepoints never use entropy injection, so none is configured.
 */
export function openSnapshotDestination(url: string, s3: S3ConnectionOptions = {}): SnapshotDestination {
  const { bucket, prefix } = parseS3Url(url);
  if (prefix === '') {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `${url} names a bucket, not a savepoint directory: add a key prefix, e.g. s3://${bucket}/savepoints/sp-1.`,
    );
  }
  const { entropy: _unused, ...plain } = s3;
  const store = new LazyS3BlobStore({ ...plain, bucket, prefix: '' });
  return { store, dir: prefix, display: url, close: () => store.close() };
}

// ------------------------------------------------------------------ s3://

function s3Store(bucket: string, prefix: string, s3: S3ConnectionOptions): LazyS3BlobStore {
  return new LazyS3BlobStore({ ...s3, bucket, prefix });
}

/** Parent "directory" of a key prefix ("" at the top). */
function parentPrefix(prefix: string): string {
  const p = posix.dirname(prefix);
  return p === '.' ? '' : p;
}

async function locateS3Snapshot(path: string, s3: S3ConnectionOptions): Promise<LocatedSnapshot> {
  const { bucket, prefix } = parseS3Url(path);
  const dir = prefix === METADATA_FILE || prefix.endsWith(`/${METADATA_FILE}`) ? parentPrefix(prefix) : prefix;
  if (dir === '') {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `${path} names the bucket root; pass the snapshot's directory (s3://${bucket}/<dir>, the prefix that holds _metadata).`,
    );
  }
  let root = parentPrefix(dir);
  if (rootLevels(posix.basename(dir)) === 2) root = parentPrefix(root);
  const store = s3Store(bucket, root, s3);
  try {
    const rel = root === '' ? dir : dir.slice(root.length + 1);
    if ((await store.stat(`${rel}/${METADATA_FILE}`)) === null) await explainMissingMetadata(path, store, rel);
    const storage = new BlobCheckpointStorage(store);
    const snapshot = await storage.resolve(rel);
    return { storage, pointer: snapshot.pointer, snapshot, display: path, close: () => store.close() };
  } catch (err) {
    await store.close();
    throw err;
  }
}

/** Throws the most helpful error for an S3 "directory" without _metadata. */
async function explainMissingMetadata(path: string, store: LazyS3BlobStore, dir: string): Promise<never> {
  if ((await store.stat(dir)) !== null) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `${path} is an object, not a checkpoint or savepoint: pass the prefix that holds _metadata (or the _metadata object itself).`,
    );
  }
  const under = await store.list(`${dir}/`);
  if (under.length === 0) {
    throw new StorageError(
      'NOT_FOUND',
      `${path}: no objects under this prefix in bucket ${store.bucket} (at ${store.endpoint}). Check the path, the bucket and --s3-endpoint.`,
    );
  }
  const jobDir = under.some((b) => isJobDirEntry(b.name.slice(dir.length + 1).split('/', 1)[0]));
  const hint = jobDir
    ? ` It looks like a checkpoint directory: run \`streamstate list ${path}\` to see its checkpoints.`
    : '';
  throw new FormatError(
    'METADATA_MISSING',
    `${path} is not a checkpoint or savepoint (it has no _metadata object): it is incomplete or not a snapshot.${hint}`,
  );
}

async function locateS3CheckpointDir(path: string, s3: S3ConnectionOptions): Promise<LocatedCheckpointDir> {
  const { bucket, prefix } = parseS3Url(path);
  const store = s3Store(bucket, prefix, s3);
  let blobs;
  try {
    blobs = await store.list('');
  } catch (err) {
    await store.close();
    throw err;
  }
  if (blobs.length === 0) {
    await store.close();
    throw new StorageError(
      'NOT_FOUND',
      `${path}: no objects under this prefix in bucket ${bucket} (at ${store.endpoint}). Check the path, the bucket and --s3-endpoint.`,
    );
  }
  if (blobs.some((b) => b.name.includes('/') && isJobDirEntry(b.name.split('/', 1)[0]))) {
    // One job's directory: its parent is the storage root.
    await store.close();
    if (prefix === '') {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `${path}: the bucket root holds chk-<n>/ or shared/ itself; checkpoint storage keeps them under <root>/<jobId>/, so this is not a layout streamstate wrote.`,
      );
    }
    const parent = s3Store(bucket, parentPrefix(prefix), s3);
    return {
      storage: new BlobCheckpointStorage(parent),
      jobs: [posix.basename(prefix)],
      display: path,
      close: () => parent.close(),
    };
  }
  const jobs = new Set<string>();
  for (const b of blobs) {
    const segments = b.name.split('/');
    if (segments.length >= 3 && isJobDirEntry(segments[1])) jobs.add(segments[0]);
  }
  return {
    storage: new BlobCheckpointStorage(store),
    jobs: [...jobs].sort(),
    display: path,
    close: () => store.close(),
  };
}
