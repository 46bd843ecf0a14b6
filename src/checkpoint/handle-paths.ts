import { FormatError } from '../errors.js';

/**
 * The one home of the rule that confines paths read from a _metadata or handle (docs/FORMAT.md,
 * "Paths in handles"). A handle path is resolved against the directory of its snapshot and must
 * stay inside that snapshot:
 *
 *   checkpoint `<job>/chk-<n>`:  `<job>/chk-<n>/…`, `<job>/shared/…`, `<job>/taskowned/…`
 *   savepoint (any other dir):   `<dir>/…`
 *
 * Anything else (absolute paths, drive letters, backslashes, NUL, empty segments, `..` climbing
 * out) is a FormatError CORRUPT, raised before any read or delete: a damaged or crafted _metadata
 * must not make a restore read, or retention delete, another job's files.
 */

const CHECKPOINT_DIR = /^chk-(0|[1-9][0-9]*)$/;
/** The folders next to chk-<n>/ that a checkpoint may reference (checkpoint-storage.ts names them). */
const JOB_SHARED_FOLDERS = ['shared', 'taskowned'] as const;

/** The store-relative folders a snapshot's files may lie in (each without a trailing "/"). */
export function snapshotFolders(snapshotDir: string): string[] {
  const segments = snapshotDir.split('/');
  if (!CHECKPOINT_DIR.test(segments[segments.length - 1])) return [snapshotDir];
  const job = segments.slice(0, -1);
  return [snapshotDir, ...JOB_SHARED_FOLDERS.map((f) => [...job, f].join('/'))];
}

/**
 * Resolves a handle path (relative to `snapshotDir`, the store-relative directory of the
 * snapshot's _metadata) to a store name inside the snapshot, or throws FormatError CORRUPT.
 * `.` segments are ignored and `..` steps up, lexically; the result must lie strictly inside one
 * of snapshotFolders(snapshotDir).
 */
export function resolveHandlePath(snapshotDir: string, path: string): string {
  if (
    typeof path !== 'string' ||
    path.length === 0 ||
    path.startsWith('/') ||
    /^[a-zA-Z]:/.test(path) ||
    path.includes('\\') ||
    path.includes('\0')
  ) {
    throw refused(snapshotDir, path, 'is not a relative posix path');
  }
  const out = snapshotDir === '' ? [] : snapshotDir.split('/');
  for (const segment of path.split('/')) {
    if (segment === '') throw refused(snapshotDir, path, 'has an empty segment');
    if (segment === '.') continue;
    if (segment === '..') {
      if (out.length === 0) throw refused(snapshotDir, path, 'climbs above the storage root');
      out.pop();
      continue;
    }
    out.push(segment);
  }
  const name = out.join('/');
  if (!snapshotFolders(snapshotDir).some((folder) => name.startsWith(`${folder}/`))) {
    throw refused(snapshotDir, path, `resolves to ${name}, outside the snapshot`);
  }
  return name;
}

function refused(snapshotDir: string, path: unknown, problem: string): FormatError {
  const allowed = snapshotFolders(snapshotDir)
    .map((f) => `${f}/`)
    .join(', ');
  return new FormatError(
    'CORRUPT',
    `state file path ${JSON.stringify(path)} in the snapshot at ${snapshotDir} ${problem}; a snapshot may reference only files under ${allowed}. ` +
      'Refusing to read or delete it: the _metadata is damaged or crafted. Restore from another checkpoint.',
  );
}
