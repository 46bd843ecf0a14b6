import { lstat, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { referencedFiles } from '../backend/handles.js';
import { METADATA_FILE, SHARED_DIR } from '../checkpoint/checkpoint-storage.js';
import { readLease, type LeaseInfo } from '../checkpoint/lease.js';
import {
  subtaskStateHandles,
  type CheckpointMetadataStats,
  type CompletedCheckpointInfo,
} from '../checkpoint/metadata.js';
import type { CheckpointStorage } from '../checkpoint/storage.js';
import { resolveHandlePath } from '../checkpoint/streams.js';
import { FormatError, isStreamStateError, StorageError, StreamStateError } from '../errors.js';
import type { BlobInfo } from '../storage/blob-store.js';
import { fsErrorToStorageError } from '../storage/local-blob-store.js';
import { CONVERT_LEFTOVER } from './convert.js';

/**
 * `streamstate list` and `streamstate gc`: what a job's checkpoint directory holds, and which of
 * its files no completed checkpoint needs.
 */

export interface JobCheckpoints {
  readonly jobId: string;
  readonly checkpoints: readonly ListedCheckpoint[];
  /** chk-<n> directories without _metadata (never completed, or being written right now). */
  readonly incomplete: readonly number[];
}

/** A completed checkpoint with the statistics its _metadata records (absent in files written before they existed). */
export type ListedCheckpoint = CompletedCheckpointInfo & { readonly stats?: Omit<CheckpointMetadataStats, 'subtasks'> };

const CHK = /^chk-(0|[1-9][0-9]*)$/;

function chkIdOf(jobId: string, name: string): number | undefined {
  const rest = name.slice(jobId.length + 1);
  const dir = rest.split('/', 1)[0];
  const m = CHK.exec(dir);
  return m !== null && rest.length > dir.length ? Number(m[1]) : undefined;
}

export async function listJobCheckpoints(storage: CheckpointStorage, jobId: string): Promise<JobCheckpoints> {
  const checkpoints: ListedCheckpoint[] = [];
  for (const info of await storage.listCompletedCheckpoints(jobId)) {
    let stats: CheckpointMetadataStats | undefined;
    try {
      stats = (await storage.resolve(info.pointer)).metadata.stats;
    } catch {
      stats = undefined; // deleted or damaged since it was listed: list it without statistics
    }
    if (stats === undefined) checkpoints.push(info);
    else {
      const { subtasks: _subtasks, ...summary } = stats;
      checkpoints.push({ ...info, stats: summary });
    }
  }
  const complete = new Set(checkpoints.map((c) => c.checkpointId));
  const dirs = new Set<number>();
  for (const name of await storage.listJobFiles(jobId)) {
    const id = chkIdOf(jobId, name);
    if (id !== undefined) dirs.add(id);
  }
  const incomplete = [...dirs].filter((id) => !complete.has(id)).sort((a, b) => a - b);
  return { jobId, checkpoints, incomplete };
}

/** How long a file must have been left alone before gc deletes it, unless told otherwise: 1 hour. */
export const DEFAULT_GC_MIN_AGE_MS = 60 * 60 * 1000;

/**
 * Names of the data files streamstate writes into chk-<n>/ and shared/ (src/checkpoint/streams.ts):
 * 32 hex characters, or 16 hex characters, "-" and the name of an uploaded local file (LevelDB
 * tables, MANIFEST, ...), optionally behind an entropy tag `~xxxx~` (S3 entropy injection).
 * gc deletes nothing else: files of other names are not ours to judge.
 */
const DATA_FILE = /^(~[a-z0-9]{1,32}~)?([0-9a-f]{32}|[0-9a-f]{16}-[A-Za-z0-9._-]{1,200})$/;

export function isDataFileName(fileName: string): boolean {
  return DATA_FILE.test(fileName);
}

export interface GcOptions {
  /** Files younger than this (by modification time) are kept: they may belong to a checkpoint that is still being written. Default 1 hour. */
  readonly minAgeMs?: number;
  /** "Now" for the age check (ms since epoch). Default Date.now(). */
  readonly now?: number;
}

export interface GarbageFile {
  readonly name: string;
  readonly size: number;
  readonly reason: 'incomplete-checkpoint' | 'unreferenced-shared' | 'unreferenced-exclusive';
}

export interface KeptFile {
  readonly name: string;
  readonly size: number;
  /**
   * too-young: unreferenced but modified within minAge (a checkpoint may still complete with it);
   * unknown-name: not a name streamstate writes; metadata-unreadable: a _metadata that cannot be
   * read may reference it.
   */
  readonly reason: 'too-young' | 'unknown-name' | 'metadata-unreadable';
}

export interface GarbageReport {
  readonly jobId: string;
  readonly files: readonly GarbageFile[];
  readonly bytes: number;
  /** Files gc would otherwise consider and keeps, with the reason. */
  readonly kept: readonly KeptFile[];
  /** Why some candidates were kept (e.g. an unreadable _metadata may reference shared files). */
  readonly warnings: readonly string[];
}

function byName<T extends { name: string }>(a: T, b: T): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

/**
 * Files of a job that no completed checkpoint references and that are older than `minAgeMs`:
 * streamstate-named files in chk-<n> directories without _metadata, in shared/ when no readable
 * checkpoint uses them, and stray ones inside completed checkpoint directories. Nothing else is
 * ever a candidate: not _metadata, not taskowned/, not deeper paths, not other names.
 *
 * The job must be recognizably streamstate's: at least one chk-<n>/_metadata that decodes as a
 * streamstate _metadata of this job and checkpoint. Otherwise NOT_FOUND (nothing is judged).
 * While an instance of the job may be live (liveLease), LOCKED (nothing is judged either).
 * When a _metadata cannot be read, shared files are kept (it may reference them).
 */
export async function findGarbage(
  storage: CheckpointStorage,
  jobId: string,
  opts: GcOptions = {},
): Promise<GarbageReport> {
  const report = await findGarbageIfJob(storage, jobId, opts);
  if (report === null) {
    throw new StorageError(
      'NOT_FOUND',
      `${storage.location}/${jobId} holds no streamstate job: no chk-<n>/_metadata in it is a readable streamstate checkpoint of job ${jobId}. ` +
        'gc deletes nothing there; pass a job directory written by streamstate, or the storage root that holds such job directories.',
    );
  }
  return report;
}

/**
 * The lease of `jobId` when an instance may be live on it (src/checkpoint/lease.ts): not released
 * by a clean shutdown and renewed (at start, after every completed checkpoint) within
 * max(minAgeMs, 1 hour). An instance that crashed stops counting once that much time has passed.
 */
export async function liveLease(
  storage: CheckpointStorage,
  jobId: string,
  opts: GcOptions = {},
): Promise<LeaseInfo | null> {
  const lease = await readLease(storage.store, jobId);
  if (lease === null || lease.released) return null;
  const window = Math.max(opts.minAgeMs ?? DEFAULT_GC_MIN_AGE_MS, DEFAULT_GC_MIN_AGE_MS);
  const now = opts.now ?? Date.now();
  return lease.renewedAt !== undefined && now - lease.renewedAt >= window ? null : lease;
}

/**
 * findGarbage, or null when `jobId` is not recognizably a streamstate job (then nothing is judged).
 * Throws LOCKED while an instance of the job may be live (liveLease): nothing is judged either.
 */
export async function findGarbageIfJob(
  storage: CheckpointStorage,
  jobId: string,
  opts: GcOptions = {},
): Promise<GarbageReport | null> {
  const minAgeMs = opts.minAgeMs ?? DEFAULT_GC_MIN_AGE_MS;
  if (!(minAgeMs >= 0))
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `minAgeMs must be a non-negative number of milliseconds; got ${String(opts.minAgeMs)}.`,
    );
  const now = opts.now ?? Date.now();
  const blobs = await storage.store.list(`${jobId}/`);
  const referenced = new Set<string>();
  const warnings: string[] = [];
  const withMetadata = new Set<number>();
  const readable = new Set<number>();
  for (const b of blobs) {
    const id = chkIdOf(jobId, b.name);
    if (id !== undefined && b.name === `${jobId}/chk-${id}/${METADATA_FILE}`) withMetadata.add(id);
  }
  for (const id of [...withMetadata].sort((a, b) => a - b)) {
    const pointer = `${jobId}/chk-${id}`;
    try {
      const { metadata } = await storage.resolve(pointer);
      readable.add(id);
      for (const op of metadata.operators)
        for (const s of op.subtasks)
          for (const f of referencedFiles(subtaskStateHandles(s))) referenced.add(resolveHandlePath(pointer, f.path));
    } catch (err) {
      if (
        !(err instanceof FormatError) &&
        !isStreamStateError(err, 'NOT_FOUND') &&
        !isStreamStateError(err, 'INVALID_ARGUMENT')
      )
        throw err;
      warnings.push(
        `${storage.location}/${pointer}/_metadata cannot be read (${(err as Error).message}); its directory and all shared files are kept.`,
      );
    }
  }
  if (readable.size === 0) return null;
  const lease = await liveLease(storage, jobId, opts);
  if (lease !== null) {
    const ago =
      lease.renewedAt === undefined
        ? 'at an unknown time'
        : `${Math.max(0, Math.round((now - lease.renewedAt) / 1000))} s ago`;
    throw new StorageError(
      'LOCKED',
      `job ${jobId} at ${storage.location} may be running: instance ${lease.instanceId} (lease epoch ${lease.epoch}) renewed its lease ${ago} and has not released it. ` +
        'gc deletes nothing of a job that may still complete a checkpoint; stop the job (a clean shutdown releases the lease) or run gc once the lease is older than an hour.',
    );
  }
  const keepShared = readable.size !== withMetadata.size;
  const files: GarbageFile[] = [];
  const kept: KeptFile[] = [];
  const consider = (b: BlobInfo, reason: GarbageFile['reason']): void => {
    if (b.modified === undefined || now - b.modified < minAgeMs)
      kept.push({ name: b.name, size: b.size, reason: 'too-young' });
    else files.push({ name: b.name, size: b.size, reason });
  };
  for (const b of blobs) {
    if (referenced.has(b.name)) continue;
    const parts = b.name.slice(jobId.length + 1).split('/');
    if (parts.length !== 2) continue; // taskowned/..., deeper paths: never ours to delete
    const [dir, file] = parts;
    const id = chkIdOf(jobId, b.name);
    if (id !== undefined) {
      if (file === METADATA_FILE) continue;
      if (!isDataFileName(file)) kept.push({ name: b.name, size: b.size, reason: 'unknown-name' });
      else if (!withMetadata.has(id)) consider(b, 'incomplete-checkpoint');
      else if (readable.has(id)) consider(b, 'unreferenced-exclusive');
      else kept.push({ name: b.name, size: b.size, reason: 'metadata-unreadable' });
    } else if (dir === SHARED_DIR) {
      if (!isDataFileName(file)) kept.push({ name: b.name, size: b.size, reason: 'unknown-name' });
      else if (keepShared) kept.push({ name: b.name, size: b.size, reason: 'metadata-unreadable' });
      else consider(b, 'unreferenced-shared');
    }
  }
  files.sort(byName);
  kept.sort(byName);
  return { jobId, files, bytes: files.reduce((n, f) => n + f.size, 0), kept, warnings };
}

