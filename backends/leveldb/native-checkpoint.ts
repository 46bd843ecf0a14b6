import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SnapshotError } from '../../src/errors.js';
import {
  type FileStep,
  type FileStepsResult,
  fileSteps,
  type ReadStepResult,
  TransferFailure,
} from '../../src/storage/file-transfer.js';
import { ManifestParseError, ManifestState, tableFileName } from './manifest.js';

/**
 * A LevelDB native checkpoint: the table files of the current version hard-linked into a local
 * folder, plus the MANIFEST of that version (written as one edit: LevelDB's own MANIFEST grows
 * with every compaction, see manifest.ts), CURRENT and copies of the live write-ahead log(s). Table files are
 * immutable, so a link is a consistent copy that costs nothing; LevelDB deleting the original
 * later leaves the link intact. The log holds what is still in the memtable; copying it (nothing
 * writes during the synchronous part) avoids forcing a memtable flush, which can wait hundreds of
 * milliseconds behind a background compaction. A restore replays it.
 *
 * Race guard: background compactions may append to the MANIFEST and delete tables while we
 * work. We parse the MANIFEST we read (exactly the live files, never a half-written compaction
 * output) and keep that version: its tables, once linked, cannot change, so a later compaction is
 * harmless and a table deleted before its link (ENOENT) starts the attempt over. The logs are the
 * only other hazard: a memtable flush LevelDB started earlier may finish meanwhile and delete the
 * log it emptied, which the version still needs. LevelDB deletes a log only after a MANIFEST edit
 * moved the log number past it, and the version's own log number (the oldest log it needs) names a
 * file that existed when we read it; so if that log is among our copies, every log the version
 * needs is (no write reaches LevelDB during the checkpoint, so no newer log is switched out), and
 * if it is not, the attempt starts over. CURRENT is compared before and after.
 */
export interface NativeCheckpoint {
  readonly dir: string;
  /** Table files (local names) with their sizes. */
  readonly tables: readonly { readonly name: string; readonly size: number }[];
  /** MANIFEST-xxxxxx, CURRENT and the live *.log files. */
  readonly privateFiles: readonly string[];
}

/**
 * The parsed MANIFEST of one database, kept between its checkpoints: each reads only what LevelDB
 * appended since the last (the file grows while the database is open; LevelDB starts a new one
 * only when it opens the database).
 */
export class ManifestTracker {
  private name: string | null = null;
  private state = new ManifestState();

  /**
   * Resets `target` to an empty directory, reads CURRENT and the MANIFEST it names up to its end:
   * one task on the file-transfer worker (one event-loop turn, however busy the loop is), which
   * reads the tail of the MANIFEST read last time right after CURRENT; a second task only when
   * CURRENT names another one (LevelDB starts a new MANIFEST only when it opens the database).
   * Returns the MANIFEST's name, the version at its end, and the file size it was read up to.
   */
  async read(dbDir: string, target: string): Promise<{ name: string; state: ManifestState; size: number }> {
    const known = this.name;
    const [, current, guess] = await steps([
      { op: 'reset-dir', path: target },
      { op: 'read', path: join(dbDir, 'CURRENT') },
      ...(known === null
        ? []
        : [{ op: 'read', path: join(dbDir, known), from: this.state.consumed, missingOk: true } as const]),
    ]);
    const name = manifestNameIn(current);
    const from = known === name ? this.state.consumed : 0;
    const tail =
      known === name && guess !== undefined
        ? guess
        : (await steps([{ op: 'read', path: join(dbDir, name), from }] as const))[0];
    if (tail === null || tail.size < from) {
      // Gone, or shorter than what was parsed: not the file we know; the next attempt reads it whole.
      this.name = null;
      throw new ManifestParseError(`${name} is gone or shorter than the ${from} bytes read before`);
    }
    if (this.name !== name) {
      this.name = name;
      this.state = new ManifestState();
    }
    try {
      this.state.feed(Buffer.from(tail.bytes.buffer, tail.bytes.byteOffset, tail.bytes.byteLength));
    } catch (err) {
      // A torn tail (LevelDB is appending) or damage: the next attempt reads the whole file again.
      this.name = null;
      throw err;
    }
    return { name, state: this.state, size: tail.size };
  }
}

