import { lstat, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLevelDb } from '../../backends/leveldb/open-db.js';

/** LevelDB's info log grows until the database is reopened: the backend keeps it off unless asked. */

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'streamstate-open-db-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function workload(dir: string, infoLog: boolean): Promise<void> {
  const db = await openLevelDb(dir, { writeBufferSize: 64 * 1024, infoLog });
  try {
    for (let r = 0; r < 5; r++) {
      const b = db.batch();
      for (let i = 0; i < 2000; i++) b.put(Buffer.from(`k${i}`), Buffer.from(`v${r}-${i}`));
      await b.write();
      await db.compactRange(Buffer.from('k'), Buffer.from('l'));
    }
    expect(db.getSync(Buffer.from('k7'))?.toString()).toBe('v4-7');
  } finally {
    await db.close();
  }
}

const isDir = async (p: string): Promise<boolean | null> => (await lstat(p).catch(() => null))?.isDirectory() ?? null;

describe('LevelDB info log', () => {
  it('is off by default: compactions write no LOG file, and the database opens again either way', async () => {
    const dir = join(root, 'off');
    await workload(dir, false);
    expect(await isDir(join(dir, 'LOG'))).toBe(true);
    expect(await readdir(join(dir, 'LOG'))).toEqual([]);
    // Turned on for a debugging run: LevelDB logs to LOG again.
    await workload(dir, true);
    expect(await isDir(join(dir, 'LOG'))).toBe(false);
    expect((await readFile(join(dir, 'LOG'), 'utf8')).length).toBeGreaterThan(0);
    // And off again: the log files of that run are gone, the data is not.
    await workload(dir, false);
    expect(await isDir(join(dir, 'LOG'))).toBe(true);
    expect(await isDir(join(dir, 'LOG.old'))).toBe(true);
  });

  it('does not create a database that must exist', async () => {
    const missing = join(root, 'missing');
    await expect(openLevelDb(missing, { createIfMissing: false })).rejects.toThrow(/does not exist/);
    expect(await isDir(join(missing, 'LOG.old'))).toBeNull();
  });
});
