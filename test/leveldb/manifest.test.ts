import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crc32c, ManifestParseError, ManifestState, readManifest } from '../../backends/leveldb/manifest.js';
import { createNativeCheckpoint, ManifestTracker } from '../../backends/leveldb/native-checkpoint.js';

/**
 * LevelDB's MANIFEST grows with every flush and compaction while the database is open. A
 * checkpoint writes the current version as one edit instead of copying it, and reads it
 * incrementally. LevelDB itself must accept what we write: it checks the record crcs when it
 * opens the checkpoint.
 */

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'streamstate-manifest-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

type Db = ClassicLevel<Buffer, Buffer>;
const open = async (dir: string, opts: { writeBufferSize?: number; maxFileSize?: number } = {}): Promise<Db> => {
  const db = new ClassicLevel<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer', ...opts });
  await db.open();
  return db;
};
const key = (i: number): Buffer => Buffer.from(`key-${String(i).padStart(7, '0')}`);
const value = (i: number, round: number): Buffer => Buffer.from(`value-${i}-${round}-${'x'.repeat(i % 40)}`);
const manifestOf = async (dir: string): Promise<Buffer> =>
  readFile(join(dir, (await readFile(join(dir, 'CURRENT'), 'utf8')).trim()));

/** Rounds of overwrites, each flushed and compacted: many version edits over few live tables. */
async function churn(db: Db, keys: number, rounds: number, from = 0): Promise<void> {
  for (let r = from; r < from + rounds; r++) {
    const b = db.batch();
    for (let i = 0; i < keys; i++) b.put(key(i), value(i, r));
    await b.write();
    await db.compactRange(key(0), key(keys));
  }
}

async function expectContents(dir: string, keys: number, round: number): Promise<void> {
  const db = await open(dir);
  try {
    for (let i = 0; i < keys; i++) expect(db.getSync(key(i))?.toString()).toBe(value(i, round).toString());
  } finally {
    await db.close();
  }
}

describe('LevelDB MANIFEST in checkpoints', () => {
  it('crc32c matches the published check value', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(Buffer.from('6789'), crc32c(Buffer.from('12345')))).toBe(0xe3069283);
  });

  it('a checkpoint writes the current version as one edit: LevelDB opens it, and it stays small while the MANIFEST grows', async () => {
    const dir = join(root, 'churn');
    const db = await open(dir, { writeBufferSize: 64 * 1024 });
    const tracker = new ManifestTracker();
    const sizes: number[] = [];
    try {
      for (let c = 1; c <= 4; c++) {
        await churn(db, 500, 60, c * 100);
        const target = join(root, `churn-chk-${c}`);
        const chk = await createNativeCheckpoint(dir, target, tracker);
        const manifestName = chk.privateFiles.find((f) => f.startsWith('MANIFEST-')) as string;
        const written = (await stat(join(target, manifestName))).size;
        const live = await manifestOf(dir);
        sizes.push(written);
        // The same version as LevelDB's own (whole) MANIFEST, in a fraction of the bytes.
        const mine = readManifest(await readFile(join(target, manifestName)));
        const theirs = readManifest(live);
        expect(mine.tables).toEqual(theirs.tables);
        expect([mine.logNumber, mine.prevLogNumber, mine.nextFileNumber, mine.lastSequence]).toEqual([
          theirs.logNumber,
          theirs.prevLogNumber,
          theirs.nextFileNumber,
          theirs.lastSequence,
        ]);
        expect(chk.tables.map((t) => t.name).sort()).toEqual(
          (await readdir(target)).filter((f) => f.endsWith('.ldb')).sort(),
        );
        expect(written).toBeLessThan(live.length / 10);
        await expectContents(target, 500, c * 100 + 59);
      }
      // Bounded: the live MANIFEST grew with every round; ours did not.
      expect(Math.max(...sizes)).toBeLessThan(4 * Math.min(...sizes) + 1024);
    } finally {
      await db.close();
    }
  });

  it('a version whose one edit spans several 32 KiB log blocks (long keys, many tables) opens in LevelDB', async () => {
    const dir = join(root, 'many-tables');
    const db = await open(dir, { writeBufferSize: 64 * 1024, maxFileSize: 16 * 1024 });
    // 1 KB keys: each table's smallest and largest key make its entry in the edit about 2 KB.
    const longKey = (i: number): Buffer => Buffer.concat([key(i), Buffer.alloc(1000, 0x6b)]);
    try {
      // Small batches: memtable flushes make level-0 tables, whose compaction splits at maxFileSize.
      for (let s = 0; s < 6000; s += 100) {
        const b = db.batch();
        for (let i = s; i < s + 100; i++) b.put(longKey(i), value(i, 1));
        await b.write();
      }
      await db.compactRange(longKey(0), longKey(6000));
      const target = join(root, 'many-tables-chk');
      const chk = await createNativeCheckpoint(dir, target);
      expect(chk.tables.length).toBeGreaterThan(40);
      const manifestName = chk.privateFiles.find((f) => f.startsWith('MANIFEST-')) as string;
      expect((await stat(join(target, manifestName))).size).toBeGreaterThan(2 * 32 * 1024);
      const copy = await open(target);
      try {
        for (let i = 0; i < 6000; i += 7) expect(copy.getSync(longKey(i))?.toString()).toBe(value(i, 1).toString());
      } finally {
        await copy.close();
      }
    } finally {
      await db.close();
    }
  });

  it('reading a MANIFEST in pieces (torn tails included) gives the version of reading it whole', async () => {
    const dir = join(root, 'pieces');
    const db = await open(dir, { writeBufferSize: 64 * 1024 });
    try {
      await churn(db, 300, 40);
    } finally {
      await db.close();
    }
    const whole = await manifestOf(dir);
    const expected = readManifest(whole);
    await fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: whole.length }), { maxLength: 6 }), (cuts) => {
        const state = new ManifestState();
        for (const cut of [...cuts].sort((a, b) => a - b)) {
          if (cut <= state.consumed) continue;
          try {
            state.feed(whole.subarray(state.consumed, cut));
          } catch (err) {
            // A cut inside a record: everything before it was applied.
            expect(err).toBeInstanceOf(ManifestParseError);
          }
        }
        state.feed(whole.subarray(state.consumed));
        expect(state.consumed).toBe(whole.length);
        expect(state.tables).toEqual(expected.tables);
        expect(state.lastSequence).toBe(expected.lastSequence);
      }),
      { numRuns: 100 },
    );
  });
});
