import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { memory } from '../../backends/memory/index.js';
import type { StateBackend } from '../../src/backend/contract.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { decodeMetadata, encodeMetadata } from '../../src/checkpoint/metadata-codec.js';
import { expectDocumentedError } from '../conformance/parity/error-classes.js';
import {
  checkpoint,
  fill,
  localTree,
  readAll,
  snapshotAndAcknowledge,
  startJob,
} from './savepoint-anywhere-support.js';

/**
 * Savepoints anywhere (issue 14): a savepoint written to a directory outside the job's checkpoint
 * storage, and restores from any local path outside it (a savepoint, another job's chk-<n>), in
 * no-claim mode, into a job with its own storage, another backend and another parallelism.
 */
const KEYS = 60;
/** Enough state for LevelDB to write table files (shared/ in its checkpoints). */
const BIG = 800;
let root: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'ss-sp-anywhere-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

type BackendKind = 'memory' | 'filesystem' | 'leveldb';

function backendOf(kind: BackendKind, name: string): StateBackend {
  if (kind === 'memory') return memory();
  if (kind === 'filesystem') return filesystem({ checkpointDir: join(root, `${name}-unused`) });
  // A small memtable, so that even this little state reaches table files (shared/ in checkpoints).
  return leveldb({ workingDir: join(root, `${name}-work`), memtableBytes: 4096, writeBufferBytes: 4096 });
}

function storageOf(name: string) {
  return localCheckpointStorage(join(root, name), { inlineThreshold: 0 });
}

describe('savepoint to a directory outside the checkpoint storage', () => {
  it('writes it there (not into the storage), and a job with its own storage, another backend and parallelism restores it', async () => {
    const a = await startJob({
      jobId: 'job-a',
      storage: storageOf('storage-a'),
      backend: backendOf('filesystem', 'a'),
      parallelism: 2,
    });
    fill(a, KEYS, 1);
    const target = join(root, 'elsewhere', 'sp-1');
    const sp = a.coordinator.triggerSavepoint({ target });
    const result = await snapshotAndAcknowledge(a, sp);
    const info = await sp.completion;
    expect(result?.status).toBe('completed');
    expect(info.pointer).toBe(target);
    const files = await localTree(target);
    expect([...files.keys()]).toContain('_metadata');
    expect(files.size).toBeGreaterThan(2);
    expect([...(await localTree(join(root, 'storage-a'))).keys()].filter((f) => !f.includes('_lease'))).toEqual([]);
    await a.close();

    const b = await startJob({
      jobId: 'job-b',
      storage: storageOf('storage-b'),
      backend: backendOf('leveldb', 'b'),
      parallelism: 3,
      restoreFrom: target,
    });
    expect(b.plan?.mode).toBe('no-claim');
    expect(b.plan?.pointer).toBe(target);
    expect(readAll(b, KEYS)).toEqual(Array.from({ length: KEYS }, (_, k) => `key-${k}@1`));
    // The new job checkpoints into its own storage; ids continue after the savepoint's.
    fill(b, KEYS, 2);
    const first = await checkpoint(b);
    expect(first.checkpointId).toBe(info.checkpointId + 1);
    expect(first.pointer).toBe(`job-b/chk-${first.checkpointId}`);
    await b.close();
    expect(await localTree(target)).toEqual(files);
  });

  it('without a target, goes to the default savepoint location (savepoints.dir) as savepoint-<job6>-<hex>', async () => {
    const dir = join(root, 'savepoints');
    const a = await startJob({
      jobId: 'job-default',
      storage: storageOf('storage'),
      backend: backendOf('memory', 'a'),
      parallelism: 1,
      savepoints: { dir },
    });
    fill(a, KEYS, 1);
    const sp = a.coordinator.triggerSavepoint();
    await snapshotAndAcknowledge(a, sp);
    const info = await sp.completion;
    expect(info.pointer).toMatch(
      new RegExp(`^${dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/savepoint-job-de-[0-9a-f]{12}$`),
    );
    expect((await localTree(info.pointer)).has('_metadata')).toBe(true);
    await a.close();
  });

  it('the deprecated targetDir still puts it inside the checkpoint storage', async () => {
    const a = await startJob({
      jobId: 'job-old',
      storage: storageOf('storage'),
      backend: backendOf('memory', 'a'),
      parallelism: 1,
      savepoints: { dir: join(root, 'unused') },
    });
    fill(a, KEYS, 1);
    const sp = a.coordinator.triggerSavepoint({ targetDir: 'savepoints' });
    await snapshotAndAcknowledge(a, sp);
    const info = await sp.completion;
    expect(info.pointer).toMatch(/^savepoints\/savepoint-job-ol-[0-9a-f]{12}$/);
    await a.close();
  });

  it('a target that exists and holds files: SAVEPOINT_TARGET_NOT_EMPTY, nothing written there, the job goes on', async () => {
    const a = await startJob({
      jobId: 'job-a',
      storage: storageOf('storage-a'),
      backend: backendOf('filesystem', 'a'),
      parallelism: 2,
    });
    fill(a, KEYS, 1);
    const target = join(root, 'taken');
    await mkdir(join(target, 'sub'), { recursive: true });
    await writeFile(join(target, 'notes.txt'), 'mine');
    await writeFile(join(target, 'sub', '_metadata'), 'not ours either');
    const before = await localTree(target);
    const sp = a.coordinator.triggerSavepoint({ target });
    // Subtasks fail to write (the target refuses); the runtime aborts, as for any failed snapshot.
    const outcome = await snapshotAndAcknowledge(a, sp).then(
      () => null,
      (err: unknown) => err,
    );
    if (outcome !== null) await a.coordinator.abort(sp.checkpointId, String(outcome));
    const err = await sp.completion.then(
      () => null,
      (e: unknown) => e,
    );
    expectDocumentedError(err, 'SAVEPOINT_TARGET_NOT_EMPTY');
    expect(String((err as Error).message)).toContain(target);
    expect(await localTree(target)).toEqual(before);
    expect(a.cleanupErrors.every((e) => /refused to delete/.test(String((e as Error).message)))).toBe(true);
    // The job is unaffected: checkpoints go on.
    expect((await checkpoint(a)).checkpointId).toBe(sp.checkpointId + 1);
    await a.close();
  });

  it('a target inside the job directory is refused (the job would garbage-collect it)', async () => {
    const a = await startJob({
      jobId: 'job-a',
      storage: storageOf('storage-a'),
      backend: backendOf('memory', 'a'),
      parallelism: 1,
    });
    expect(() => a.coordinator.triggerSavepoint({ target: join(root, 'storage-a', 'job-a', 'sp') })).toThrow(
      /inside job job-a's checkpoint directory/,
    );
    expect(() => a.coordinator.triggerSavepoint({ target: 'x', targetDir: 'y' })).toThrow(/either target/);
    await a.close();
  });
});

