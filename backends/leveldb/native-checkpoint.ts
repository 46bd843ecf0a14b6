import { copyFile, link, mkdir, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SnapshotError } from '../../src/errors.js';
import { mapLimited } from '../../src/util/concurrency.js';
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
 * Race guard: a background compaction may append to the MANIFEST and delete tables while we link.
 * We parse the MANIFEST we read (exactly the live files, never a half-written compaction output),
 * link them, and compare CURRENT and the MANIFEST size before and after; on any change or a vanished
 * file we start over.
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

  /** The version at the MANIFEST's current end, and the file size it was read up to. */
  async read(dbDir: string, manifestName: string): Promise<{ state: ManifestState; size: number }> {
    const fh = await open(join(dbDir, manifestName), 'r');
    try {
      const size = (await fh.stat()).size;
      if (this.name !== manifestName || size < this.state.consumed) {
        this.name = manifestName;
        this.state = new ManifestState();
      }
      const tail = Buffer.allocUnsafe(size - this.state.consumed);
      for (let got = 0; got < tail.length; ) {
        const { bytesRead } = await fh.read(tail, got, tail.length - got, this.state.consumed + got);
        if (bytesRead === 0)
          throw new ManifestParseError(`${manifestName} ended at ${this.state.consumed + got} bytes while being read`);
        got += bytesRead;
      }
      try {
        this.state.feed(tail);
      } catch (err) {
        // A torn tail (LevelDB is appending) or damage: the next attempt reads the whole file again.
        this.name = null;
        throw err;
      }
      return { state: this.state, size };
    } finally {
      await fh.close();
    }
  }
}

const MAX_ATTEMPTS = 20;
const LINK_CONCURRENCY = 32;

async function currentManifest(dbDir: string): Promise<string> {
  const current = (await readFile(join(dbDir, 'CURRENT'), 'utf8')).trim();
  if (!/^MANIFEST-\d+$/.test(current)) throw new ManifestParseError(`CURRENT names ${JSON.stringify(current)}`);
  return current;
}

async function linkTable(dbDir: string, number: number, target: string): Promise<string> {
  for (const suffix of ['ldb', 'sst'] as const) {
    const name = tableFileName(number, suffix);
    try {
      await link(join(dbDir, name), join(target, name));
      return name;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  throw Object.assign(new Error(`table file ${tableFileName(number)} vanished`), { code: 'ENOENT' });
}

/** Links the live files of the database in `dbDir` into `target` (created; must not exist). */
export async function createNativeCheckpoint(
  dbDir: string,
  target: string,
  manifests = new ManifestTracker(),
): Promise<NativeCheckpoint> {
  let lastError: unknown = null;
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    await rm(target, { recursive: true, force: true });
    await mkdir(target, { recursive: true });
    try {
      const manifestName = await currentManifest(dbDir);
      const { state, size: manifestSize } = await manifests.read(dbDir, manifestName);
      const live = state.tables;
      // Linking is one awaited file-system call per table: run them in parallel so that the
      // synchronous part does not grow with the number of tables (hundreds at 1 GB of state).
      const tables = await mapLimited(live, LINK_CONCURRENCY, async (t) => {
        const name = await linkTable(dbDir, t.number, target);
        const size = (await stat(join(target, name))).size;
        if (size !== t.size)
          throw new ManifestParseError(`table ${name} has ${size} bytes, the MANIFEST says ${t.size}`);
        return { name, size };
      });
      const logs: string[] = [];
      for (const f of await readdir(dbDir)) {
        const m = /^(\d+)\.log$/.exec(f);
        if (m === null) continue;
        const n = Number(m[1]);
        if (n >= state.logNumber || (state.prevLogNumber !== 0 && n === state.prevLogNumber)) {
          await copyFile(join(dbDir, f), join(target, f));
          logs.push(f);
        }
      }
      await writeFile(join(target, manifestName), state.encode());
      await writeFile(join(target, 'CURRENT'), `${manifestName}\n`);
      const after = await currentManifest(dbDir);
      const afterSize = (await stat(join(dbDir, after))).size;
      if (after !== manifestName || afterSize !== manifestSize) {
        lastError = new Error('a compaction changed the MANIFEST while linking');
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
