import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import { ForwardingBlobStore } from '../../src/storage/forwarding-blob-store.js';
import { LocalBlobStore } from '../../src/storage/local-blob-store.js';

/** Every regular file under `dir`: relative path → "size:mtime". Missing directory: empty. */
export async function listTree(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        const s = await stat(p).catch(() => null);
        if (s !== null) out.set(relative(dir, p), `${s.size}:${s.mtimeMs}`);
      }
    }
  };
  await walk(dir);
  return out;
}

/**
 * Files of another job next to ours (a checkpoint directory, a shared file, a loose user file):
 * nothing this job does may touch them. `check` returns what changed.
 */
export class Sentinel {
  private constructor(
    private readonly dir: string,
    private readonly files: ReadonlyMap<string, string>,
  ) {}

  static async plant(storageDir: string): Promise<Sentinel> {
    const files = new Map<string, string>([
      ['other-job/chk-1/_metadata', 'not really metadata'],
      ['other-job/shared/000005.ldb', 'a table file of another job'],
      ['other-job/chk-2/data', 'another job data'],
      ['notes.txt', 'a user file in the storage root'],
    ]);
    for (const [name, body] of files) {
      await mkdir(join(storageDir, name, '..'), { recursive: true });
      await writeFile(join(storageDir, name), body);
    }
    return new Sentinel(storageDir, files);
  }

  async check(): Promise<string[]> {
    const changed: string[] = [];
    for (const [name, body] of this.files) {
      const got = await readFile(join(this.dir, name), 'utf8').catch(() => null);
      if (got !== body) changed.push(`${name} ${got === null ? 'deleted' : 'changed'}`);
    }
    const now = await listTree(join(this.dir, 'other-job'));
    for (const name of now.keys()) if (!this.files.has(`other-job/${name}`)) changed.push(`other-job/${name} created`);
    return changed;
  }
}

/** A store for the checks: reads pass through, any write or deletion fails the test (the checks must not change storage). */
export class ReadOnlyBlobStore extends ForwardingBlobStore {
  private refuse(what: string): never {
    throw new Error(`the lifecycle check tried to ${what} in the job's storage; checks must be read-only`);
  }
  override put(name: string): Promise<void> {
    return this.refuse(`write ${name}`);
  }
  override putStream(name: string): Promise<number> {
    return this.refuse(`write ${name}`);
  }
  override putAtomic(name: string): Promise<void> {
    return this.refuse(`write ${name}`);
  }
  override delete(names: readonly string[]): Promise<void> {
    return this.refuse(`delete ${names.join(', ')}`);
  }
}

/** Checkpoint storage over `dir` that can only read. */
export function readOnlyCheckpointStorage(dir: string): CheckpointStorage {
  return new BlobCheckpointStorage(new ReadOnlyBlobStore(new LocalBlobStore(dir)), { inlineThreshold: 0 });
}