describe('restore from a pointer outside the checkpoint storage', () => {
  it("restores another job's chk-<n> (incremental LevelDB, shared files) in no-claim mode and never touches its files", async () => {
    const a = await startJob({
      jobId: 'job-a',
      storage: storageOf('storage-a'),
      backend: backendOf('leveldb', 'a'),
      parallelism: 2,
      numRetained: 2,
    });
    fill(a, BIG, 1);
    await checkpoint(a);
    fill(a, BIG / 2, 2);
    const chk = await checkpoint(a);
    await a.close();
    const sourceDir = join(root, 'storage-a', 'job-a');
    const before = await localTree(sourceDir);
    expect([...before.keys()].some((f) => f.startsWith('shared/'))).toBe(true);

    // A native checkpoint restores into the backend that wrote it (canonical savepoints switch backends).
    const b = await startJob({
      jobId: 'job-b',
      storage: storageOf('storage-b'),
      backend: backendOf('leveldb', 'b'),
      parallelism: 3,
      restoreFrom: join(root, 'storage-a', chk.pointer, '_metadata'),
    });
    expect(b.plan?.mode).toBe('no-claim');
    expect(readAll(b, BIG)).toEqual(Array.from({ length: BIG }, (_, k) => `key-${k}@${k < BIG / 2 ? 2 : 1}`));
    for (let v = 3; v < 5; v++) {
      fill(b, BIG, v);
      await checkpoint(b);
      await b.coordinator.collectGarbage();
    }
    await b.close('cancel');
    expect(await localTree(sourceDir)).toEqual(before);
  });

  it('claim mode is refused for a pointer outside the storage (a job deletes only what is in its own storage)', async () => {
    const a = await startJob({
      jobId: 'job-a',
      storage: storageOf('storage-a'),
      backend: backendOf('memory', 'a'),
      parallelism: 1,
    });
    fill(a, KEYS, 1);
    const chk = await checkpoint(a);
    await a.close();
    await expect(
      startJob({
        jobId: 'job-b',
        storage: storageOf('storage-b'),
        backend: backendOf('memory', 'b'),
        parallelism: 1,
        restoreMode: 'claim',
        restoreFrom: join(root, 'storage-a', chk.pointer),
      }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/claim mode/) });
  });

  it('a pointer that is neither a checkpoint nor a savepoint: NOT_A_SNAPSHOT saying what was expected; a missing one NOT_FOUND', async () => {
    const junk = join(root, 'junk');
    await mkdir(junk, { recursive: true });
    await writeFile(join(junk, 'data.bin'), 'x');
    const start = (restoreFrom: string) =>
      startJob({
        jobId: 'job-b',
        storage: storageOf('storage-b'),
        backend: backendOf('memory', 'b'),
        parallelism: 1,
        restoreFrom,
      }).then(
        () => null,
        (e: unknown) => e,
      );
    for (const pointer of [junk, join(junk, 'data.bin')]) {
      const err = await start(pointer);
      expectDocumentedError(err, 'NOT_A_SNAPSHOT');
      expect((err as Error).message).toMatch(/Expected a savepoint directory .* a checkpoint directory/);
    }
    expectDocumentedError(await start(join(root, 'nothing-here')), 'NOT_FOUND');
  });

  it("paths in a restored _metadata stay confined to the snapshot's own directory (CORRUPT, nothing read outside)", async () => {
    const a = await startJob({
      jobId: 'job-a',
      storage: storageOf('storage-a'),
      backend: backendOf('filesystem', 'a'),
      parallelism: 1,
    });
    fill(a, KEYS, 1);
    const target = join(root, 'sp');
    const sp = a.coordinator.triggerSavepoint({ target });
    await snapshotAndAcknowledge(a, sp);
    await sp.completion;
    await a.close();
    // A sibling of the savepoint that a crafted _metadata tries to reach.
    await mkdir(join(root, 'victim'), { recursive: true });
    await writeFile(join(root, 'victim', 'secret'), 'do not read');
    const metadata = decodeMetadata(await readFile(join(target, '_metadata')), 'test');
    const crafted = JSON.parse(
      JSON.stringify(metadata).replace(/"path":"[^"]+"/, '"path":"../victim/secret"'),
    ) as typeof metadata;
    await writeFile(join(target, '_metadata'), encodeMetadata(crafted));
    await expect(
      startJob({
        jobId: 'job-b',
        storage: storageOf('storage-b'),
        backend: backendOf('memory', 'b'),
        parallelism: 1,
        restoreFrom: target,
      }),
    ).rejects.toMatchObject({ code: 'CORRUPT', message: expect.stringMatching(/outside the snapshot/) });
  });
});

