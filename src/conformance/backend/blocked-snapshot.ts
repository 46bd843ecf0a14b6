import type { BackendHarness, SnapshotRun } from './harness.js';
import { expectRejectsCode, within } from './expect-code.js';
import { GatedStreamFactory } from './gated-streams.js';

/** A snapshot of one backend held in its I/O by a closed gate. */
export interface BlockedSnapshot {
  readonly run: SnapshotRun;
  readonly gated: GatedStreamFactory;
}

/** Starts a snapshot of `backend` (filled enough to go to a file) and returns once its I/O is held. */
export async function startBlockedSnapshot(h: BackendHarness, backend: unknown): Promise<BlockedSnapshot> {
  let gated: GatedStreamFactory | undefined;
  const run = await h.startSnapshot([backend], { wrapStreams: (inner) => (gated = new GatedStreamFactory(inner)) });
  if (!gated) throw new Error('stream factory was not wrapped');
  await within(Promise.race([gated.reached, run.done[0]]), 10_000, 'the snapshot never wrote');
  return { run, gated };
}

/**
 * Calls `cancel` (close(), an abort notice) while the snapshot is held, then opens the gate: the
 * snapshot must fail with SNAPSHOT_CANCELLED and `cancel` must settle. `what` names the call in
 * failure messages.
 */
export async function expectCancelledWhileBlocked(
  { run, gated }: BlockedSnapshot,
  cancel: () => Promise<void>,
  what: string,
): Promise<void> {
  const cancelling = cancel();
  // Streams abort blocked writes when discarded; uploads that cannot be aborted finish late.
  await new Promise((r) => setTimeout(r, 50));
  gated.gate.open();
  await within(
    expectRejectsCode(run.done[0], 'SNAPSHOT_CANCELLED'),
    10_000,
    `${what} did not cancel the blocked snapshot`,
  );
  await within(cancelling, 10_000, `${what} hung`);
}
