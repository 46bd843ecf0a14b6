import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { referencedFiles } from '../../src/backend/handles.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator } from '../../src/checkpoint/coordinator.js';
import { resolveHandlePath } from '../../src/checkpoint/streams.js';
import { LocalBlobStore, type DurabilityEvent } from '../../src/storage/local-blob-store.js';
import { FakeIncrementalSubtask, runCheckpoint } from '../checkpoint/coordinator-fixture.js';

/**
 * Durable before complete (docs/RUNTIME.md, "Durability"): on local disk every file a _metadata
 * references is fsynced, and so is every directory that gained an entry for it (its own, and the
 * parents of directories created for it: chk-<n>/, shared/, the job directory), before the
 * _metadata appears (its link/rename). Traced through LocalBlobStore's onDurabilityEvent.
 */
const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function tracedStore(): Promise<{ store: LocalBlobStore; events: DurabilityEvent[]; root: string }> {
  const root = join(await mkdtemp(join(tmpdir(), 'streamstate-durable-')), 'store'); // the store creates its root
  dirs.push(dirname(root));
  const events: DurabilityEvent[] = [];
  return { store: new LocalBlobStore(root, { onDurabilityEvent: (e) => events.push(e) }), events, root };
}

/** Index of the first event matching, searching from `from`; -1 if none. */
function indexOf(events: readonly DurabilityEvent[], op: DurabilityEvent['op'], path: string, from = 0): number {
  for (let i = from; i < events.length; i++) if (events[i].op === op && events[i].path === path) return i;
  return -1;
}

/** Asserts: every file fsynced after `from`, then its directory, all before `publish`; every extra directory too. */
function expectDurableBefore(
  events: readonly DurabilityEvent[],
  from: number,
  publish: number,
  files: readonly string[],
  extraDirs: readonly string[],
): void {
  expect(publish).toBeGreaterThan(from);
  for (const file of files) {
    const synced = indexOf(events, 'fsync-file', file, from);
    expect(synced, `fsync of ${file}`).toBeGreaterThanOrEqual(from);
    expect(synced, `fsync of ${file} before _metadata`).toBeLessThan(publish);
    const dirSynced = indexOf(events, 'fsync-dir', dirname(file), synced);
    expect(dirSynced, `fsync of ${dirname(file)} after ${file}`).toBeGreaterThan(synced);
    expect(dirSynced, `fsync of ${dirname(file)} before _metadata`).toBeLessThan(publish);
  }
  for (const dir of extraDirs) {
    const i = indexOf(events, 'fsync-dir', dir, from);
    expect(i, `fsync of ${dir}`).toBeGreaterThanOrEqual(from);
    expect(i, `fsync of ${dir} before _metadata`).toBeLessThan(publish);
  }
}

