import { afterEach, describe, expect, it } from 'vitest';
import {
  ack0,
  closeJobs,
  complete,
  expectDeletedAndAvoided,
  expectRestores,
  type Fixture,
  filesOf,
  bump,
  setup as setupJob,
  trigger,
} from './two-subtask-job.js';

/**
 * Regression (docs/PROOF.md, crash suite item 2): a segment or materialization uploaded for
 * checkpoint N was handed to later checkpoints before N was confirmed. When N was aborted the
 * coordinator deleted its files, and a later checkpoint completed referencing a missing file. The
 * backend here learns of the abort late or never (as with a subsumed checkpoint): it must stay
 * correct without that notification. The job (two-subtask-job.ts) keeps all state in subtask 0,
 * which acknowledges the doomed checkpoint; subtask 1 never does.
 */
afterEach(closeJobs);

/** No timed materialization; by default no preemptive uploads: every segment is uploaded by a checkpoint. */
const setup = (preemptivePersistBytes = Number.MAX_SAFE_INTEGER): Promise<Fixture> =>
  setupJob('reuse', { materializationIntervalMs: Number.POSITIVE_INFINITY, preemptivePersistBytes });

describe('changelog: uploads of an aborted checkpoint are never reused', () => {
  it('a checkpoint aborted after its segment upload (backend never told): the next one re-uploads, completes and restores', async () => {
    const f = await setup();
    bump(f, f.keys);
    const first = await trigger(f);
    await ack0(f, first);
    await complete(f, first); // 1: confirmed

    bump(f, f.keys.slice(0, 10));
    const doomed = await trigger(f); // 2: uploads a segment of the new records
    await ack0(f, doomed);
    await f.job.coordinator.abort(doomed.pending.checkpointId, 'test: aborted after the upload'); // deletes that segment

    bump(f, f.keys.slice(10, 20));
    const later = await trigger(f); // 3: must not reference 2's segment
    await ack0(f, later);
    await complete(f, later);
    await expectDeletedAndAvoided(f, doomed.handle, [first.handle], later.handle);
    await expectRestores(f);
  });

  it('a later checkpoint snapshotted before the abort (the notification comes too late) references its own copy', async () => {
    const f = await setup();
    bump(f, f.keys);
    const first = await trigger(f);
    await ack0(f, first);
    await complete(f, first);

    bump(f, f.keys.slice(0, 10));
    const doomed = await trigger(f); // 2
    bump(f, f.keys.slice(5, 15));
    const later = await trigger(f); // 3, snapshotted while 2 is pending
    await ack0(f, doomed);
    await f.job.coordinator.abort(doomed.pending.checkpointId, 'test: aborted while 3 was in flight'); // 3 not acknowledged yet
    await ack0(f, later);
    await complete(f, later);
    await f.job.backends[0].notifyCheckpointAborted(doomed.pending.checkpointId); // late: no harm either
    await expectDeletedAndAvoided(f, doomed.handle, [first.handle], later.handle);

    // And the chain goes on: the next checkpoint shares 3's confirmed copies.
    bump(f, f.keys.slice(20, 25));
    const next = await trigger(f);
    await ack0(f, next);
    await complete(f, next);
    const laterFiles = new Set(filesOf(later.handle));
    expect(filesOf(next.handle).filter((file) => laterFiles.has(file)).length).toBeGreaterThan(0);
    await expectRestores(f);
  });

  it('a materialization written by an aborted checkpoint is not referenced again (backend never told); a new one is taken', async () => {
    const f = await setup();
    const b0 = f.job.backends[0] as unknown as {
      requestMaterialization(): void;
      awaitMaterialization(): Promise<void>;
      materializationId: number;
    };
    bump(f, f.keys);
    const first = await trigger(f);
    await ack0(f, first);
    await complete(f, first);

    bump(f, f.keys.slice(0, 10));
    b0.requestMaterialization();
    const doomed = await trigger(f); // 2 materializes and references its materialization
    const materialization = (doomed.handle as unknown as { materializationId: number }).materializationId;
    expect(materialization).toBe(doomed.pending.checkpointId);
    await ack0(f, doomed);
    await f.job.coordinator.abort(doomed.pending.checkpointId, 'test: aborted after writing the materialization');

    bump(f, f.keys.slice(20, 30));
    const later = await trigger(f); // 3: must not reference it (the coordinator no longer vouches for its files)
    expect((later.handle as unknown as { materializationId: number }).materializationId).not.toBe(materialization);
    await ack0(f, later);
    await complete(f, later);
    await expectDeletedAndAvoided(f, doomed.handle, [first.handle], later.handle);

    bump(f, f.keys.slice(0, 5));
    b0.requestMaterialization();
    const next = await trigger(f);
    await ack0(f, next);
    await complete(f, next);
    expect(b0.materializationId).toBe(next.pending.checkpointId);
    await expectRestores(f);
  });

  it('a preemptive upload is taken by one checkpoint only; when that one is aborted, the next re-uploads', async () => {
    const f = await setup(200);
    bump(f, f.keys);
    const first = await trigger(f);
    await ack0(f, first);
    await complete(f, first);

    bump(f, f.keys); // past 200 bytes: uploaded in the background, referenced by no checkpoint yet
    const doomed = await trigger(f); // 2 takes the preemptive copies
    const later = await trigger(f); // 3 while 2 is pending: copies of its own
    const confirmed = new Set(filesOf(first.handle));
    const doomedOwn = new Set(filesOf(doomed.handle).filter((file) => !confirmed.has(file)));
    expect(doomedOwn.size).toBeGreaterThan(0);
    expect(filesOf(later.handle).filter((file) => doomedOwn.has(file))).toEqual([]);
    await ack0(f, doomed);
    await f.job.coordinator.abort(doomed.pending.checkpointId, 'test: aborted after taking the preemptive upload');
    await ack0(f, later);
    await complete(f, later);
    await expectDeletedAndAvoided(f, doomed.handle, [first.handle], later.handle);
    await expectRestores(f);
  });
});
