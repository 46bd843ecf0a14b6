import { expect } from 'vitest';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import {
  CheckpointCoordinator,
  type CheckpointCoordinatorOptions,
  type PendingCheckpoint,
} from '../../src/checkpoint/coordinator.js';
import { readLease } from '../../src/checkpoint/lease.js';
import type { SubtaskAck } from '../../src/checkpoint/coordinator.js';
import { isStreamStateError } from '../../src/errors.js';
import type { BlobStore } from '../../src/storage/blob-store.js';
import { ForwardingBlobStore } from '../../src/storage/forwarding-blob-store.js';
import { expectRejectsCode, expectThrowsCode } from '../support/errors.js';
import { FakeIncrementalSubtask, jobFiles, runCheckpoint } from './coordinator-fixture.js';

/**
 * Fencing scenarios (docs/RUNTIME.md, "Fencing") over any BlobStore: the same checks run on memory,
 * local disk (test/checkpoint/fencing.test.ts) and S3 (test/s3/fencing-s3.test.ts).
 */
export const JOB = 'job-fence';
const PARALLELISM = 2;

export function subtasks(): FakeIncrementalSubtask[] {
  return Array.from({ length: PARALLELISM }, (_, i) => new FakeIncrementalSubtask('op', i, PARALLELISM));
}

export function coordinator(
  storage: BlobCheckpointStorage,
  opts: Partial<CheckpointCoordinatorOptions> = {},
): CheckpointCoordinator {
  return new CheckpointCoordinator({
    jobId: JOB,
    storage,
    backendName: 'fake',
    numRetained: 1,
    operators: [{ operatorId: 'op', parallelism: PARALLELISM, maxParallelism: 128 }],
    ...opts,
  });
}

/** Snapshots every subtask for `p` (its files are written) without acknowledging. */
async function snapshotAll(p: PendingCheckpoint, tasks: readonly FakeIncrementalSubtask[]): Promise<SubtaskAck[]> {
  const acks: SubtaskAck[] = [];
  for (const t of tasks) acks.push(await t.snapshot(p));
  return acks;
}

async function filesUnder(storage: BlobCheckpointStorage, prefix: string): Promise<string[]> {
  return (await jobFiles(storage, JOB)).filter((n) => n.startsWith(prefix));
}

/**
 * The second instance: A has checkpoint 2 written but not acknowledged when B starts on the
 * same job and storage. B's start-up cleanup keeps A's in-flight files; A can then neither complete
 * checkpoint 2 nor delete anything nor collect garbage (FENCED); B's ids continue above chk-2 and
 * B's checkpoints are the ones a later start restores.
 */
export async function secondInstanceScenario(storage: BlobCheckpointStorage): Promise<void> {
  const cleanupErrors: unknown[] = [];
  const a = coordinator(storage, { onCleanupError: (err) => cleanupErrors.push(err) });
  expect(await a.restore()).toBeNull();
  const aTasks = subtasks();
  expect((await runCheckpoint(a, aTasks)).info?.checkpointId).toBe(1);
  const p2 = a.triggerCheckpoint();
  const acks = await snapshotAll(p2, aTasks);
  const inFlight = await filesUnder(storage, `${JOB}/chk-2/`);
  expect(inFlight.length).toBeGreaterThan(0);
  const before = await jobFiles(storage, JOB);

  const b = coordinator(storage);
  const plan = await b.restore();
  expect(plan?.checkpointId).toBe(1);
  // A's lease is not released and its files are young: nothing of A's in-flight checkpoint went.
  expect(await jobFiles(storage, JOB)).toEqual(before);
  expect(b.nextCheckpointId).toBeGreaterThan(2);
  expect((await readLease(storage.store, JOB))?.epoch).toBe(2);

  // A's last acknowledgement would complete checkpoint 2: FENCED, and no _metadata was written.
  expect((await a.acknowledge(p2.checkpointId, 'op', 0, acks[0])).status).toBe('waiting');
  await expectRejectsCode(a.acknowledge(p2.checkpointId, 'op', 1, acks[1]), 'FENCED');
  await expectRejectsCode(p2.completion, 'FENCED');
  expect(await storage.store.stat(`${JOB}/chk-2/_metadata`)).toBeNull();
  // ... nor delete anything: its abort deleted nothing (the deletion failed FENCED, reported as a cleanup error).
  expect(cleanupErrors.some((e) => isStreamStateError(e, 'FENCED'))).toBe(true);
  expect(await jobFiles(storage, JOB)).toEqual(before);
  await expectRejectsCode(a.collectGarbage(), 'FENCED');
  expectThrowsCode(() => a.triggerCheckpoint(), 'FENCED');
  expectThrowsCode(() => a.triggerSavepoint(), 'FENCED');
  expect(await jobFiles(storage, JOB)).toEqual(before);

  // B goes on; its checkpoint is the latest, and A's retained chk-1 is B's to retire.
  const done = await runCheckpoint(b, subtasks());
  expect(done.info?.checkpointId).toBe(b.nextCheckpointId - 1);
  expect(done.info!.checkpointId).toBeGreaterThan(2);
  expect(await storage.store.stat(`${JOB}/chk-1/_metadata`)).toBeNull();
  await b.shutdown('finish');
  const c = coordinator(storage);
  expect((await c.restore())?.checkpointId).toBe(done.info!.checkpointId);
  await c.shutdown('finish');
}

