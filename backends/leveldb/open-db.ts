import { lstat, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError, StorageError } from '../../src/errors.js';
import { CLASSIC_LEVEL, loadOptional } from '../../src/util/optional-dependency.js';
import type { LevelDb } from './buffered-store.js';

export interface OpenOptions {
  readonly cacheSize?: number;
  /** LevelDB's own memtable size (bytes). */
  readonly writeBufferSize?: number;
  readonly createIfMissing?: boolean;
  /** Keep LevelDB's info log (the LOG file). Default false: see switchInfoLog. */
  readonly infoLog?: boolean;
}

/**
 * LevelDB writes an info log (LOG, a line per flush and compaction) that it rotates only when it
 * opens the database: in a long-running job it grows without bound (megabytes per hour under
 * heavy compaction), and classic-level has no option for it. LevelDB logs nowhere when it cannot
 * create LOG; it cannot while LOG is a directory and moving it to LOG.old fails because LOG.old
 * is a non-empty directory. So "off" is those two directories, "on" is their absence.
 */
async function switchInfoLog(dir: string, on: boolean): Promise<void> {
  const kind = async (name: string): Promise<'dir' | 'file' | null> => {
    const st = await lstat(join(dir, name)).catch(() => null);
    return st === null ? null : st.isDirectory() ? 'dir' : 'file';
  };
  for (const name of ['LOG', 'LOG.old']) {
    const k = await kind(name);
    // On: remove the directories of "off". Off: remove an earlier run's log files.
    if ((on && k === 'dir') || (!on && k === 'file')) await rm(join(dir, name), { recursive: true, force: true });
  }
  if (!on) {
    await mkdir(join(dir, 'LOG.old', 'off'), { recursive: true });
    await mkdir(join(dir, 'LOG'), { recursive: true });
  }
}

/**
 * Opens a ClassicLevel database with buffer keys and values, turning LevelDB's failures into
 * typed errors that name the directory: LOCKED (another open database uses it), CORRUPT (LevelDB
 * found damaged files), STORAGE_IO (anything else). A failed open leaves nothing open.
 */
export async function openLevelDb(dir: string, opts: OpenOptions = {}): Promise<LevelDb> {
  // A missing database that must not be created stays missing (LevelDB reports it).
  const exists = (await lstat(dir).catch(() => null)) !== null;
  // classic-level is an optional peer dependency: loaded here, on first open (DEPENDENCY_MISSING when absent).
  const { ClassicLevel } = await loadOptional(CLASSIC_LEVEL, () => import('classic-level'));
  if (exists || opts.createIfMissing !== false) await switchInfoLog(dir, opts.infoLog ?? false);
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
    throw new StorageError(
      'STORAGE_IO',
      `cannot open the LevelDB database in ${dir}: ${detail}. Check that the directory is writable and complete.`,
      {
        cause: err,
      },
    );
  }
}
