import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runCase } from '../support/corruption/campaign.js';
import {
  buildFamily,
  fixtureFor,
  newCoordinator,
  storageFor,
  type FamilyFixture,
} from '../support/corruption/fixtures.js';
import { filesystem } from '../../backends/filesystem/index.js';
import { expectRejectsCode, expectThrowsCode } from '../support/errors.js';
import { crc32 } from 'node:zlib';
import { HeapStateBackend } from '../../backends/heap/index.js';
import { decodeMetadata, encodeMetadata } from '../../src/checkpoint/metadata-codec.js';
import { decodeSegment, encodeSegment } from '../../src/changelog/segment-format.js';
import { cli } from '../cli/support.js';
import { OPERATOR, writeCheckpoints } from '../savepoint/support/job.js';

/**
 * Bugs the corruption suite found, pinned down one by one. The fixture: two jobs (A, B) with
 * checkpoints 1 and 2 each, all state inline in _metadata (so a _metadata alone is a whole snapshot).
 */
describe('corruption suite regressions', () => {
  let fam: FamilyFixture;
  let dir: string;
  let root: string;
  beforeAll(async () => {
    fam = await buildFamily('inline');
  }, 60_000);
  afterAll(async () => {
    await fam?.cleanup();
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'streamstate-corruption-regression-'));
    root = join(dir, 'store');
    await cp(fam.root, root, { recursive: true });
    return () => rm(dir, { recursive: true, force: true });
  });

  const metadataOf = (pointer: string): string => join(root, pointer, '_metadata');
  const [chk1, chk2] = ['chk-1', 'chk-2'];

  it('a _metadata copied over from an earlier checkpoint of the job is refused (it restored that checkpoint silently)', async () => {
    const a = fam.a.jobId;
    await writeFile(metadataOf(`${a}/${chk2}`), await readFile(metadataOf(`${a}/${chk1}`)));
    const err = await expectRejectsCode(storageFor('inline', root).resolve(`${a}/${chk2}`), 'CORRUPT');
    expect(err.message).toContain('checkpoint 1');
  });

  it('a _metadata of another job with the same checkpoint id is refused', async () => {
    await writeFile(metadataOf(`${fam.a.jobId}/${chk2}`), await readFile(metadataOf(`${fam.b.jobId}/${chk2}`)));
    const err = await expectRejectsCode(storageFor('inline', root).resolve(`${fam.a.jobId}/${chk2}`), 'CORRUPT');
    expect(err.message).toContain(fam.b.jobId);
  });

  it('restoring the latest checkpoint fails when its _metadata is damaged instead of falling back to checkpoint 1', async () => {
    const path = metadataOf(`${fam.a.jobId}/${chk2}`);
    const bytes = await readFile(path);
    bytes[bytes.length - 10] ^= 0x04;
    await writeFile(path, bytes);
    const storage = storageFor('inline', root);
    const coordinator = newCoordinator(storage, filesystem({ checkpointDir: root }), fam.a.jobId, 2);
    const err = await expectRejectsCode(coordinator.restore(), 'CHECKSUM_MISMATCH');
    expect(err.message).toContain('latest checkpoint 2');
    // An explicit pointer to the older checkpoint still works.
    const plan = await newCoordinator(storage, filesystem({ checkpointDir: root }), fam.a.jobId, 2).restore(
      `${fam.a.jobId}/${chk1}`,
    );
    expect(plan?.checkpointId).toBe(1);
  });

  it('restoring the latest checkpoint fails when the only checkpoint is damaged instead of starting without state', async () => {
    const job = fam.a.jobId;
    await rm(join(root, job, chk2), { recursive: true });
    const path = metadataOf(`${job}/${chk1}`);
    const bytes = await readFile(path);
    bytes.writeUInt16BE(9, 4); // a format version from the future
    await writeFile(path, bytes);
    const coordinator = newCoordinator(storageFor('inline', root), filesystem({ checkpointDir: root }), job, 2);
    await expectRejectsCode(coordinator.restore(), 'UNSUPPORTED_VERSION');
  });

  it('a checkpoint that never completed (no _metadata) is still skipped: restore falls back to the previous one', async () => {
    await rm(metadataOf(`${fam.a.jobId}/${chk2}`));
    const coordinator = newCoordinator(storageFor('inline', root), filesystem({ checkpointDir: root }), fam.a.jobId, 2);
    expect((await coordinator.restore())?.checkpointId).toBe(1);
  });

  it('a seed replays the same damage and the same verdict (failures print it)', async () => {
    const fixture = fixtureFor('metadata', fam);
    for (const seed of [1, 0xdeadbeef]) {
      const [a, b] = [await runCase(fixture, seed), await runCase(fixture, seed)];
      expect({ ...b, ms: 0 }).toEqual({ ...a, ms: 0 });
    }
    const forced = await runCase(fixture, 7, { only: 'delete' });
    expect(forced.description).toContain('deleted');
  });
});

