import { cp, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import type { FileStreamHandle } from '../../src/backend/handles.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator } from '../../src/checkpoint/coordinator.js';
import { snapshotFolders } from '../../src/checkpoint/handle-paths.js';
import type { CheckpointMetadata } from '../../src/checkpoint/metadata.js';
import { decodeMetadata, encodeMetadata } from '../../src/checkpoint/metadata-codec.js';
import { resolveHandlePath } from '../../src/checkpoint/streams.js';
import { FormatError } from '../../src/errors.js';
import { cli } from '../cli/support.js';
import { buildFamily, closeJob, newCoordinator, openJob, type FamilyFixture } from '../support/corruption/fixtures.js';
import { MAX_PARALLELISM, OPERATOR_ID } from '../support/corruption/job.js';
import { expectRejectsCode } from '../support/errors.js';

/**
 * Issue 12, "Paths in handles": a path read from a _metadata must stay inside its own snapshot.
 * The fixture holds two real jobs (A and B, heap state in files) and a savepoint of A; A's
 * _metadata is re-encoded (valid checksum) with one handle pointing into B, as an attacker would.
 */

// ------------------------------------------------------------------ the rule against a plain model

type Seg = string;
/** The model: walk segments over the snapshot dir; "." stays, ".." pops, "" or a pop past the root fails; the end must lie under an allowed folder. */
function model(snapshotDir: string, path: string): string | null {
  if (
    path.length === 0 ||
    path.startsWith('/') ||
    path.includes('\\') ||
    path.includes('\0') ||
    /^[a-zA-Z]:/.test(path)
  )
    return null;
  const stack = snapshotDir.split('/');
  for (const s of path.split('/')) {
    if (s === '') return null;
    if (s === '.') continue;
    if (s === '..') {
      if (stack.length === 0) return null;
      stack.pop();
    } else stack.push(s);
  }
  const name = stack.join('/');
  const parts = snapshotDir.split('/');
  const last = parts[parts.length - 1];
  const allowed = /^chk-(0|[1-9][0-9]*)$/.test(last)
    ? [snapshotDir, [...parts.slice(0, -1), 'shared'].join('/'), [...parts.slice(0, -1), 'taskowned'].join('/')]
    : [snapshotDir];
  return allowed.some((a) => name.startsWith(`${a}/`)) ? name : null;
}

describe('resolveHandlePath, the one home of the confinement rule', () => {
  const segment: fc.Arbitrary<Seg> = fc.oneof(
    fc.constantFrom(
      '..',
      '.',
      '',
      'shared',
      'taskowned',
      'chk-1',
      'chk-2',
      'job-a',
      'job-b',
      'x',
      '_metadata',
      'a\\b',
      'c:',
      'n\0',
    ),
    fc.stringMatching(/^[a-z0-9~-]{1,6}$/),
  );
  const snapshotDir = fc.constantFrom(
    'job-a/chk-1',
    'job-a/chk-12',
    'root/job-a/chk-3',
    'savepoint-abc',
    'sp/savepoint-1',
    'chk-4',
    'job-a/chk-01',
  );

  it('agrees with the model on random paths (segments, "..", ".", absolute, empty)', () => {
    fc.assert(
      fc.property(
        snapshotDir,
        fc.array(segment, { minLength: 0, maxLength: 6 }),
        fc.boolean(),
        (dir, segs, absolute) => {
          const path = (absolute ? '/' : '') + segs.join('/');
          const expected = model(dir, path);
          let actual: string | null;
          try {
            actual = resolveHandlePath(dir, path);
          } catch (err) {
            expect(err).toBeInstanceOf(FormatError);
            expect((err as FormatError).code).toBe('CORRUPT');
            actual = null;
          }
          expect(actual).toBe(expected);
          // Whatever it accepts is inside one of the snapshot's folders, and normal (no "." / ".." / empty segments).
          if (actual !== null) {
            expect(snapshotFolders(dir).some((f) => actual!.startsWith(`${f}/`))).toBe(true);
            expect(posix.normalize(actual)).toBe(actual);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('accepts what streamstate writes and refuses the examples of the issue', () => {
    expect(resolveHandlePath('job-a/chk-3', 'abc')).toBe('job-a/chk-3/abc');
    expect(resolveHandlePath('job-a/chk-3', '../shared/abc')).toBe('job-a/shared/abc');
    expect(resolveHandlePath('job-a/chk-3', '../taskowned/abc')).toBe('job-a/taskowned/abc');
    expect(resolveHandlePath('sp/savepoint-1', 'abc')).toBe('sp/savepoint-1/abc');
    for (const [dir, bad] of [
      ['job-a/chk-3', '../../other-job/chk-1/file'],
      ['job-a/chk-3', '../chk-2/file'],
      ['job-a/chk-3', '../lease'],
      ['job-a/chk-3', '/etc/passwd'],
      ['job-a/chk-3', '../../../../../dev/zero'],
      ['job-a/chk-3', 'a//b'],
      ['job-a/chk-3', 'a/'],
      ['job-a/chk-3', '..\\..\\x'],
      ['job-a/chk-3', 'a\0b'],
      ['sp/savepoint-1', '../shared/abc'],
      ['sp/savepoint-1', '../savepoint-2/abc'],
    ]) {
      expect(() => resolveHandlePath(dir, bad), `${dir} + ${bad}`).toThrow(FormatError);
    }
  });
});

// ------------------------------------------------------------------ library and CLI on crafted snapshots

/** Rewrites the _metadata at `pointer` so its first file handle points at `target` (path relative to the snapshot). */
async function redirectFirstFile(root: string, pointer: string, targetPath: string, targetName: string): Promise<void> {
  const file = join(root, pointer, '_metadata');
  const metadata = decodeMetadata(await readFile(file)) as CheckpointMetadata;
  const target = await readFile(join(root, targetName));
  const { crc32 } = await import('node:zlib');
  let done = false;
  const visit = (v: unknown): void => {
    if (done || v === null || typeof v !== 'object') return;
    const o = v as Record<string, unknown>;
    if (o.type === 'file' && typeof o.path === 'string') {
      const f = o as unknown as { path: string; size: number; crc32: number };
      f.path = targetPath;
      f.size = target.length;
      f.crc32 = crc32(target);
      done = true;
      return;
    }
    for (const x of Object.values(o)) visit(x);
  };
  visit(metadata.operators);
  expect(done).toBe(true);
  await writeFile(file, encodeMetadata(metadata));
}

/** Store-relative names of every file under `root/dir`. */
async function filesUnder(root: string, dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const e of await readdir(join(root, rel), { withFileTypes: true })) {
      if (e.isDirectory()) await walk(`${rel}/${e.name}`);
      else out.push(`${rel}/${e.name}`);
    }
  };
  await walk(dir);
  return out.sort();
}

describe('a handle pointing into another job (local disk)', () => {
  let fam: FamilyFixture;
  let dir: string;
  let root: string;
  let victim: string;
  let bFilesBefore: string[];
  beforeAll(async () => {
    fam = await buildFamily('heap');
  }, 60_000);
  afterAll(async () => {
    await fam?.cleanup();
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'streamstate-confined-'));
    root = join(dir, 'store');
    await cp(fam.root, root, { recursive: true });
    const bPointer = fam.b.checkpoints[1];
    victim = (await filesUnder(root, bPointer)).find((n) => !n.endsWith('/_metadata'))!.slice(0);
    victim = victim.startsWith('/') ? victim.slice(1) : victim;
    bFilesBefore = await filesUnder(root, fam.b.jobId);
    return () => rm(dir, { recursive: true, force: true });
  });

  const bFilesIntact = async (): Promise<void> => {
    expect(await filesUnder(root, fam.b.jobId)).toEqual(bFilesBefore);
    expect((await stat(join(root, victim))).isFile()).toBe(true);
  };

  it('restore of the crafted checkpoint refuses with CORRUPT, and nothing of job B is deleted', async () => {
    const pointer = fam.a.checkpoints[1];
    await redirectFirstFile(root, pointer, `../../${victim}`, victim);
    const storage = localCheckpointStorage(root, { inlineThreshold: 0 });
    const err = await expectRejectsCode(
      newCoordinator(storage, filesystem({ checkpointDir: root, inlineThreshold: 0 }), fam.a.jobId, 2).restore(),
      'CORRUPT',
    );
    expect(err.message).toContain('outside the snapshot');
    // An explicit pointer is refused the same way; reading through the snapshot's reader too.
    await expectRejectsCode(
      newCoordinator(storage, filesystem({ checkpointDir: root, inlineThreshold: 0 }), fam.a.jobId, 2).restore(pointer),
      'CORRUPT',
    );
    const resolved = await storage.resolve(pointer);
    const handle: FileStreamHandle = { type: 'file', path: `../../${victim}`, size: 1, crc32: 0 };
    await expectRejectsCode(resolved.files.read(handle), 'CORRUPT');
    await expectRejectsCode(storage.deleteFiles(pointer, [handle]), 'CORRUPT');
    await bFilesIntact();
  });

  it('retention of job A never deletes the file of job B its older checkpoint points at', async () => {
    // The crafted one is A's older checkpoint; A restores from its latest and checkpoints on, so retention retires the crafted one.
    await redirectFirstFile(root, fam.a.checkpoints[0], `../../${victim}`, victim);
    const storage = localCheckpointStorage(root, { inlineThreshold: 0 });
    const backend = filesystem({ checkpointDir: root, inlineThreshold: 0 });
    const coordinator = new CheckpointCoordinator({
      jobId: fam.a.jobId,
      storage,
      backendName: backend.name,
      operators: [{ operatorId: OPERATOR_ID, parallelism: 2, maxParallelism: MAX_PARALLELISM }],
      numRetained: 1,
    });
    // Refused before anything is deleted: the crafted checkpoint is one of A's retained ones.
    await expectRejectsCode(coordinator.restore(), 'CORRUPT');
    await bFilesIntact();
  });

  it('claim-mode restore of a crafted savepoint refuses, and B keeps its file', async () => {
    const sp = fam.a.savepoint!;
    await redirectFirstFile(root, sp, `../${victim}`, victim);
    const storage = localCheckpointStorage(root, { inlineThreshold: 0 });
    const backend = filesystem({ checkpointDir: root, inlineThreshold: 0 });
    const coordinator = new CheckpointCoordinator({
      jobId: 'job-c',
      storage,
      backendName: backend.name,
      operators: [{ operatorId: OPERATOR_ID, parallelism: 2, maxParallelism: MAX_PARALLELISM }],
      numRetained: 1,
      restoreMode: 'claim',
    });
    let plan;
    try {
      plan = await coordinator.restore(sp);
    } catch (err) {
      expect((err as FormatError).code).toBe('CORRUPT');
    }
    if (plan !== undefined && plan !== null) {
      // If planning passed, opening the state reads the file and must refuse it.
      await expectRejectsCode(openJob(backend, 'job-c', 2, plan).then(closeJob), 'CORRUPT');
      await coordinator.shutdown('finish');
    }
    await bFilesIntact();
  });

  it('the CLI (verify, dump, convert) refuses the crafted checkpoint and savepoint with exit 4 and reads nothing outside', async () => {
    const pointer = fam.a.checkpoints[1];
    await redirectFirstFile(root, pointer, `../../${victim}`, victim);
    await redirectFirstFile(root, fam.a.savepoint!, `../${victim}`, victim);
    for (const snapshot of [join(root, pointer), join(root, fam.a.savepoint!)]) {
      for (const args of [
        ['verify', snapshot],
        ['dump', snapshot, '--operator', OPERATOR_ID],
        ['convert', snapshot, join(dir, `out-${Math.random().toString(36).slice(2)}`), '--to', 'memory'],
      ]) {
        const r = await cli(args);
        expect(r.code, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(4);
        expect(`${r.stdout}${r.stderr}`).toContain('outside the snapshot');
      }
    }
    await bFilesIntact();
  }, 60_000);

  it('the CLI keeps its root at the path it was given: a savepoint reaching /etc/hostname is refused without reading it', async () => {
    const sp = fam.a.savepoint!;
    const depth = join(root, sp).split('/').length;
    await redirectFirstFile(root, sp, `${'../'.repeat(depth)}etc/hostname`, fam.a.checkpoints[1] + '/_metadata');
    // (inspect reads _metadata alone and only prints the recorded path.)
    for (const command of ['verify', 'dump']) {
      const r = await cli(
        command === 'dump' ? [command, join(root, sp), '--operator', OPERATOR_ID] : [command, join(root, sp)],
      );
      expect(r.code, `${command}: ${r.stdout}${r.stderr}`).toBe(4);
      expect(`${r.stdout}${r.stderr}`).toContain(
        'climbs above the storage root; a snapshot may reference only files under',
      );
    }
  }, 30_000);
});
