import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { openRawDb, type RawDb } from './raw-db.js';

/**
 * A LevelDB native checkpoint does its file work in worker tasks, not in awaited fs calls on the
 * main thread: each of those waited for a turn of the event loop, and a processing loop that
 * yields rarely made the link step of a 1 GB checkpoint take seconds. With the MANIFEST already
 * read once, one task reads CURRENT and the MANIFEST's tail, one links, copies and writes the rest.
 */
const counts = vi.hoisted(() => ({ on: false, fsCalls: [] as string[], tasks: 0 }));
vi.mock('node:fs/promises', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs/promises')>();
  const counted = Object.fromEntries(
    Object.entries(fs).map(([name, v]) => [
      name,
      typeof v === 'function'
        ? (...args: unknown[]) => {
            if (counts.on) counts.fsCalls.push(name);
            return (v as (...a: unknown[]) => unknown)(...args);
          }
        : v,
    ]),
  );
  return { ...counted, default: counted };
});
vi.mock('../../src/storage/file-transfer.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/storage/file-transfer.js')>();
  const fileSteps = ((list) => {
    if (counts.on) counts.tasks++;
    return real.fileSteps(list);
  }) as typeof real.fileSteps;
  return { ...real, fileSteps };
});

const { createNativeCheckpoint, ManifestTracker } = await import('../../backends/leveldb/native-checkpoint.js');

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'streamstate-native-tasks-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function put(db: RawDb, from: number, to: number, round: number): Promise<void> {
  const b = db.batch();
  for (let i = from; i < to; i++) b.put(`key-${i}`, `value-${i}-${round}`);
  await b.write();
}

describe('LevelDB native checkpoint: file work in worker tasks', () => {
  it('with the MANIFEST known: two worker tasks, no fs call on the main thread, and every write kept', async () => {
    const dir = join(root, 'db');
    const db = await openRawDb(dir);
    try {
      const tracker = new ManifestTracker();
      await put(db, 0, 300, 1);
      await db.compactRange('key-', 'key-~'); // a table to link
      await createNativeCheckpoint(dir, join(root, 'chk-1'), tracker);
      await put(db, 200, 400, 2); // in the memtable and its log only
      counts.on = true;
      const chk = await createNativeCheckpoint(dir, join(root, 'chk-2'), tracker);
      counts.on = false;
      expect(counts.fsCalls).toEqual([]);
      expect(counts.tasks).toBe(2);
      expect(chk.tables.length).toBeGreaterThan(0);
      expect(chk.privateFiles.some((f) => f.endsWith('.log'))).toBe(true);
      const copy = await openRawDb(chk.dir);
      try {
        for (let i = 0; i < 400; i++)
          expect(copy.getSync(`key-${i}`), `key-${i}`).toBe(`value-${i}-${i < 200 ? 1 : 2}`);
      } finally {
        await copy.close();
      }
    } finally {
      counts.on = false;
      await db.close();
    }
  });
});