/**
 * Issue 12 (Deliver 9): a damaged version field next to a damaged checksum is corruption, not
 * "upgrade streamstate". The checksum is verified before the version is believed wherever it
 * covers the version (segments, key-groups files through their handle's crc32) or the body next
 * to it (_metadata); an intact file of a newer version still says UNSUPPORTED_VERSION.
 */
describe('a bad version field with a bad checksum is reported as corruption', () => {
  let dir: string;
  let jobDir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'streamstate-bad-version-'));
    jobDir = await writeCheckpoints(new HeapStateBackend({ name: 'filesystem' }), {
      root: join(dir, 'pristine'),
      jobId: 'job-v',
      count: 1,
      numRetained: 1,
    });
  }, 60_000);
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  let root: string;
  let chk: string;
  beforeEach(async () => {
    root = await mkdtemp(join(dir, 'case-'));
    await cp(join(dir, 'pristine'), root, { recursive: true });
    chk = join(root, 'job-v', (await readdir(jobDir)).find((n) => n.startsWith('chk-'))!);
  });

  it('_metadata: version 9 and a damaged body → CHECKSUM_MISMATCH (library and CLI exit 4); version 9 alone → UNSUPPORTED_VERSION', async () => {
    const file = join(chk, '_metadata');
    const pristine = await readFile(file);
    const newer = Buffer.from(pristine);
    newer.writeUInt16BE(9, 4);
    expectThrowsCode(() => decodeMetadata(newer), 'UNSUPPORTED_VERSION');
    const damaged = Buffer.from(newer);
    damaged[damaged.length - 10] ^= 0x04;
    expectThrowsCode(() => decodeMetadata(damaged), 'CHECKSUM_MISMATCH');
    await writeFile(file, damaged);
    const r = await cli(['verify', chk]);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain('CHECKSUM_MISMATCH');
    expect(r.stderr).not.toContain('upgrade');
  });

  it('key-groups file: version 9 in a file whose crc32 no longer matches its handle → CHECKSUM_MISMATCH in verify and dump; with the handle matching → UNSUPPORTED_VERSION', async () => {
    const metadata = decodeMetadata(await readFile(join(chk, '_metadata')));
    const keyed = metadata.operators[0].subtasks[0].keyed[0] as {
      type: string;
      stream: { type: string; path: string; crc32: number };
    };
    expect(keyed.stream.type).toBe('file');
    const dataFile = join(chk, keyed.stream.path);
    const bytes = await readFile(dataFile);
    bytes.writeUInt16BE(9, 4);
    await writeFile(dataFile, bytes);
    for (const args of [
      ['verify', chk],
      ['dump', chk, '--operator', OPERATOR],
    ]) {
      const r = await cli(args);
      expect(r.code, `${args[0]}: ${r.stdout}${r.stderr}`).toBe(4);
      expect(`${r.stdout}${r.stderr}`).toContain('CHECKSUM_MISMATCH');
    }
    // The same bytes recorded with their checksum: an intact file of a newer format.
    keyed.stream.crc32 = crc32(bytes);
    await writeFile(join(chk, '_metadata'), encodeMetadata(metadata));
    const r = await cli(['verify', chk]);
    expect(r.code, r.stdout).toBe(6);
    expect(`${r.stdout}${r.stderr}`).toContain('UNSUPPORTED_VERSION');
  });

  it('changelog segment: version 9 → CHECKSUM_MISMATCH (its crc32 covers the version); a newer segment written whole → UNSUPPORTED_VERSION', () => {
    const header = {
      jobId: 'j',
      operatorId: 'o',
      subtaskIndex: 0,
      logId: 'l',
      backend: 'b',
      maxParallelism: 128,
      keyGroupRange: { start: 0, end: 127 },
      fromSeq: 1,
      toSeq: 1,
      records: 1,
    };
    const expected = { jobId: 'j', operatorId: 'o', subtaskIndex: 0, logId: 'l', backend: 'b', fromSeq: 1, toSeq: 1 };
    const segment = encodeSegment(header, Buffer.from([1, 2, 3]));
    expect(decodeSegment(segment, expected, 'seg').body).toEqual(Buffer.from([1, 2, 3]));
    const damaged = Buffer.from(segment);
    damaged.writeUInt16BE(9, 4);
    expectThrowsCode(() => decodeSegment(damaged, expected, 'seg'), 'CHECKSUM_MISMATCH');
    const crcAt = damaged.length - 8;
    damaged.writeUInt32BE(crc32(damaged.subarray(0, crcAt)), crcAt);
    expectThrowsCode(() => decodeSegment(damaged, expected, 'seg'), 'UNSUPPORTED_VERSION');
  });
});
