import { afterEach, describe, expect, it } from 'vitest';
import type { ChangelogKeyedStateBackend } from '../../src/changelog/index.js';
import {
  ack0,
  bump,
  closeJobs,
  complete,
  expectDeletedAndAvoided,
  expectRestores,
  type Fixture,
  setup as setupJob,
  type Triggered,
  trigger,
} from './two-subtask-job.js';

/**
 * Past maxLogMemoryBytes (0 here) the log drops the bytes of chunks a preemptive upload holds, so
 * a long materialization no longer piles up GBs of log in memory. The upload (the chunk's spare)
 * is then all the log has of those records: when the checkpoint that took it is declined (the
 * coordinator deletes it), the next checkpoint must materialize afresh, never reference the
 * deleted file, and restore everything; a crash in between restores the last completed checkpoint.
 * The job (two-subtask-job.ts) keeps all state in subtask 0, which acknowledges the doomed
 * checkpoint; subtask 1 never does.
 */
afterEach(closeJobs);

const setup = (): Promise<Fixture> =>
  setupJob('log-memory', {
    materializationIntervalMs: Number.POSITIVE_INFINITY,
    preemptivePersistBytes: 200,
    maxLogMemoryBytes: 0,
  });

/** A completed first checkpoint, then changes uploaded early whose bytes the log let go, taken by a checkpoint acknowledged by subtask 0. */
async function declineSetup(): Promise<{ f: Fixture; first: Triggered; doomed: Triggered }> {
  const f = await setup();
  bump(f);
  const first = await trigger(f);
  await ack0(f, first);
  await complete(f, first);
  bump(f); // past 200 bytes: uploaded in the background; past the memory bound: bytes dropped
  const doomed = await trigger(f);
  await ack0(f, doomed);
  return { f, first, doomed };
}

describe('changelog: log memory bounded by maxLogMemoryBytes', () => {
  it('a declined checkpoint took the only copy of the changes: the next one materializes, completes and restores everything', async () => {
    const { f, first, doomed } = await declineSetup();
    await f.job.coordinator.abort(doomed.pending.checkpointId, 'test: declined', 'DECLINED');
    for (const b of f.job.backends) await b.notifyCheckpointAborted(doomed.pending.checkpointId);
    bump(f);
    const later = await trigger(f);
    await ack0(f, later);
    await complete(f, later);
    // The changes' bytes were gone and their only copy deleted: the later checkpoint materialized.
    expect((f.job.backends[0] as ChangelogKeyedStateBackend<string>).materializationId).toBe(
      later.pending.checkpointId,
    );
    await expectDeletedAndAvoided(f, doomed.handle, [first.handle], later.handle);
    await expectRestores(f, f.expected);
  });

  it('the abort notice comes late (after a later checkpoint was snapshotted) or never: the later one still completes and restores', async () => {
    const { f, first, doomed } = await declineSetup();
    bump(f);
    const later = await trigger(f); // 3 while 2 is pending, backend not told of any abort
    await f.job.coordinator.abort(doomed.pending.checkpointId, 'test: declined while 3 was in flight', 'DECLINED');
    await ack0(f, later);
    await complete(f, later);
    for (const b of f.job.backends) await b.notifyCheckpointAborted(doomed.pending.checkpointId); // late
    await expectDeletedAndAvoided(f, doomed.handle, [first.handle], later.handle);
    bump(f);
    const last = await trigger(f);
    await ack0(f, last);
    await complete(f, last);
    await expectRestores(f, f.expected);
  });

  it('a crash after the checkpoint took the spare (neither completed nor aborted) restores the last completed checkpoint', async () => {
    const f = await setup();
    bump(f);
    const first = await trigger(f);
    await ack0(f, first);
    await complete(f, first);
    const atFirst = new Map(f.expected);
    bump(f);
    const doomed = await trigger(f);
    await ack0(f, doomed);
    // The crash: the backends go away without a notice or an abort.
    await expectRestores(f, atFirst, true);
  });
});
