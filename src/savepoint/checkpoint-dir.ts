import { referencedFiles } from '../backend/handles.js';
import { METADATA_FILE, SHARED_DIR, TASK_OWNED_DIR } from '../checkpoint/checkpoint-storage.js';
import type { CompletedCheckpointInfo } from '../checkpoint/metadata.js';
import type { CheckpointStorage } from '../checkpoint/storage.js';
import { resolveHandlePath } from '../checkpoint/streams.js';
import { FormatError, isStreamStateError } from '../errors.js';

/**
 * `streamstate list` and `streamstate gc`: what a job's checkpoint directory holds, and which of
 * its files no completed checkpoint needs.
 */

export interface JobCheckpoints {
  readonly jobId: string;
  readonly checkpoints: readonly CompletedCheckpointInfo[];
  /** chk-<n> directories without _metadata (never completed, or being written right now). */
  readonly incomplete: readonly number[];
}

const CHK = /^chk-(0|[1-9][0-9]*)$/;

function chkIdOf(jobId: string, name: string): number | undefined {
  const rest = name.slice(jobId.length + 1);
  const dir = rest.split('/', 1)[0];
  const m = CHK.exec(dir);
  return m !== null && rest.length > dir.length ? Number(m[1]) : undefined;
}

export async function listJobCheckpoints(storage: CheckpointStorage, jobId: string): Promise<JobCheckpoints> {
  const checkpoints = await storage.listCompletedCheckpoints(jobId);
  const complete = new Set(checkpoints.map((c) => c.checkpointId));
  const dirs = new Set<number>();
  for (const name of await storage.listJobFiles(jobId)) {
    const id = chkIdOf(jobId, name);
    if (id !== undefined) dirs.add(id);
  }
  const incomplete = [...dirs].filter((id) => !complete.has(id)).sort((a, b) => a - b);
  return { jobId, checkpoints, incomplete };
}

export interface GarbageFile {
  readonly name: string;
  readonly size: number;
  readonly reason: 'incomplete-checkpoint' | 'unreferenced-shared' | 'unreferenced-exclusive';
}

export interface GarbageReport {
  readonly jobId: string;
  readonly files: readonly GarbageFile[];
  readonly bytes: number;
  /** Why some candidates were kept (e.g. an unreadable _metadata may reference shared files). */
  readonly warnings: readonly string[];
}

/**
 * Files of a job that no completed checkpoint references: whole chk-<n> directories without
 * _metadata, shared files no readable checkpoint uses, stray files inside completed checkpoint
 * directories. taskowned/ and files outside these directories are never touched. When a
 * _metadata cannot be read, shared files are kept (it may reference them).
 * Run it only while the job is stopped: a checkpoint in progress looks exactly like garbage.
 */
export async function findGarbage(storage: CheckpointStorage, jobId: string): Promise<GarbageReport> {
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
      for (const op of metadata.operators) for (const s of op.subtasks) for (const f of referencedFiles([s.keyed, s.operator])) referenced.add(resolveHandlePath(pointer, f.path));
    } catch (err) {
      if (!(err instanceof FormatError) && !isStreamStateError(err, 'NOT_FOUND')) throw err;
      warnings.push(`${storage.location}/${pointer}/_metadata cannot be read (${(err as Error).message}); its directory and all shared files are kept.`);
    }
  }
  const keepShared = readable.size !== withMetadata.size;
  const files: GarbageFile[] = [];
  for (const b of blobs) {
    if (referenced.has(b.name)) continue;
    const id = chkIdOf(jobId, b.name);
    if (id !== undefined) {
      if (!withMetadata.has(id)) files.push({ name: b.name, size: b.size, reason: 'incomplete-checkpoint' });
      else if (readable.has(id) && !b.name.endsWith(`/${METADATA_FILE}`)) files.push({ name: b.name, size: b.size, reason: 'unreferenced-exclusive' });
    } else if (b.name.startsWith(`${jobId}/${SHARED_DIR}/`) && !keepShared) {
      files.push({ name: b.name, size: b.size, reason: 'unreferenced-shared' });
    } else if (b.name.startsWith(`${jobId}/${TASK_OWNED_DIR}/`)) {
      continue;
    }
  }
  files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { jobId, files, bytes: files.reduce((n, f) => n + f.size, 0), warnings };
}

/** Deletes what findGarbage found. */
export async function deleteGarbage(storage: CheckpointStorage, report: GarbageReport): Promise<void> {
  const names = report.files.map((f) => f.name);
  for (let i = 0; i < names.length; i += 1000) await storage.store.delete(names.slice(i, i + 1000));
}
