import { posix } from 'node:path';
import type { CheckpointStreamFactory } from '../backend/contract.js';
import type { FileStreamHandle } from '../backend/handles.js';
import { FormatError, StorageError, StreamStateError, isStreamStateError } from '../errors.js';
import type { BlobStore } from '../storage/blob-store.js';
import { checkBlobName, randomHex } from '../storage/blob-names.js';
import { LocalBlobStore } from '../storage/local-blob-store.js';
import { MemoryBlobStore } from '../storage/memory-blob-store.js';
import { isLeaseName } from './lease.js';
import { decodeMetadata, encodeMetadata } from './metadata-codec.js';
import type { CheckpointMetadata, CompletedCheckpointInfo } from './metadata.js';
import type { CheckpointStorage, CheckpointStorageOptions, ResolvedSnapshot } from './storage.js';
import {
  BlobCheckpointStreamFactory,
  BlobStateFileReader,
  DEFAULT_INLINE_THRESHOLD,
  readMetadataBytes,
  resolveHandlePath,
} from './streams.js';

export const METADATA_FILE = '_metadata';
export const SHARED_DIR = 'shared';
export const TASK_OWNED_DIR = 'taskowned';
export const CHECKPOINT_DIR_PREFIX = 'chk-';
export const DEFAULT_MAX_SNAPSHOT_BYTES = 5 * 1024 * 1024;

/** CheckpointStorage over any BlobStore; the layout is described in storage.ts. */
export class BlobCheckpointStorage implements CheckpointStorage {
  readonly store: BlobStore;
  readonly location: string;
  readonly inlineThreshold: number;

