import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runCase } from '../support/corruption/campaign.js';
import { buildFamily, fixtureFor, newCoordinator, storageFor, type FamilyFixture } from '../support/corruption/fixtures.js';
import { filesystem } from '../../backends/filesystem/index.js';
import { expectRejectsCode } from '../support/errors.js';

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
    const plan = await newCoordinator(storage, filesystem({ checkpointDir: root }), fam.a.jobId, 2).restore(`${fam.a.jobId}/${chk1}`);
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
