import { copyFile, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SnapshotError } from '../../src/errors.js';
import {
  type FileStep,
  fileSteps,
  linkFiles,
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
   * Resets `target` to an empty directory, reads CURRENT and then the MANIFEST it names up to its
   * end: two tasks on the file-transfer worker (two event-loop turns, however busy the loop is).
   * Returns the MANIFEST's name, the version at its end, and the file size it was read up to.
   */
  async read(dbDir: string, target: string): Promise<{ name: string; state: ManifestState; size: number }> {
    const [, current] = await steps([
      { op: 'reset-dir', path: target },
      { op: 'read', path: join(dbDir, 'CURRENT') },
    ]);
    const name = manifestNameIn(current);
    const from = this.name === name ? this.state.consumed : 0;
    const [tail] = await steps([{ op: 'read', path: join(dbDir, name), from }]);
    if (tail === null || tail.size < from) {
      // Shorter than what was parsed: not the file we know; the next attempt reads it whole.
      this.name = null;
      throw new ManifestParseError(`${name} is shorter than the ${from} bytes read before`);
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
async function steps(list: readonly FileStep[]): Promise<(ReadStepResult | null)[]> {
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

async function currentManifest(dbDir: string): Promise<string> {
  const current = (await readFile(join(dbDir, 'CURRENT'), 'utf8')).trim();
  if (!/^MANIFEST-\d+$/.test(current)) throw new ManifestParseError(`CURRENT names ${JSON.stringify(current)}`);
  return current;
}

/** Links the given tables (by number, .ldb or else .sst) into `target` in one task; a vanished table is ENOENT. */
async function linkTables(
  dbDir: string,
  target: string,
  tables: readonly { readonly number: number }[],
): Promise<{ name: string; size: number }[]> {
  try {
    const { files } = await linkFiles({
      sourceDir: dbDir,
      targetDir: target,
      entries: tables.map((t) => [tableFileName(t.number, 'ldb'), tableFileName(t.number, 'sst')]),
    });
    return files;
  } catch (err) {
    if (!(err instanceof TransferFailure)) throw err;
    // As an fs error: ENOENT (a compaction deleted a table) makes the caller start over.
    throw Object.assign(new Error(err.message), { code: err.code });
  }
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
      // Every table linked (and its size read) in one task on a worker thread: one event-loop
      // turn for all of them (a link and a stat per table each waited for a turn, and under a busy
      // processing loop that took seconds).
      const tables = await linkTables(dbDir, target, live);
      for (const [i, t] of tables.entries()) {
        if (t.size !== live[i].size)
          throw new ManifestParseError(`table ${t.name} has ${t.size} bytes, the MANIFEST says ${live[i].size}`);
      }
      const logs: string[] = [];
      for (const f of await readdir(dbDir)) {
        const m = /^(\d+)\.log$/.exec(f);
        if (m === null) continue;
        const n = Number(m[1]);
        if (n >= logNumber || (prevLogNumber !== 0 && n === prevLogNumber)) {
          await copyFile(join(dbDir, f), join(target, f));
          logs.push(f);
        }
      }
      const missing = missingLogs(logs, logNumber, prevLogNumber);
      if (missing.length > 0) {
        // A flush finished and deleted it before the listing: its writes are in a table the kept
        // version does not list. Start over from the MANIFEST that records that table.
        lastError = new Error(`a memtable flush deleted log ${missing.join(', ')} before it was copied`);
        continue;
      }
      await writeFile(join(target, manifestName), manifest);
      await writeFile(join(target, 'CURRENT'), `${manifestName}\n`);
      // CURRENT changes only when LevelDB opens the database (a new MANIFEST): cheap to confirm.
      if ((await currentManifest(dbDir)) !== manifestName) {
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