/** fileSteps with failures as fs errors (ENOENT: a file vanished, the caller starts over). */
async function steps<const S extends readonly FileStep[]>(list: S): Promise<FileStepsResult<S>> {
  try {
    return await fileSteps(list);
  } catch (err) {
    if (!(err instanceof TransferFailure)) throw err;
    throw Object.assign(new Error(err.message), { code: err.code });
  }
}

function manifestNameIn(current: ReadStepResult | null | undefined): string {
  const text = current === null || current === undefined ? '' : Buffer.from(current.bytes).toString('utf8').trim();
  if (!/^MANIFEST-\d+$/.test(text)) throw new ManifestParseError(`CURRENT names ${JSON.stringify(text)}`);
  return text;
}

const MAX_ATTEMPTS = 20;

/** The logs a version needs (its log number and, when set, the previous one) that are not in `copied`. */
export function missingLogs(copied: readonly string[], logNumber: number, prevLogNumber: number): number[] {
  const have = new Set(copied.map((f) => Number.parseInt(f, 10)));
  return [logNumber, prevLogNumber].filter((n) => n !== 0 && !have.has(n));
}

/** Links the live files of the database in `dbDir` into `target` (created; must not exist). */
export async function createNativeCheckpoint(
  dbDir: string,
  target: string,
  manifests = new ManifestTracker(),
): Promise<NativeCheckpoint> {
  let lastError: unknown = null;
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    try {
      const { name: manifestName, state } = await manifests.read(dbDir, target);
      // The version to keep, taken now: the tracker's state moves on at the next read.
      const manifest = state.encode();
      const { logNumber, prevLogNumber } = state;
      const live = state.tables;
      // The rest in one task on a worker thread (one event-loop turn, where a link and a stat per
      // table, the listing, each copy and each write waited for a turn of their own): link every
      // table (reading its size), copy the logs the version needs, write the version's MANIFEST and
      // CURRENT, then read CURRENT again.
      const [tables, logs, , , current] = await steps([
        {
          op: 'link',
          sourceDir: dbDir,
          targetDir: target,
          entries: live.map((t) => [tableFileName(t.number, 'ldb'), tableFileName(t.number, 'sst')]),
        },
        {
          op: 'copy-numbered',
          sourceDir: dbDir,
          targetDir: target,
          suffix: '.log',
          atLeast: logNumber,
          also: prevLogNumber === 0 ? [] : [prevLogNumber],
        },
        { op: 'write', path: join(target, manifestName), bytes: manifest },
        { op: 'write', path: join(target, 'CURRENT'), bytes: Buffer.from(`${manifestName}\n`) },
        { op: 'read', path: join(dbDir, 'CURRENT') },
      ]);
      for (const [i, t] of tables.entries()) {
        if (t.size !== live[i].size)
          throw new ManifestParseError(`table ${t.name} has ${t.size} bytes, the MANIFEST says ${live[i].size}`);
      }
      const missing = missingLogs(logs, logNumber, prevLogNumber);
      if (missing.length > 0) {
        // A flush finished and deleted it before the listing: its writes are in a table the kept
        // version does not list. Start over from the MANIFEST that records that table.
        lastError = new Error(`a memtable flush deleted log ${missing.join(', ')} before it was copied`);
        continue;
      }
      // CURRENT changes only when LevelDB opens the database (a new MANIFEST): cheap to confirm.
      if (manifestNameIn(current) !== manifestName) {
        lastError = new Error('the database switched to a new MANIFEST while linking');
        continue;
      }
      return { dir: target, tables, privateFiles: [manifestName, 'CURRENT', ...logs] };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (!(err instanceof ManifestParseError) && code !== 'ENOENT') {
        await rm(target, { recursive: true, force: true });
        throw new SnapshotError(
          'SNAPSHOT_FAILED',
          `cannot link the LevelDB files of ${dbDir} into ${target}: ${(err as Error).message}`,
          { cause: err },
        );
      }
      lastError = err;
    }
  }
  await rm(target, { recursive: true, force: true });
  throw new SnapshotError(
    'SNAPSHOT_FAILED',
    `could not take a consistent LevelDB checkpoint of ${dbDir} in ${MAX_ATTEMPTS} attempts (${(lastError as Error)?.message}). ` +
      'Background compactions kept changing the files; retry the checkpoint.',
    { cause: lastError },
  );
}
