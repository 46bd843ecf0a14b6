import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { BlobCheckpointStorage, localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { DEFAULT_FENCING_MIN_AGE_MS, deletableNow } from '../../src/checkpoint/fencing-gc.js';
import { JobLease, LEASE_DIR, readLease } from '../../src/checkpoint/lease.js';
import { StorageError, isStreamStateError } from '../../src/errors.js';
import type { BlobInfo } from '../../src/storage/blob-store.js';
import { ForwardingBlobStore } from '../../src/storage/forwarding-blob-store.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';
import { expectRejectsCode } from '../support/errors.js';
import { jobFiles, runCheckpoint } from './coordinator-fixture.js';
import { JOB, coordinator, fencedWhileWritingScenario, secondInstanceScenario, subtasks } from './fencing-scenarios.js';

const dirs: string[] = [];
const memories: MemoryBlobStore[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  for (const m of memories.splice(0)) m.destroy();
});

async function localStorage(): Promise<BlobCheckpointStorage> {
  const dir = await mkdtemp(join(tmpdir(), 'streamstate-fence-'));
  dirs.push(dir);
  return localCheckpointStorage(dir, { inlineThreshold: 0 });
}

function memoryStore(clock?: () => number): MemoryBlobStore {
  const m = new MemoryBlobStore({ clock });
  memories.push(m);
  return m;
}

describe('fencing: a second instance of a job', () => {
  it('on local disk: the older instance cannot complete, delete or gc (FENCED); the newer keeps its in-flight files', async () => {
    await secondInstanceScenario(await localStorage());
  });

  it('in memory: the same', async () => {
    await secondInstanceScenario(new BlobCheckpointStorage(memoryStore(), { inlineThreshold: 0 }));
  });

  it('fenced between the lease check and _metadata: the complete checkpoint stays; one whose files are gone is removed again', async () => {
    await fencedWhileWritingScenario(memoryStore());
    await fencedWhileWritingScenario((await localStorage()).store);
    await fencedWhileWritingScenario(memoryStore(), { filesGone: true });
    await fencedWhileWritingScenario((await localStorage()).store, { filesGone: true });
  });

  it('a late _metadata of a fenced instance never becomes "latest": ids continue above every chk-<n> directory', async () => {
    const storage = await localStorage();
    const a = coordinator(storage);
    await a.restore();
    const aTasks = subtasks();
    // A has triggered checkpoints 1..3 and written files for 3 only.
    a.triggerCheckpoint();
    a.triggerCheckpoint();
    const p3 = a.triggerCheckpoint();
    for (const t of aTasks) await t.snapshot(p3);
    const b = coordinator(storage);
    await b.restore();
    expect(b.nextCheckpointId).toBe(4);
  });
});

