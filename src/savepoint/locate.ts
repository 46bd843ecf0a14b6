import { readdir, stat } from 'node:fs/promises';
import { basename, dirname, relative, resolve, sep } from 'node:path';
import { referencedFiles } from '../backend/handles.js';
import { localCheckpointStorage, METADATA_FILE } from '../checkpoint/checkpoint-storage.js';
import type { CheckpointStorage, ResolvedSnapshot } from '../checkpoint/storage.js';
import { StorageError, StreamStateError } from '../errors.js';

/**
 * Where a user-given path leads: which checkpoint storage holds it and the pointer inside it.
 * This is the one place that turns paths into storage, so other schemes (s3://) plug in here.
 */

export interface LocatedSnapshot {
  readonly storage: CheckpointStorage;
  /** Store-relative directory of the _metadata. */
  readonly pointer: string;
  readonly snapshot: ResolvedSnapshot;
  /** The path as the user should see it in messages. */
  readonly display: string;
}

export interface LocatedCheckpointDir {
  readonly storage: CheckpointStorage;
  /** The jobs to look at (store-relative job directory names). */
  readonly jobs: readonly string[];
  readonly display: string;
}

/** A URL-style path of another scheme (s3://...). Local paths (and file://) are handled here; others are refused with a clear message. */
export function isRemotePath(path: string): boolean {
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(path) && !path.startsWith('file://');
}

function localPath(path: string, cwd: string): string {
  if (isRemotePath(path)) {
    throw new StreamStateError('INVALID_ARGUMENT', `${path}: only local paths are supported by this streamstate build; copy the snapshot to a local directory first.`);
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

/** How many directories above the snapshot's own its files reach (`../shared/x` = 1). */
function climb(snapshot: ResolvedSnapshot): number {
  let max = 0;
  for (const op of snapshot.metadata.operators) {
    for (const s of op.subtasks) {
      for (const f of referencedFiles([s.keyed, s.operator])) {
        let n = 0;
        for (const seg of f.path.split('/')) if (seg === '..') n++;
        max = Math.max(max, n);
      }
    }
  }
  return max;
}

function up(path: string, levels: number): string {
  let p = path;
  for (let i = 0; i < levels; i++) p = dirname(p);
  return p;
}

/**
 * Resolves a checkpoint or savepoint given as its directory or its _metadata file. The store root
 * is the parent of the snapshot directory, raised as far as its file paths climb (a checkpoint's
 * `../shared/...` files put the root above the job directory).
 */
export async function locateSnapshot(path: string, cwd = process.cwd()): Promise<LocatedSnapshot> {
  const abs = localPath(path, cwd);
  const st = await statOrNull(abs);
  if (st === null) throw new StorageError('NOT_FOUND', `${path}: no such file or directory. Check the path.`);
  let dir: string;
  if (st.isDirectory()) dir = abs;
  else if (basename(abs) === METADATA_FILE) dir = dirname(abs);
  else {
    throw new StreamStateError('INVALID_ARGUMENT', `${path} is a file, not a checkpoint or savepoint: pass the directory that holds _metadata (or the _metadata file itself).`);
  }
  if ((await statOrNull(resolve(dir, METADATA_FILE))) === null) {
    const hint = (await looksLikeCheckpointRoot(dir)) ? ` It looks like a checkpoint directory: run \`streamstate list ${path}\` to see its checkpoints.` : '';
    throw new StorageError('METADATA_MISSING', `${path} is not a checkpoint or savepoint (it has no _metadata file): it is incomplete or not a snapshot.${hint}`);
  }
  let root = dirname(dir);
  if (root === dir) throw new StreamStateError('INVALID_ARGUMENT', `${path}: a snapshot cannot be the file-system root.`);
  let storage = localCheckpointStorage(root);
  let snapshot = await storage.resolve(relative(root, dir).split(sep).join('/'));
  const extra = climb(snapshot);
  if (extra > 0) {
    root = up(root, extra);
    storage = localCheckpointStorage(root);
    snapshot = await storage.resolve(relative(root, dir).split(sep).join('/'));
  }
  return { storage, pointer: snapshot.pointer, snapshot, display: path };
}

const CHK = /^chk-(0|[1-9][0-9]*)$/;

async function looksLikeCheckpointRoot(dir: string): Promise<boolean> {
  try {
    const names = await readdir(dir);
    return names.some((n) => CHK.test(n) || n === 'shared');
  } catch {
    return false;
  }
}

/**
 * Resolves a checkpoint directory: either one job's directory (holding chk-<n>/ and shared/) or
 * the storage root holding several job directories.
 */
export async function locateCheckpointDir(path: string, cwd = process.cwd()): Promise<LocatedCheckpointDir> {
  const abs = localPath(path, cwd);
  const st = await statOrNull(abs);
  if (st === null) throw new StorageError('NOT_FOUND', `${path}: no such directory. Check the path.`);
  if (!st.isDirectory()) throw new StreamStateError('INVALID_ARGUMENT', `${path} is a file; pass a checkpoint directory (a job's directory or the storage root).`);
  if (await looksLikeCheckpointRoot(abs)) {
    const root = dirname(abs);
    return { storage: localCheckpointStorage(root), jobs: [basename(abs)], display: path };
  }
  const jobs: string[] = [];
  for (const entry of await readdir(abs, { withFileTypes: true })) {
    if (entry.isDirectory() && (await looksLikeCheckpointRoot(resolve(abs, entry.name)))) jobs.push(entry.name);
  }
  jobs.sort();
  return { storage: localCheckpointStorage(abs), jobs, display: path };
}
