import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

/**
 * A memtable flush that LevelDB started before a checkpoint may finish while the checkpoint runs:
 * it writes a table, appends to the MANIFEST and deletes the log it emptied. Here it finishes in
 * the worst place, after the tables were linked and before the logs are listed (injected by making
 * the checkpoint's readdir of the database run a real flush first). The checkpoint must start over
 * rather than keep the old version without the log that held its newest writes.
 */
const flushBeforeListing = vi.hoisted(() => ({ run: null as null | (() => Promise<void>) }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs/promises')>();
  const readdir = (async (...args: Parameters<typeof fs.readdir>) => {
    const run = flushBeforeListing.run;
    if (run !== null) {
      flushBeforeListing.run = null;
      await run();
    }
    return fs.readdir(...args);
  }) as typeof fs.readdir;
  return { ...fs, readdir, default: { ...fs, readdir } };
});

const { createNativeCheckpoint } = await import('../../backends/leveldb/native-checkpoint.js');

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'streamstate-flush-race-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

type Db = ClassicLevel<string, string>;
const openDb = async (dir: string): Promise<Db> => {
  const db = new ClassicLevel<string, string>(dir);
  await db.open();
  return db;
};

describe('LevelDB native checkpoint and a memtable flush finishing during it', () => {
  it('a flush between the links and the log listing: the checkpoint still holds every write', async () => {
    const dir = join(root, 'db');
    const db = await openDb(dir);
    try {
      // Only in the memtable and its log: no table holds these yet.
      const b = db.batch();
      for (let i = 0; i < 200; i++) b.put(`key-${i}`, `value-${i}`);
      await b.write();
      let flushed = false;
      flushBeforeListing.run = async () => {
        await db.compactRange('key-', 'key-~'); // flushes the memtable: new table, new log, old log deleted
        flushed = true;
      };
      const target = join(root, 'chk');
      await createNativeCheckpoint(dir, target);
      expect(flushed).toBe(true);
      const copy = await openDb(target);
      try {
        for (let i = 0; i < 200; i++) expect(copy.getSync(`key-${i}`), `key-${i}`).toBe(`value-${i}`);
      } finally {
        await copy.close();
      }
    } finally {
      await db.close();
    }
  });
});