describe('no-claim restores never delete the source (property)', () => {
  it('whatever the new job does (checkpoints, retention, gc, cancel with delete), the source snapshot stays byte-identical', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          source: fc.constantFrom<'savepoint' | 'checkpoint'>('savepoint', 'checkpoint'),
          sourceBackend: fc.constantFrom<BackendKind>('memory', 'leveldb'),
          targetBackend: fc.constantFrom<BackendKind>('memory', 'filesystem', 'leveldb'),
          keys: fc.integer({ min: 20, max: 120 }),
          parallelism: fc.integer({ min: 1, max: 3 }),
          numRetained: fc.integer({ min: 1, max: 3 }),
          steps: fc.array(fc.constantFrom<'checkpoint' | 'gc' | 'write'>('checkpoint', 'gc', 'write'), {
            minLength: 1,
            maxLength: 6,
          }),
          end: fc.constantFrom<'finish' | 'cancel'>('finish', 'cancel'),
        }),
        async (c) => {
          const n = ++run;
          // A native checkpoint restores into its own backend (heap presets share one); a canonical savepoint into any.
          const targetBackend =
            c.source === 'checkpoint' && (c.sourceBackend === 'leveldb') !== (c.targetBackend === 'leveldb')
              ? c.sourceBackend
              : c.targetBackend;
          const a = await startJob({
            jobId: `src-${n}`,
            storage: storageOf(`src-${n}`),
            backend: backendOf(c.sourceBackend, `src-${n}`),
            parallelism: 2,
            numRetained: 2,
          });
          fill(a, c.keys, 1);
          let pointer: string;
          if (c.source === 'savepoint') {
            const sp = a.coordinator.triggerSavepoint({ target: join(root, `sp-${n}`), format: 'canonical' });
            await snapshotAndAcknowledge(a, sp);
            pointer = (await sp.completion).pointer;
          } else {
            await checkpoint(a);
            pointer = join(root, `src-${n}`, (await checkpoint(a)).pointer);
          }
          await a.close();
          const sourceDir = c.source === 'savepoint' ? pointer : join(root, `src-${n}`);
          const before = await localTree(sourceDir);
          const b = await startJob({
            jobId: `dst-${n}`,
            storage: storageOf(`dst-${n}`),
            backend: backendOf(targetBackend, `dst-${n}`),
            parallelism: c.parallelism,
            numRetained: c.numRetained,
            onCancel: 'delete',
            restoreFrom: pointer,
          });
          let version = 2;
          for (const step of c.steps) {
            if (step === 'write') fill(b, c.keys, version++);
            else if (step === 'checkpoint') await checkpoint(b);
            else await b.coordinator.collectGarbage();
          }
          await b.close(c.end);
          expect(await localTree(sourceDir)).toEqual(before);
        },
      ),
      { numRuns: 12 },
    );
  }, 60_000);
});