describe('durable before complete (local disk)', () => {
  it('every data file and directory of a checkpoint is fsynced before its _metadata is linked into place', async () => {
    const { store, events, root } = await tracedStore();
    const storage = new BlobCheckpointStorage(store, { inlineThreshold: 0 });
    const coord = new CheckpointCoordinator({
      jobId: 'job',
      storage,
      backendName: 'fake',
      numRetained: 2,
      operators: [{ operatorId: 'op', parallelism: 2, maxParallelism: 128 }],
    });
    await coord.restore();
    const tasks = [0, 1].map((i) => new FakeIncrementalSubtask('op', i, 2));
    for (let round = 1; round <= 2; round++) {
      const from = events.length;
      const { info } = await runCheckpoint(coord, tasks);
      expect(info?.checkpointId).toBe(round);
      const pointer = info!.pointer;
      const { metadata } = await storage.resolve(pointer);
      const files = new Set<string>();
      for (const op of metadata.operators)
        for (const s of op.subtasks)
          for (const f of referencedFiles([s.keyed, s.operator]))
            files.add(store.pathOf(resolveHandlePath(pointer, f.path)));
      // This round's new files: the reused shared file was made durable in round 1.
      const fresh = [...files].filter((f) => indexOf(events, 'fsync-file', f, from) >= 0);
      expect(fresh.length).toBe(4); // one exclusive and one new shared file per subtask
      const publish = indexOf(events, 'link', store.pathOf(`${pointer}/_metadata`), from);
      // chk-<n>/ is new in the job directory each round (shared/ too in round 1; the job directory
      // itself came with the lease marker at restore()).
      expectDurableBefore(events, from, publish, fresh, [join(root, 'job')]);
      expect(files.size).toBe(round === 1 ? 4 : 6);
    }
  });

  it('a savepoint likewise', async () => {
    const { store, events } = await tracedStore();
    const storage = new BlobCheckpointStorage(store, { inlineThreshold: 0 });
    const coord = new CheckpointCoordinator({
      jobId: 'job',
      storage,
      backendName: 'fake',
      operators: [{ operatorId: 'op', parallelism: 1, maxParallelism: 128 }],
    });
    await coord.restore();
    const task = new FakeIncrementalSubtask('op', 0, 1);
    const from = events.length;
    const p = coord.triggerSavepoint({ format: 'native' });
    const result = await coord.acknowledge(p.checkpointId, 'op', 0, await task.snapshot(p, false));
    expect(result.status).toBe('completed');
    const { metadata } = await storage.resolve(p.pointer);
    const files = metadata.operators.flatMap((op) =>
      op.subtasks.flatMap((s) =>
        referencedFiles([s.keyed, s.operator]).map((f) => store.pathOf(resolveHandlePath(p.pointer, f.path))),
      ),
    );
    expect(files.length).toBe(2);
    const publish = indexOf(events, 'link', store.pathOf(`${p.pointer}/_metadata`), from);
    expectDurableBefore(events, from, publish, files, [store.rootDir]);
  });

  it('any files in any new directories (put, putStream, putFile): each file and every directory that gained an entry is synced before the next putAtomic publishes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(
          fc.array(fc.constantFrom('a', 'b', 'c'), { minLength: 1, maxLength: 4 }).map((p) => p.join('/')),
          { minLength: 1, maxLength: 6 },
        ),
        fc.constantFrom('put', 'stream', 'file', 'linked file'),
        async (paths, how) => {
          const { store, events, root } = await tracedStore();
          // Leaf files only (a name cannot be both a file and a directory).
          const names = paths.filter((p) => !paths.some((q) => q.startsWith(`${p}/`))).map((p) => `${p}/f`);
          const source = join(dirname(root), 'source');
          await writeFile(source, 'local file');
          // putFile: all at once, as a checkpoint's uploads (the worker creates the directories).
          if (how === 'file' || how === 'linked file')
            await Promise.all(names.map((n) => store.putFile(n, source, { immutable: how === 'linked file' })));
          for (const n of names) {
            if (how === 'stream')
              await store.putStream(
                n,
                (async function* () {
                  yield Buffer.from(n);
                })(),
              );
            else if (how === 'put') await store.put(n, Buffer.from(n));
          }
          await store.putAtomic('_metadata', Buffer.from('m'));
          const publish = indexOf(events, 'rename', store.pathOf('_metadata'));
          const files = names.map((n) => store.pathOf(n));
          // Every directory on the way (all new: the root did not exist either).
          const ancestors = new Set<string>();
          for (const f of files) for (let d = dirname(f); d.length > root.length; d = dirname(d)) ancestors.add(d);
          expectDurableBefore(events, 0, publish, files, [...ancestors, root]);
        },
      ),
      { numRuns: 25 },
    );
  });

  it('syncData: false skips only the data-file fsync (for measuring its cost)', async () => {
    const root = await mkdtemp(join(tmpdir(), 'streamstate-durable-'));
    dirs.push(root);
    const events: DurabilityEvent[] = [];
    const store = new LocalBlobStore(root, { syncData: false, onDurabilityEvent: (e) => events.push(e) });
    await store.put('d/x', Buffer.from('x'));
    await store.putAtomic('d/_metadata', Buffer.from('m'));
    expect(events.some((e) => e.op === 'fsync-file' && e.path === store.pathOf('d/x'))).toBe(false);
    expect(events.some((e) => e.op === 'fsync-dir' && e.path === join(root, 'd'))).toBe(true);
  });
});