/**
 * A newer instance starts between the old one's lease check and its _metadata write: the old one
 * sees it on the check right after writing and fails FENCED. Its checkpoint is complete, so it
 * stays (the newer instance may have adopted it) — unless `filesGone`: the old instance stalled
 * past the grace period and the newer one's gc took its files, so the _metadata could never
 * restore and the old instance removes it again.
 */
export async function fencedWhileWritingScenario(
  store: BlobStore,
  scenario: { filesGone?: boolean } = {},
): Promise<void> {
  const plain = new BlobCheckpointStorage(store, { inlineThreshold: 0 });
  let newer: CheckpointCoordinator | undefined;
  class StartNewerBeforeMetadata extends ForwardingBlobStore {
    override async putAtomic(name: string, data: Uint8Array, opts?: { exclusive?: boolean }): Promise<void> {
      if (name === `${JOB}/chk-1/_metadata` && newer === undefined) {
        newer = coordinator(plain);
        await newer.restore();
        if (scenario.filesGone) {
          const gone = (await store.list(`${JOB}/`)).map((b) => b.name).filter((n) => !n.includes('/_lease/'));
          expect(gone.length).toBeGreaterThan(0);
          await store.delete(gone);
        }
      }
      return super.putAtomic(name, data, opts);
    }
  }
  const a = coordinator(new BlobCheckpointStorage(new StartNewerBeforeMetadata(store), { inlineThreshold: 0 }));
  await a.restore();
  const tasks = subtasks();
  const p = a.triggerCheckpoint();
  const acks = await snapshotAll(p, tasks);
  await a.acknowledge(p.checkpointId, 'op', 0, acks[0]);
  await expectRejectsCode(a.acknowledge(p.checkpointId, 'op', 1, acks[1]), 'FENCED');
  expect(newer).toBeDefined();
  if (scenario.filesGone) {
    expect(await store.stat(`${JOB}/chk-1/_metadata`)).toBeNull();
    expect(await plain.listCompletedCheckpoints(JOB)).toEqual([]);
  } else {
    // Complete and intact: it stays (the newer instance may have adopted it) and resolves.
    expect(await store.stat(`${JOB}/chk-1/_metadata`)).not.toBeNull();
    expect((await plain.listCompletedCheckpoints(JOB)).map((c) => c.checkpointId)).toEqual([1]);
    await plain.resolve(`${JOB}/chk-1`);
  }
  // The newer instance's ids continue above the directory the old one wrote.
  expect(newer!.nextCheckpointId).toBeGreaterThan(1);
  expect((await runCheckpoint(newer!, subtasks())).info?.checkpointId).toBe(newer!.nextCheckpointId - 1);
  await newer!.shutdown('finish');
}