  constructor(store: BlobStore, opts: CheckpointStorageOptions = {}) {
    const threshold = opts.inlineThreshold ?? DEFAULT_INLINE_THRESHOLD;
    if (!Number.isSafeInteger(threshold) || threshold < 0) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `inlineThreshold must be a non-negative integer (bytes); got ${opts.inlineThreshold}.`,
      );
    }
    this.store = store;
    this.location = store.location;
    this.inlineThreshold = threshold;
  }

  checkpointPointer(jobId: string, checkpointId: number): string {
    checkJobId(jobId);
    if (!Number.isSafeInteger(checkpointId) || checkpointId < 0) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `checkpoint id must be a non-negative integer; got ${checkpointId}.`,
      );
    }
    return `${jobId}/${CHECKPOINT_DIR_PREFIX}${checkpointId}`;
  }

  checkpointStreams(jobId: string, checkpointId: number): CheckpointStreamFactory {
    return new BlobCheckpointStreamFactory({
      store: this.store,
      baseDir: this.checkpointPointer(jobId, checkpointId),
      sharedDir: `${jobId}/${SHARED_DIR}`,
      inlineThreshold: this.inlineThreshold,
      entropy: true,
    });
  }

  createSavepointLocation(jobId: string, targetDir?: string): { pointer: string; streams: CheckpointStreamFactory } {
    checkJobId(jobId);
    const parent = targetDir === undefined || targetDir === '' ? '' : this.toStoreName(targetDir);
    const name = `savepoint-${jobId.slice(0, 6)}-${randomHex(12)}`;
    const pointer = parent === '' ? name : `${parent}/${name}`;
    // Savepoints keep every file in their own directory (exclusive = shared = the dir): relocatable.
    const streams = new BlobCheckpointStreamFactory({
      store: this.store,
      baseDir: pointer,
      sharedDir: pointer,
      inlineThreshold: this.inlineThreshold,
    });
    return { pointer, streams };
  }

  async writeMetadata(pointer: string, metadata: CheckpointMetadata): Promise<void> {
    const dir = this.toStoreName(pointer);
    const bytes = encodeMetadata(metadata);
    try {
      await this.store.putAtomic(`${dir}/${METADATA_FILE}`, bytes, { exclusive: true });
    } catch (err) {
      if (isStreamStateError(err, 'ALREADY_EXISTS')) {
        throw new StorageError(
          'ALREADY_EXISTS',
          `${this.describe(dir)} already has a _metadata; a completed checkpoint or savepoint is never overwritten. Use a new checkpoint id or savepoint directory.`,
          { cause: err },
        );
      }
      throw err;
    }
  }

  async resolve(pointer: string): Promise<ResolvedSnapshot> {
    const dir = this.toStoreName(pointer);
    const metadataName = `${dir}/${METADATA_FILE}`;
    let bytes: Buffer;
    try {
      bytes = await readMetadataBytes(this.store, metadataName, this.describe(metadataName));
    } catch (err) {
      if (!isStreamStateError(err, 'NOT_FOUND')) throw err;
      const anything = await this.store.list(`${dir}/`);
      if (anything.length > 0) {
        throw new FormatError(
          'METADATA_MISSING',
          `${this.describe(dir)} has no _metadata: the checkpoint never completed; pick an earlier one with \`streamstate list\`.`,
          { cause: err },
        );
      }
      throw new StorageError(
        'NOT_FOUND',
        `no checkpoint or savepoint at ${this.describe(dir)}. Check the path (\`streamstate list\` shows retained checkpoints).`,
        {
          cause: err,
        },
      );
    }
    const metadata = decodeMetadata(bytes, this.describe(metadataName));
    checkPlacement(dir, metadata, this.describe(metadataName));
    return { pointer: dir, metadata, files: new BlobStateFileReader(this.store, dir) };
  }

  async listCompletedCheckpoints(jobId: string): Promise<CompletedCheckpointInfo[]> {
    checkJobId(jobId);
    const prefix = `${jobId}/${CHECKPOINT_DIR_PREFIX}`;
    const byId = new Map<number, { size: number; hasMetadata: boolean }>();
    for (const blob of await this.store.list(prefix)) {
      const rest = blob.name.slice(prefix.length);
      const slash = rest.indexOf('/');
      if (slash <= 0) continue;
      const idText = rest.slice(0, slash);
      if (!/^(0|[1-9][0-9]*)$/.test(idText)) continue;
      const id = Number(idText);
      const entry = byId.get(id) ?? { size: 0, hasMetadata: false };
      entry.size += blob.size;
      if (rest.slice(slash + 1) === METADATA_FILE) entry.hasMetadata = true;
      byId.set(id, entry);
    }
    const completed = [...byId].filter(([, e]) => e.hasMetadata).sort(([a], [b]) => a - b);
    const infos = await Promise.all(
      completed.map(async ([id, e]): Promise<CompletedCheckpointInfo | null> => {
        const pointer = `${prefix}${id}`;
        try {
          const { metadata } = await this.resolve(pointer);
          return { checkpointId: id, pointer, timestamp: metadata.timestamp, size: e.size };
        } catch (err) {
          // Deleted meanwhile, or damaged: either way it cannot be restored, so it is not "completed".
          if (
            err instanceof FormatError ||
            isStreamStateError(err, 'NOT_FOUND') ||
            isStreamStateError(err, 'METADATA_MISSING')
          )
            return null;
          throw err;
        }
      }),
    );
    return infos.filter((i): i is CompletedCheckpointInfo => i !== null);
  }

  async discardCheckpointDirectory(jobId: string, checkpointId: number): Promise<void> {
    const dir = this.checkpointPointer(jobId, checkpointId);
    // _metadata first: from then on a half-deleted directory is never mistaken for a checkpoint.
    await this.store.delete([`${dir}/${METADATA_FILE}`]);
    const rest = await this.store.list(`${dir}/`);
    if (rest.length > 0) await this.store.delete(rest.map((b) => b.name));
  }

  async deleteFiles(pointer: string, files: readonly FileStreamHandle[]): Promise<void> {
    if (files.length === 0) return;
    const dir = this.toStoreName(pointer);
    await this.store.delete(files.map((f) => resolveHandlePath(dir, f.path)));
  }

  async listJobFiles(jobId: string): Promise<string[]> {
    checkJobId(jobId);
    // The job lease (lease.ts) is not a checkpoint file: nothing that walks job files may touch it.
    return (await this.store.list(`${jobId}/`)).map((b) => b.name).filter((name) => !isLeaseName(jobId, name));
  }

  /**
   * A pointer as a store-relative directory: accepts the directory or its _metadata, store-relative
   * or absolute under the store's location (`/abs/root/job/chk-3`, `memory://name/job/chk-3`).
   */
  toStoreName(pointer: string): string {
    if (typeof pointer !== 'string' || pointer.trim() === '') {
      throw new StreamStateError('INVALID_ARGUMENT', 'a checkpoint pointer must be a non-empty path.');
    }
    let p =
      pointer.startsWith('file://') && !this.location.startsWith('file://') ? pointer.slice('file://'.length) : pointer;
    const location = this.location.replace(/\/+$/, '');
    if (p === location || p.startsWith(`${location}/`)) {
      p = p.slice(location.length + 1);
    } else if (p.startsWith('/') || /^[a-z][a-z0-9+.-]*:\/\//i.test(p)) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `pointer ${pointer} is not under this checkpoint storage (${this.location}). Open the storage it belongs to, or pass a path relative to ${this.location}.`,
      );
    }
    p = p.replace(/\/+$/, '');
    if (p === METADATA_FILE) p = '';
    else if (p.endsWith(`/${METADATA_FILE}`)) p = p.slice(0, -(METADATA_FILE.length + 1));
    if (p === '') {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `pointer ${pointer} names the storage root; point at a checkpoint (<job>/chk-<n>) or savepoint directory.`,
      );
    }
    return checkBlobName(posix.normalize(p), 'checkpoint pointer');
  }

  private describe(name: string): string {
    return `${this.location}/${name}`;
  }
}