describe('fencing: start-up cleanup and the grace period', () => {
  it('files of a crashed instance are kept while its lease may be live and younger than the grace period, then removed', async () => {
    let now = 1_000_000;
    const store = memoryStore(() => now);
    const storage = new BlobCheckpointStorage(store, { inlineThreshold: 0 });
    const fencing = { now: () => now };
    const a = coordinator(storage, { fencing });
    await a.restore();
    const tasks = subtasks();
    await runCheckpoint(a, tasks);
    const complete = await jobFiles(storage, JOB);
    const p = a.triggerCheckpoint();
    for (const t of tasks) await t.snapshot(p); // A "crashes" here: no shutdown, its lease stays unreleased

    now += DEFAULT_FENCING_MIN_AGE_MS - 1;
    const b = coordinator(storage, { fencing });
    await b.restore();
    expect((await jobFiles(storage, JOB)).length).toBeGreaterThan(complete.length);
    expect(await b.collectGarbage()).toEqual([]);

    now += 1; // the in-flight files are now exactly as old as the grace period
    const removed = await b.collectGarbage();
    expect(removed.length).toBeGreaterThan(0);
    expect(await jobFiles(storage, JOB)).toEqual(complete);
  });

  it('after a clean shutdown (lease released) the next start removes leftovers at once', async () => {
    const now = 5_000_000;
    const store = memoryStore(() => now);
    const storage = new BlobCheckpointStorage(store, { inlineThreshold: 0 });
    const a = coordinator(storage, { fencing: { now: () => now } });
    await a.restore();
    await runCheckpoint(a, subtasks());
    const complete = await jobFiles(storage, JOB);
    await a.shutdown('finish');
    expect((await readLease(store, JOB))?.released).toBe(true);
    // A leftover nothing references (e.g. a crash of an instance before fencing existed).
    await store.put(`${JOB}/chk-7/orphan`, Buffer.from('x'));
    await store.put(`${JOB}/shared/orphan`, Buffer.from('x'));
    const b = coordinator(storage, { fencing: { now: () => now } });
    await b.restore();
    expect(await jobFiles(storage, JOB)).toEqual(complete);
    expect(b.nextCheckpointId).toBe(8);
  });

  it('deletableNow: never a lease marker; with an older live lease never a young file of an older instance', () => {
    const job = 'j';
    const name = fc.oneof(
      fc
        .tuple(fc.integer({ min: 0, max: 6 }), fc.constantFrom('a', 'b', '_metadata'))
        .map(([id, f]) => `${job}/chk-${id}/${f}`),
      fc.constantFrom('x', 'y', 'z').map((f) => `${job}/shared/${f}`),
      fc.constant(`${job}/${LEASE_DIR}/epoch-0000000000000001-0000000000000000`),
    );
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.record({ name, age: fc.option(fc.integer({ min: 0, max: 20 }), { nil: undefined }) }), {
          selector: (e) => e.name,
          maxLength: 15,
        }),
        fc.integer({ min: 0, max: 7 }),
        fc.boolean(),
        (entries, firstOwnId, othersMayBeAlive) => {
          const now = 100;
          const listing: BlobInfo[] = entries.map((e) => ({
            name: e.name,
            size: 1,
            ...(e.age === undefined ? {} : { modified: now - e.age }),
          }));
          const doomed = entries.map((e) => e.name);
          const out = deletableNow(doomed, listing, { jobId: job, firstOwnId, now, minAgeMs: 10, othersMayBeAlive });
          const byName = new Map(entries.map((e) => [e.name, e]));
          const dirAgeOk = (id: number): boolean =>
            entries
              .filter((e) => e.name.startsWith(`${job}/chk-${id}/`))
              .every((e) => e.age !== undefined && e.age >= 10);
          for (const n of doomed) {
            const isLease = n.includes(`/${LEASE_DIR}/`);
            const m = /\/chk-(\d+)\//.exec(n);
            let expected: boolean;
            if (isLease) expected = false;
            else if (!othersMayBeAlive) expected = true;
            else if (m !== null) expected = Number(m[1]) >= firstOwnId || dirAgeOk(Number(m[1]));
            else expected = byName.get(n)!.age !== undefined && byName.get(n)!.age! >= 10;
            expect(out.includes(n), n).toBe(expected);
          }
        },
      ),
    );
  });
});