/** Deletes what findGarbage found. */
export async function deleteGarbage(storage: CheckpointStorage, report: GarbageReport): Promise<void> {
  const names = report.files.map((f) => f.name);
  for (let i = 0; i < names.length; i += 1000) await storage.store.delete(names.slice(i, i + 1000));
}

// ------------------------------------------------------------------ leftovers of interrupted converts

export interface ConvertLeftover {
  /** Absolute path of the hidden directory. */
  readonly path: string;
  readonly bytes: number;
  /** Newest modification time of the directory or anything in it (ms since epoch). */
  readonly newest: number;
}

export interface ConvertLeftovers {
  /** Old enough to delete. */
  readonly stale: readonly ConvertLeftover[];
  /** Modified within minAge: a convert may still be writing them. */
  readonly young: readonly ConvertLeftover[];
}

/** Size and newest mtime of a tree, without following symlinks. */
async function treeStats(path: string): Promise<{ bytes: number; newest: number }> {
  const st = await lstat(path);
  let bytes = st.isFile() ? st.size : 0;
  let newest = st.mtimeMs;
  if (st.isDirectory()) {
    for (const name of await readdir(path)) {
      try {
        const t = await treeStats(join(path, name));
        bytes += t.bytes;
        newest = Math.max(newest, t.newest);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
  }
  return { bytes, newest };
}

/**
 * The temporary directories an interrupted `convert` left directly inside `dir` (local disk):
 * hidden directories named as convert names them (CONVERT_LEFTOVER). Only `dir` itself is looked
 * at, never its parents or other folders.
 */
export async function findConvertLeftovers(dir: string, opts: GcOptions = {}): Promise<ConvertLeftovers> {
  const minAgeMs = opts.minAgeMs ?? DEFAULT_GC_MIN_AGE_MS;
  const now = opts.now ?? Date.now();
  const stale: ConvertLeftover[] = [];
  const young: ConvertLeftover[] = [];
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    throw fsErrorToStorageError(err, 'list', dir);
  }
  for (const e of entries) {
    if (!e.isDirectory() || !CONVERT_LEFTOVER.test(e.name)) continue;
    const path = join(dir, e.name);
    let t;
    try {
      t = await treeStats(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // finished meanwhile
      throw fsErrorToStorageError(err, 'stat', path);
    }
    (now - t.newest < minAgeMs ? young : stale).push({ path, bytes: t.bytes, newest: t.newest });
  }
  const order = (a: ConvertLeftover, b: ConvertLeftover): number => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
  return { stale: stale.sort(order), young: young.sort(order) };
}

/** Removes leftovers findConvertLeftovers reported stale. */
export async function deleteConvertLeftovers(leftovers: readonly ConvertLeftover[]): Promise<void> {
  for (const l of leftovers) {
    try {
      await rm(l.path, { recursive: true, force: true });
    } catch (err) {
      throw fsErrorToStorageError(err, 'delete', l.path);
    }
  }
}