/**
 * A _metadata in a `<job>/chk-<n>` directory must be the one of checkpoint n of that job. One
 * copied over from another checkpoint or job is intact (its checksum is fine) but restoring it
 * would silently yield that other checkpoint's state: its inline state and shared files resolve
 * just as well from here.
 */
function checkPlacement(dir: string, metadata: CheckpointMetadata, what: string): void {
  const parts = dir.split('/');
  const m = CHECKPOINT_DIR_NAME.exec(parts[parts.length - 1]);
  if (m === null) return;
  const job = parts.length >= 2 ? parts[parts.length - 2] : undefined;
  const id = Number(m[1]);
  if (metadata.checkpointId !== id || (job !== undefined && metadata.jobId !== job)) {
    throw new FormatError(
      'CORRUPT',
      `${what} is the _metadata of checkpoint ${metadata.checkpointId} of job ${metadata.jobId}, but it lies in the directory of checkpoint ${id}` +
        `${job === undefined ? '' : ` of job ${job}`}: it was copied or moved here from another checkpoint. ` +
        'Restore from the checkpoint it belongs to, or pick another one with `streamstate list`.',
    );
  }
}

const CHECKPOINT_DIR_NAME = /^chk-(0|[1-9][0-9]*)$/;

function checkJobId(jobId: string): void {
  if (typeof jobId !== 'string' || !/^[A-Za-z0-9._-]+$/.test(jobId) || jobId === '.' || jobId === '..') {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `job id ${JSON.stringify(jobId)} must be non-empty and use only letters, digits, ".", "_" and "-" (it becomes a directory name).`,
    );
  }
}

/** Checkpoint storage in a local directory (created on first write). */
export function localCheckpointStorage(dir: string, opts?: CheckpointStorageOptions): BlobCheckpointStorage {
  return new BlobCheckpointStorage(new LocalBlobStore(dir), opts);
}

/**
 * In-process checkpoint storage (tests, small jobs). A `name` reuses the process-wide store of that
 * name, so a job restarted in the same process finds its checkpoints. Each object is limited to
 * `maxSnapshotBytes` (default 5 MiB).
 */
export function memoryCheckpointStorage(
  opts: CheckpointStorageOptions & { name?: string; maxSnapshotBytes?: number } = {},
): BlobCheckpointStorage {
  const maxObjectBytes = opts.maxSnapshotBytes ?? DEFAULT_MAX_SNAPSHOT_BYTES;
  const store =
    opts.name === undefined
      ? new MemoryBlobStore({ maxObjectBytes })
      : MemoryBlobStore.named(opts.name, { maxObjectBytes });
  return new BlobCheckpointStorage(store, { inlineThreshold: opts.inlineThreshold });
}
