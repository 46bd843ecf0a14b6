import { crc32 } from 'node:zlib';
import { subtaskStateHandles } from '../checkpoint/metadata.js';
import { referencedFiles, type FileStreamHandle } from '../backend/handles.js';
import { METADATA_FILE } from '../checkpoint/checkpoint-storage.js';
import { decodeMetadata } from '../checkpoint/metadata-codec.js';
import { resolveHandlePath } from '../checkpoint/streams.js';
import { FormatError, StorageError, StreamStateError } from '../errors.js';
import type { BlobStore } from '../storage/blob-store.js';

/**
 * Copies a self-contained snapshot (a savepoint: every file inside its own directory) from one
 * blob store directory to another, e.g. a converted savepoint from a local temp directory to S3, or
 * a savepoint to another S3 prefix. The referenced files go first (size and CRC-32 checked on the
 * way), _metadata last with one atomic, exclusive write: until then the target is no snapshot. On
 * failure everything written is deleted again, so nothing partial is left behind.
 */

export interface SnapshotLocation {
  readonly store: BlobStore;
  /** Store-relative directory holding _metadata. */
  readonly dir: string;
}

export interface CopySnapshotOptions {
  /** Files copied at once. Default 4. */
  readonly concurrency?: number;
  /** Called after each file. */
  readonly progress?: (done: number, total: number) => void;
}

export interface CopySnapshotResult {
  readonly files: number;
  readonly bytes: number;
}

const CHUNK = 8 * 1024 * 1024;

export async function copySnapshot(
  from: SnapshotLocation,
  to: SnapshotLocation,
  opts: CopySnapshotOptions = {},
): Promise<CopySnapshotResult> {
  const source = `${from.store.location}/${from.dir}`;
  const target = `${to.store.location}/${to.dir}`;
  const metadataBytes = await from.store.get(`${from.dir}/${METADATA_FILE}`);
  const metadata = decodeMetadata(metadataBytes, `${source}/${METADATA_FILE}`);
  const files = new Map<string, FileStreamHandle>();
  for (const op of metadata.operators) {
    for (const s of op.subtasks) {
      for (const f of referencedFiles(subtaskStateHandles(s))) {
        const name = resolveHandlePath(from.dir, f.path);
        if (!name.startsWith(`${from.dir}/`)) {
          throw new StreamStateError(
            'INVALID_ARGUMENT',
            `${source} references ${f.path}, outside its own directory (a checkpoint's shared files): only self-contained snapshots can be copied. ` +
              'Take a savepoint, or convert the checkpoint into one (`streamstate convert`), and copy that.',
          );
        }
        files.set(name.slice(from.dir.length + 1), f);
      }
    }
  }
  if ((await to.store.list(`${to.dir}/`)).length > 0) {
    throw new StorageError(
      'ALREADY_EXISTS',
      `${target} already holds objects; a snapshot is copied into a new, empty directory. Pick another destination or remove it.`,
    );
  }

  const written: string[] = [];
  const entries = [...files];
  let done = 0;
  let bytes = 0;
  try {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < entries.length) {
        const [rel, handle] = entries[next++];
        const name = `${to.dir}/${rel}`;
        written.push(name);
        bytes += await copyFile(from.store, `${from.dir}/${rel}`, to.store, name, handle);
        opts.progress?.(++done, entries.length);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency ?? 4, entries.length)) }, worker));
    written.push(`${to.dir}/${METADATA_FILE}`);
    await to.store.putAtomic(`${to.dir}/${METADATA_FILE}`, metadataBytes, { exclusive: true });
    return { files: entries.length + 1, bytes: bytes + metadataBytes.length };
  } catch (err) {
    // _metadata first: a half-deleted copy must never look like a snapshot.
    const metadataName = `${to.dir}/${METADATA_FILE}`;
    const order = written.includes(metadataName)
      ? [metadataName, ...written.filter((n) => n !== metadataName)]
      : written;
    await to.store.delete(order.slice(0, 1)).catch(() => undefined);
    await to.store.delete(order.slice(1)).catch(() => undefined);
    throw err;
  }
}

/** Streams one object across stores in 8 MiB ranges, checking the recorded size and CRC-32. */
async function copyFile(
  from: BlobStore,
  fromName: string,
  to: BlobStore,
  toName: string,
  handle: FileStreamHandle,
): Promise<number> {
  let crc = 0;
  let size = 0;
  async function* chunks(): AsyncGenerator<Uint8Array> {
    for (let off = 0; off < handle.size; off += CHUNK) {
      const c = await from.getRange(fromName, off, Math.min(CHUNK, handle.size - off));
      if (c.length === 0) break;
      crc = crc32(c, crc);
      size += c.length;
      yield c;
    }
    if (size !== handle.size) {
      throw new FormatError(
        'TRUNCATED',
        `${from.location}/${fromName} has ${size} bytes, its handle records ${handle.size}; the snapshot is damaged. Use another one.`,
      );
    }
    if (crc >>> 0 !== handle.crc32 >>> 0) {
      throw new FormatError(
        'CHECKSUM_MISMATCH',
        `${from.location}/${fromName}: crc32 ${(crc >>> 0).toString(16)} differs from the recorded ${(handle.crc32 >>> 0).toString(16)}; the file is corrupt. Use another snapshot.`,
      );
    }
  }
  if (handle.size === 0 && (await from.stat(fromName)) === null) {
    throw new StorageError('NOT_FOUND', `${from.location}/${fromName} is missing; the snapshot is incomplete.`);
  }
  await to.putStream(toName, chunks());
  return size;
}
