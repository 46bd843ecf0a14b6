import { ClassicLevel } from 'classic-level';
import { FormatError, StorageError } from '../../src/errors.js';
import type { LevelDb } from './buffered-store.js';

export interface OpenOptions {
  readonly cacheSize?: number;
  /** LevelDB's own memtable size (bytes). */
  readonly writeBufferSize?: number;
  readonly createIfMissing?: boolean;
}

/**
 * Opens a ClassicLevel database with buffer keys and values, turning LevelDB's failures into
 * typed errors that name the directory: LOCKED (another open database uses it), CORRUPT (LevelDB
 * found damaged files), STORAGE_IO (anything else). A failed open leaves nothing open.
 */
export async function openLevelDb(dir: string, opts: OpenOptions = {}): Promise<LevelDb> {
  const db = new ClassicLevel<Buffer, Buffer>(dir, {
    keyEncoding: 'buffer',
    valueEncoding: 'buffer',
    ...(opts.cacheSize !== undefined ? { cacheSize: opts.cacheSize } : {}),
    ...(opts.writeBufferSize !== undefined ? { writeBufferSize: opts.writeBufferSize } : {}),
    createIfMissing: opts.createIfMissing ?? true,
  });
  try {
    await db.open();
    return db;
  } catch (err) {
    await db.close().catch(() => undefined);
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const detail = cause?.message ?? (err as Error).message;
    if (cause?.code === 'LEVEL_LOCKED') {
      throw new StorageError(
        'LOCKED',
        `the LevelDB working directory ${dir} is locked by another open database (${detail}). ` +
          'Another backend instance (in this or another process) is using it: close it first, or give each backend its own workingDir.',
        { cause: err },
      );
    }
    if (cause?.code === 'LEVEL_CORRUPTION' || /\.ldb|\.sst|MANIFEST|CURRENT/.test(detail)) {
      throw new FormatError(
        'CORRUPT',
        `the LevelDB database in ${dir} is corrupt (${detail}). Delete the directory and restore from a checkpoint.`,
        { cause: err },
      );
    }
    throw new StorageError('STORAGE_IO', `cannot open the LevelDB database in ${dir}: ${detail}. Check that the directory is writable and complete.`, {
      cause: err,
    });
  }
}
