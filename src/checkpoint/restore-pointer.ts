import { stat } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { locateSnapshot, type LocatedSnapshot } from '../savepoint/locate.js';
import { RestoreError, StreamStateError, isStreamStateError } from '../errors.js';
import { METADATA_FILE } from './checkpoint-storage.js';
import type { RestoreMode } from './shared-registry.js';
import type { S3Connection } from './savepoint-location.js';

/**
 * Opens a restore pointer that lies outside the job's checkpoint storage: a savepoint directory,
 * or a `chk-<n>` directory of another job (or their _metadata), as a local path or s3:// URL.
 * The store root is decided by the pointer alone (savepoint: its parent; checkpoint: above its
 * job directory), never by paths inside the _metadata (src/savepoint/locate.ts; handle paths stay
 * confined to the snapshot, handle-paths.ts).
 *
 * Only no-claim restores are possible from outside: the job never deletes or takes over files
 * that are not in its own storage.
 */
export async function locateRestorePointer(
  pointer: string,
  mode: RestoreMode,
  opts: { readonly cwd?: string; readonly s3?: S3Connection },
): Promise<LocatedSnapshot> {
  if (mode === 'claim') {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `cannot restore ${pointer} in claim mode: it lies outside this job's checkpoint storage, and a job only takes ownership of (and later deletes) ` +
        'snapshots in its own storage. Restore it in no-claim mode (the default), or copy it into the checkpoint storage first.',
    );
  }
  const expected =
    'Expected a savepoint directory (savepoint-<job6>-<hex>/ holding _metadata), a checkpoint directory (<job>/chk-<n>/ holding _metadata), or that _metadata file.';
  if (!/^s3[an]?:\/\//i.test(pointer)) {
    const abs = resolve(
      opts.cwd ?? process.cwd(),
      pointer.startsWith('file://') ? pointer.slice('file://'.length) : pointer,
    );
    const st = await stat(abs).catch(() => null);
    if (st !== null && st.isFile() && basename(abs) !== METADATA_FILE) {
      throw new RestoreError(
        'NOT_A_SNAPSHOT',
        `restore pointer ${pointer} is a file, neither a checkpoint nor a savepoint. ${expected}`,
      );
    }
  }
  try {
    return await locateSnapshot(pointer, { ...(opts.cwd !== undefined ? { cwd: opts.cwd } : {}), s3: opts.s3 ?? {} });
  } catch (err) {
    if (
      isStreamStateError(err, 'METADATA_MISSING') ||
      (isStreamStateError(err, 'INVALID_ARGUMENT') && /is an object|is a file/.test(err.message))
    ) {
      throw new RestoreError(
        'NOT_A_SNAPSHOT',
        `restore pointer ${pointer} is neither a checkpoint nor a savepoint (no _metadata there). ${expected}`,
        { cause: err },
      );
    }
    throw err;
  }
}
