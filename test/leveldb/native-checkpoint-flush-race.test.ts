import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { FileStep } from '../../src/storage/file-transfer.js';
import { openRawDb } from './raw-db.js';

/**
 * A memtable flush that LevelDB started before a checkpoint may finish while the checkpoint runs:
 * it writes a table, appends to the MANIFEST and deletes the log it emptied. Where it finishes
 * decides what the checkpoint must do (injected by running a real flush inside the checkpoint's
 * worker task, between its links and its copy of the logs, or after that copy):
 * - before the logs are listed: the log is gone, so the checkpoint must start over rather than
 *   keep the old version without the log that held its newest writes;
 * - after the logs were copied: the copies hold those writes, so the checkpoint must not start
 *   over (the MANIFEST changing is no reason: under a compaction storm every attempt sees that,
 *   and a 1 GB database could not be checkpointed at all).
 */
const hooks = vi.hoisted(() => ({
  beforeListing: null as null | (() => Promise<void>),
  afterLogCopy: null as null | (() => Promise<void>),
  listings: 0,
}));
vi.mock('../../src/storage/file-transfer.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../src/storage/file-transfer.js')>();
  // The task that copies the logs runs as two tasks, cut before or after that step, with the hook between.
  const fileSteps = (async (list: readonly FileStep[]) => {
    const copy = list.findIndex((s) => s.op === 'copy-numbered');
    if (copy < 0) return real.fileSteps(list);
    hooks.listings++;
    const before = hooks.beforeListing;
    hooks.beforeListing = null;
    const hook = before ?? hooks.afterLogCopy;
    if (hook === null) return real.fileSteps(list);
    const cut = before !== null ? copy : copy + 1;
    const head = await real.fileSteps(list.slice(0, cut));
    await hook();
    return [...head, ...(await real.fileSteps(list.slice(cut)))];
  }) as typeof real.fileSteps;
  return { ...real, fileSteps };
});

const { createNativeCheckpoint, missingLogs } = await import('../../backends/leveldb/native-checkpoint.js');

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'streamstate-flush-race-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('LevelDB native checkpoint and a memtable flush finishing during it', () => {
  it('a flush between the links and the log listing: the checkpoint still holds every write', async () => {
    const dir = join(root, 'db');
    const db = await openRawDb(dir);
    try {
      // Only in the memtable and its log: no table holds these yet.
      const b = db.batch();
      for (let i = 0; i < 200; i++) b.put(`key-${i}`, `value-${i}`);
      await b.write();
      let flushed = false;
      hooks.beforeListing = async () => {
        await db.compactRange('key-', 'key-~'); // flushes the memtable: new table, new log, old log deleted
        flushed = true;
      };
      const target = join(root, 'chk');
      await createNativeCheckpoint(dir, target);
      expect(flushed).toBe(true);
      const copy = await openRawDb(target);
      try {
        for (let i = 0; i < 200; i++) expect(copy.getSync(`key-${i}`), `key-${i}`).toBe(`value-${i}`);
      } finally {
        await copy.close();
      }
    } finally {
      await db.close();
    }
  });

  it('flushes and compactions after the logs were copied: one attempt, every write kept', async () => {
    const dir = join(root, 'db-late');
    const db = await openRawDb(dir);
    try {
      const b = db.batch();
      for (let i = 0; i < 200; i++) b.put(`key-${i}`, `value-${i}`);
      await b.write();
      let flushes = 0;
      // After the log copies of every attempt: the MANIFEST changes each time.
      hooks.afterLogCopy = async () => {
        await db.compactRange('key-', 'key-~');
        flushes++;
      };
      hooks.listings = 0;
      const target = join(root, 'chk-late');
      try {
        await createNativeCheckpoint(dir, target);
      } finally {
        hooks.afterLogCopy = null;
      }
      expect(flushes).toBeGreaterThan(0);
      expect(hooks.listings).toBe(1);
      const copy = await openRawDb(target);
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

describe('missingLogs', () => {
  it("names the version's log and previous log when they were not copied", () => {
    expect(missingLogs(['000012.log', '000015.log'], 12, 0)).toEqual([]);
    expect(missingLogs(['000015.log'], 12, 0)).toEqual([12]);
    expect(missingLogs(['000012.log'], 12, 9)).toEqual([9]);
    expect(missingLogs([], 12, 9)).toEqual([12, 9]);
  });
});