describe('fencing: the lease', () => {
  it('readLease reports epoch, renewal and release; every start takes a higher epoch', async () => {
    let now = 10_000;
    const store = memoryStore(() => now);
    const storage = new BlobCheckpointStorage(store, { inlineThreshold: 0 });
    expect(await readLease(store, JOB)).toBeNull();
    const a = coordinator(storage, { fencing: { now: () => now } });
    await a.restore();
    const first = await readLease(store, JOB);
    expect(first).toMatchObject({ jobId: JOB, epoch: 1, released: false, renewedAt: 10_000 });
    now = 20_000;
    await runCheckpoint(a, subtasks());
    expect((await readLease(store, JOB))?.renewedAt).toBe(20_000); // renewed by the completed checkpoint
    await a.shutdown('finish');
    expect(await readLease(store, JOB)).toMatchObject({ epoch: 1, released: true });
    for (let epoch = 2; epoch <= 4; epoch++) {
      const next = coordinator(storage);
      await next.restore();
      expect(await readLease(store, JOB)).toMatchObject({ epoch, released: false });
    }
    // The released marker of epoch 1 was pruned by the next start; the unreleased ones stay.
    expect(await store.list(`${JOB}/${LEASE_DIR}/`)).toHaveLength(3);
    expect((await store.list(`${JOB}/${LEASE_DIR}/`)).some((b) => b.name.includes('epoch-0000000000000001-'))).toBe(
      false,
    );
    // Lease markers are no checkpoint files: listJobFiles never shows them.
    expect((await storage.listJobFiles(JOB)).some((n) => n.includes(LEASE_DIR))).toBe(false);
  });

  it('storage that cannot be written at start: restore works, nothing completes until the lease is taken', async () => {
    const mem = memoryStore();
    class Unwritable extends ForwardingBlobStore {
      full = true;
      override putAtomic(name: string, data: Uint8Array, opts?: { exclusive?: boolean }): Promise<void> {
        if (this.full)
          return Promise.reject(new StorageError('STORAGE_IO', `cannot write ${name}: disk full (ENOSPC).`));
        return super.putAtomic(name, data, opts);
      }
    }
    const store = new Unwritable(mem);
    const storage = new BlobCheckpointStorage(store, { inlineThreshold: 0 });
    await mem.put(`${JOB}/chk-4/leftover`, Buffer.from('x')); // no lease anywhere: removed at once
    const coord = coordinator(storage);
    expect(await coord.restore()).toBeNull();
    expect(await readLease(mem, JOB)).toBeNull();
    expect(await jobFiles(storage, JOB)).toEqual([]); // gc could still free space
    const tasks = subtasks();
    const failed = await runCheckpoint(coord, tasks).catch((err: unknown) => err);
    expect(isStreamStateError(failed, 'SNAPSHOT_FAILED')).toBe(true);
    store.full = false;
    expect((await runCheckpoint(coord, tasks)).info).not.toBeNull();
    expect(await readLease(mem, JOB)).toMatchObject({ epoch: 1, released: false });
  });

  it('a removed lease marker fences its holder', async () => {
    const store = memoryStore();
    const lease = await JobLease.acquire(store, JOB);
    await lease.check('test');
    await store.delete([lease.marker]);
    await expectRejectsCode(lease.check('test'), 'FENCED');
    expect(lease.fenced).toBe(true);
  });

  it('instances starting at once under any interleaving: exactly one holds the lease, the others are fenced', async () => {
    let ties = 0; // starts that lost a same-epoch tie: the interleavings do reach that case
    await fc.assert(
      fc.asyncProperty(fc.scheduler(), fc.integer({ min: 2, max: 4 }), async (s, n) => {
        const mem = new MemoryBlobStore();
        try {
          // Every storage call returns when the scheduler says so: all interleavings of list/put/get.
          class Scheduled extends ForwardingBlobStore {
            override list(prefix: string): Promise<BlobInfo[]> {
              return s.schedule(super.list(prefix), 'list');
            }
            override putAtomic(name: string, data: Uint8Array, opts?: { exclusive?: boolean }): Promise<void> {
              return s.schedule(Promise.resolve(), 'put').then(() => super.putAtomic(name, data, opts));
            }
          }
          const store = new Scheduled(mem);
          const starts = Promise.allSettled(Array.from({ length: n }, () => JobLease.acquire(store, JOB)));
          const results = await s.waitFor(starts);
          for (const r of results)
            if (r.status === 'rejected') expect(isStreamStateError(r.reason, 'FENCED')).toBe(true);
          const started = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
          const holder = await readLease(mem, JOB);
          const holders = started.filter((l) => l.marker === holder?.marker);
          expect(holders).toHaveLength(1);
          // Every other started instance sorts below the holder: its next check fails.
          const others = started.filter((l) => l !== holders[0]);
          for (const l of others) expect(l.marker < holder!.marker).toBe(true);
          const checks = await s.waitFor(
            Promise.all(
              others.map((l) =>
                l.check('test').then(
                  () => 'ok',
                  (e: unknown) => (isStreamStateError(e) ? e.code : 'other'),
                ),
              ),
            ),
          );
          expect(checks.every((c) => c === 'FENCED')).toBe(true);
          ties += results.length - started.length;
        } finally {
          mem.destroy();
        }
      }),
      { numRuns: 60 },
    );
    expect(ties).toBeGreaterThan(0);
  });
});
