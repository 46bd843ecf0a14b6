import { posix } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FileStreamHandle, KeyedStateHandle } from '../../src/backend/handles.js';
import type { AcknowledgeResult } from '../../src/checkpoint/acknowledgement.js';
import type { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator, type PendingCheckpoint } from '../../src/checkpoint/coordinator.js';
import { resolveHandlePath } from '../../src/checkpoint/streams.js';
import { StreamStateError } from '../../src/errors.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { expectRejectsCode } from '../support/errors.js';
import { expectedJobFiles, jobFiles, tempStorage, writeFile } from './coordinator-fixture.js';

/**
 * Who owns which file (docs/ARCHITECTURE.md, "Files and their lifetime"): backends propose reuse
 * (SnapshotOptions.mayReuse), the coordinator's registry confirms; a checkpoint completes only when
 * every file it references is live; an ending checkpoint deletes only what it wrote. One subtask,
 * handles built by hand so each test references exactly the files it means to.
 */
const JOB = 'job-own';
let storage: BlobCheckpointStorage;
let cleanup: () => Promise<void>;
beforeEach(async () => {
  ({ storage, cleanup } = await tempStorage());
});
afterEach(async () => {
  await cleanup();
});

async function started(numRetained = 1): Promise<CheckpointCoordinator> {
  const coord = new CheckpointCoordinator({
    jobId: JOB,
    storage,
    backendName: 'fake',
    numRetained,
    operators: [{ operatorId: 'op', parallelism: 1, maxParallelism: 128 }],
  });
  await coord.restore();
  return coord;
}

function handle(files: readonly FileStreamHandle[]): KeyedStateHandle {
  return {
    type: 'fake-incremental',
    keyGroupRange: keyGroupRangeForSubtask(128, 1, 0).toJSON(),
    maxParallelism: 128,
    files,
  };
}

function ack(
  coord: CheckpointCoordinator,
  p: PendingCheckpoint,
  files: readonly FileStreamHandle[],
): Promise<AcknowledgeResult> {
  return coord.acknowledge(p.checkpointId, 'op', 0, { keyed: [handle(files)], operator: [] });
}

/** Writes a file through the checkpoint's streams. */
function upload(
  p: PendingCheckpoint,
  scope: 'shared' | 'exclusive',
  content = `${scope} of ${p.checkpointId}`,
): Promise<FileStreamHandle> {
  return writeFile(p.streamsFor('op', 0), scope, content);
}

/** The same file as a handle of checkpoint `to` would name it. */
function seenFrom(from: PendingCheckpoint, to: PendingCheckpoint, file: FileStreamHandle): FileStreamHandle {
  const key = resolveHandlePath(from.pointer, file.path);
  const path = key.startsWith(`${JOB}/shared/`)
    ? `../shared/${key.slice(`${JOB}/shared/`.length)}`
    : `../${key.slice(`${JOB}/`.length)}`;
  expect(posix.normalize(posix.join(to.pointer, path))).toBe(key);
  return { ...file, path };
}

/**
 * A reference the checkpoint may not complete with: refused when acknowledged (a path outside what
 * a checkpoint may reference at all is a typed error) or declined when the checkpoint completes.
 */
async function expectRefusedOrDeclined(result: Promise<AcknowledgeResult>): Promise<void> {
  try {
    expect(await result).toMatchObject({ status: 'rejected', reason: 'SHARED_STATE_NOT_LIVE' });
  } catch (err) {
    expect(err).toBeInstanceOf(StreamStateError);
  }
}

const exists = async (p: PendingCheckpoint, f: FileStreamHandle): Promise<boolean> =>
  (await storage.store.stat(resolveHandlePath(p.pointer, f.path))) !== null;

/** A completed checkpoint with one exclusive and one shared file. */
async function completedCheckpoint(
  coord: CheckpointCoordinator,
): Promise<{ p: PendingCheckpoint; exclusive: FileStreamHandle; shared: FileStreamHandle }> {
  const p = coord.triggerCheckpoint();
  const exclusive = await upload(p, 'exclusive');
  const shared = await upload(p, 'shared');
  expect(await ack(coord, p, [exclusive, shared])).toMatchObject({ status: 'completed' });
  return { p, exclusive, shared };
}

describe('completion check: a checkpoint completes only with live files', () => {
  it('reference §15.4: a backend that reuses a subsumed upload without asking is declined; only its own files go; the next one completes', async () => {
    const coord = await started(1);
    const m = await completedCheckpoint(coord); // 1: the backend will base on it
    const n = coord.triggerCheckpoint(); // 2: snapshotted before the notice of 1: its own copy
    const nFiles = [await upload(n, 'exclusive'), await upload(n, 'shared')];
    expect(await ack(coord, n, nFiles)).toMatchObject({ status: 'completed' }); // subsumes 1: its shared file is deleted
    expect(await exists(m.p, m.shared)).toBe(false);
    const before = await jobFiles(storage, JOB);

    const next = coord.triggerCheckpoint(); // 3: the backend, told of 1 but not of 2, references 1's upload
    expect(next.snapshotOptions('op', 0).mayReuse!(seenFrom(m.p, next, m.shared).path)).toBe(false); // had it asked
    const own = [await upload(next, 'exclusive'), await upload(next, 'shared')];
    const result = await ack(coord, next, [...own, seenFrom(m.p, next, m.shared)]);
    expect(result).toMatchObject({ status: 'rejected', checkpointId: 3, reason: 'SHARED_STATE_NOT_LIVE' });
    if (result.status !== 'rejected') throw new Error('unreachable');
    expect(result.message).toContain(resolveHandlePath(m.p.pointer, m.shared.path));
    expect(result.message).toMatch(/upload|uploads/);
    const err = await expectRejectsCode(next.completion, 'CHECKPOINT_DECLINED');
    expect(err).toMatchObject({ reason: 'SHARED_STATE_NOT_LIVE', checkpointId: 3 });
    expect(coord.completedCheckpoints().map((c) => c.checkpointId)).toEqual([2]);
    expect(await jobFiles(storage, JOB)).toEqual(before); // its own files gone, 2's intact
    await expectRejectsCode(storage.resolve(next.pointer), 'NOT_FOUND');

    const after = coord.triggerCheckpoint(); // 4: asks, re-uploads, completes
    const reuse = seenFrom(n, after, nFiles[1]);
    expect(after.snapshotOptions('op', 0).mayReuse!(reuse.path)).toBe(true);
    expect(await ack(coord, after, [await upload(after, 'exclusive'), reuse])).toMatchObject({ status: 'completed' });
    expect(await jobFiles(storage, JOB)).toEqual(await expectedJobFiles(storage, coord));
  });

  it("another checkpoint's private file is never accepted, and is not deleted by the declined checkpoint", async () => {
    const coord = await started(2);
    const c1 = await completedCheckpoint(coord);
    const p = coord.triggerCheckpoint();
    const borrowed = seenFrom(c1.p, p, c1.exclusive);
    expect(p.snapshotOptions('op', 0).mayReuse!(borrowed.path)).toBe(false);
    await expectRefusedOrDeclined(ack(coord, p, [await upload(p, 'shared'), borrowed]));
    await coord.abort(p.checkpointId, 'refused'); // when refused at acknowledge, the runtime aborts it
    expect(coord.completedCheckpoints().map((c) => c.checkpointId)).toEqual([1]);
    expect(await exists(c1.p, c1.exclusive)).toBe(true);
    expect(await jobFiles(storage, JOB)).toEqual(await expectedJobFiles(storage, coord));
  });

  it('a shared file no checkpoint wrote is accepted only if it exists with the recorded size (a preemptive upload), and is then registered', async () => {
    const coord = await started(1);
    const background = storage.checkpointStreams(JOB, 0); // what changelog backends upload early through
    const early = await writeFile(background, 'shared', 'uploaded before any checkpoint took it');
    const p = coord.triggerCheckpoint();
    const asSeen = seenFrom({ pointer: `${JOB}/chk-0` } as PendingCheckpoint, p, early);
    expect(await ack(coord, p, [asSeen])).toMatchObject({ status: 'completed' });
    expect(coord.registry.isLive(resolveHandlePath(p.pointer, asSeen.path))).toBe(true);

    const gone = await writeFile(background, 'shared', 'deleted before the checkpoint completes');
    const wrongSize = await writeFile(background, 'shared', 'size differs');
    const q = coord.triggerCheckpoint();
    await storage.store.delete([resolveHandlePath(`${JOB}/chk-0`, gone.path)]);
    const result = await ack(coord, q, [
      { ...seenFrom({ pointer: `${JOB}/chk-0` } as PendingCheckpoint, q, gone) },
      { ...seenFrom({ pointer: `${JOB}/chk-0` } as PendingCheckpoint, q, wrongSize), size: 3 },
    ]);
    expect(result).toMatchObject({ status: 'rejected', reason: 'SHARED_STATE_NOT_LIVE' });
    expect(coord.completedCheckpoints().map((c) => c.checkpointId)).toEqual([1]);
  });

  it('no-claim restored files are never reused nor referenced; the restored snapshot is untouched', async () => {
    const first = await started(1);
    const old = await completedCheckpoint(first);
    await first.shutdown('finish');
    const oldFiles = await jobFiles(storage, JOB);
    const coord = new CheckpointCoordinator({
      jobId: 'job-new',
      storage,
      backendName: 'fake',
      operators: [{ operatorId: 'op', parallelism: 1, maxParallelism: 128 }],
    });
    expect((await coord.restore(old.p.pointer))?.mode).toBe('no-claim');
    const p = coord.triggerCheckpoint();
    expect(p.full).toBe(true);
    const foreign = `../../${old.p.pointer}/${old.exclusive.path}`;
    expect(p.snapshotOptions('op', 0).mayReuse!(foreign)).toBe(false);
    await expectRefusedOrDeclined(ack(coord, p, [{ ...old.exclusive, path: foreign }]));
    await coord.abort(p.checkpointId, 'refused');
    expect(coord.completedCheckpoints()).toEqual([]);
    expect(await jobFiles(storage, JOB)).toEqual(oldFiles);
  });
});

describe('mayReuse: a yes is a promise', () => {
  it('a file answered yes stays until the checkpoint completes, though the checkpoint that used it is subsumed meanwhile', async () => {
    const coord = await started(2);
    const c1 = await completedCheckpoint(coord); // F1, last used by 1
    await completedCheckpoint(coord); // 2: does not use F1; retained [1, 2]
    const q3 = coord.triggerCheckpoint();
    const q3Files = [await upload(q3, 'shared')];
    const p4 = coord.triggerCheckpoint();
    const f1 = seenFrom(c1.p, p4, c1.shared);
    expect(p4.snapshotOptions('op', 0).mayReuse!(f1.path)).toBe(true); // lowest retained is 1
    expect(await ack(coord, q3, q3Files)).toMatchObject({ status: 'completed' }); // retained [2, 3]: 1 is subsumed
    expect(coord.completedCheckpoints().map((c) => c.checkpointId)).toEqual([2, 3]);
    expect(await exists(c1.p, c1.shared)).toBe(true); // promised to 4

    // A checkpoint triggered now may not rely on F1: only 4's promise keeps it.
    const p5 = coord.triggerCheckpoint();
    expect(p5.snapshotOptions('op', 0).mayReuse!(seenFrom(c1.p, p5, c1.shared).path)).toBe(false);
    await coord.abort(p5.checkpointId, 'not needed');

    expect(await ack(coord, p4, [await upload(p4, 'exclusive'), f1])).toMatchObject({ status: 'completed' });
    expect(await exists(c1.p, c1.shared)).toBe(true);
    expect(await jobFiles(storage, JOB)).toEqual(await expectedJobFiles(storage, coord));
    const p6 = coord.triggerCheckpoint();
    expect(p6.snapshotOptions('op', 0).mayReuse!(seenFrom(c1.p, p6, c1.shared).path)).toBe(true); // 4 uses it now
  });

  it('savepoints, full checkpoints, ended checkpoints and paths outside the storage get no', async () => {
    const coord = await started(1);
    const c1 = await completedCheckpoint(coord);
    const sp = coord.triggerSavepoint();
    expect(sp.snapshotOptions('op', 0).mayReuse!(`../${JOB}/shared/${c1.shared.path.split('/').pop()}`)).toBe(false);
    const p = coord.triggerCheckpoint();
    const path = seenFrom(c1.p, p, c1.shared).path;
    const mayReuse = p.snapshotOptions('op', 0).mayReuse!;
    expect(mayReuse(path)).toBe(true);
    expect(mayReuse('../../../../etc/passwd')).toBe(false);
    expect(mayReuse('/abs')).toBe(false);
    await coord.abort(p.checkpointId, 'test');
    expect(mayReuse(path)).toBe(false);
  });
});

describe('deleting: a checkpoint that ends deletes only what it wrote', () => {
  it('an abort keeps an upload another in-flight checkpoint acknowledged; that one completes and keeps it', async () => {
    const coord = await started(1);
    await completedCheckpoint(coord);
    const p2 = coord.triggerCheckpoint();
    const x = await upload(p2, 'shared'); // 2's upload
    const p3 = coord.triggerCheckpoint();
    expect(await ack(coord, p3, [await upload(p3, 'exclusive'), seenFrom(p2, p3, x)])).toMatchObject({
      status: 'completed',
    }); // reuses it unconfirmed (changelog-style)
    // 3 completed first: 2 was subsumed, and x stays (3 references it).
    expect(await expectRejectsCode(p2.completion, 'CHECKPOINT_DECLINED')).toMatchObject({ reason: 'SUBSUMED' });
    expect(await exists(p2, x)).toBe(true);
    expect(await jobFiles(storage, JOB)).toEqual(await expectedJobFiles(storage, coord));
  });

  it('an abort keeps what another pending checkpoint acknowledged and deletes what nobody did; a later reference to a deleted upload is declined', async () => {
    const coord = new CheckpointCoordinator({
      jobId: JOB,
      storage,
      backendName: 'fake',
      operators: [{ operatorId: 'op', parallelism: 2, maxParallelism: 128 }],
    });
    await coord.restore();
    const ackSubtask = (p: PendingCheckpoint, i: number, files: FileStreamHandle[]) =>
      coord.acknowledge(p.checkpointId, 'op', i, {
        keyed: [
          {
            type: 'fake-incremental',
            keyGroupRange: keyGroupRangeForSubtask(128, 2, i).toJSON(),
            maxParallelism: 128,
            files,
          },
        ],
        operator: [],
      });
    const p1 = coord.triggerCheckpoint();
    const kept = await upload(p1, 'shared', 'kept');
    const dropped = await upload(p1, 'shared', 'dropped');
    const p2 = coord.triggerCheckpoint();
    expect(await ackSubtask(p2, 0, [seenFrom(p1, p2, kept)])).toEqual({ status: 'waiting', missing: 1 });
    await coord.abort(p1.checkpointId, 'test');
    expect(await exists(p1, kept)).toBe(true); // 2 acknowledged it
    expect(await exists(p1, dropped)).toBe(false); // 1 wrote it and nobody acknowledged it
    const result = await ackSubtask(p2, 1, [seenFrom(p1, p2, dropped)]);
    expect(result).toMatchObject({ status: 'rejected', reason: 'SHARED_STATE_NOT_LIVE' });
    expect(coord.completedCheckpoints()).toEqual([]);
    // 2 took `kept` over when 1 ended: it goes with 2.
    expect(await jobFiles(storage, JOB)).toEqual([]);
  });

  it('a late duplicate acknowledgement of a completed checkpoint deletes nothing it uses', async () => {
    const coord = await started(1);
    const c1 = await completedCheckpoint(coord);
    const files = await jobFiles(storage, JOB);
    expect(await ack(coord, c1.p, [c1.exclusive, c1.shared])).toMatchObject({
      status: 'rejected',
      reason: 'ALREADY_COMPLETED',
    });
    expect(await jobFiles(storage, JOB)).toEqual(files);
    const sp = coord.triggerSavepoint();
    const spFile = await upload(sp, 'exclusive');
    expect(await ack(coord, sp, [spFile])).toMatchObject({ status: 'completed' });
    expect(await ack(coord, sp, [spFile])).toMatchObject({ status: 'rejected', reason: 'ALREADY_COMPLETED' });
    expect(await exists(sp, spFile)).toBe(true);
  });

  it('a backend cannot delete through its streams a file a completed checkpoint references', async () => {
    const coord = await started(1);
    const c1 = await completedCheckpoint(coord);
    const p = coord.triggerCheckpoint();
    const mine = await upload(p, 'shared');
    await p.streamsFor('op', 0).discardFiles([seenFrom(c1.p, p, c1.shared), mine]);
    expect(await exists(c1.p, c1.shared)).toBe(true);
    expect(await exists(p, mine)).toBe(false);
  });

  it('a late acknowledgement deletes the uploads its checkpoint wrote, never a file a retained checkpoint uses', async () => {
    const coord = await started(1);
    const c1 = await completedCheckpoint(coord);
    const p = coord.triggerCheckpoint();
    const early = await upload(p, 'shared', 'before the abort');
    await coord.abort(p.checkpointId, 'test');
    expect(await exists(p, early)).toBe(false); // its streams wrote it: gone with the abort
    const late = await upload(p, 'shared', 'after the abort'); // the snapshot ran on
    expect(await exists(p, late)).toBe(true);
    const result = await ack(coord, p, [late, seenFrom(c1.p, p, c1.shared)]);
    expect(result).toMatchObject({ status: 'rejected', reason: 'ABORTED', checkpointId: p.checkpointId });
    expect(await exists(p, late)).toBe(false);
    expect(await exists(c1.p, c1.shared)).toBe(true);
    expect(await jobFiles(storage, JOB)).toEqual(await expectedJobFiles(storage, coord));
  });
});

describe('files kept for an in-flight checkpoint are released when it ends (lifecycle finding F1)', () => {
  // Checkpoint 3 is triggered while 1 is the lowest retained: it may reuse 1's shared file, so
  // when 2 completes and subsumes 1 that file stays. Once 3 ends without completing, nothing can
  // reference it any more: however 3 ends, the job's files are exactly what retained checkpoints use.
  const endings: Record<string, (coord: CheckpointCoordinator, p: PendingCheckpoint) => Promise<unknown>> = {
    abort: (coord, p) => coord.abort(p.checkpointId, 'test'),
    'shutdown(finish)': (coord) => coord.shutdown('finish'),
    'shutdown(cancel), retained kept': (coord) => coord.shutdown('cancel'),
  };
  for (const [name, end] of Object.entries(endings)) {
    it(`${name}: the subsumed checkpoint's shared file goes, the retained one's stays`, async () => {
      const coord = await started(1);
      const c1 = await completedCheckpoint(coord);
      const p2 = coord.triggerCheckpoint();
      const p3 = coord.triggerCheckpoint();
      const s2 = await upload(p2, 'shared');
      expect(await ack(coord, p2, [s2])).toMatchObject({ status: 'completed' });
      expect(await exists(c1.p, c1.shared)).toBe(true); // 3 may still reuse it
      await end(coord, p3);
      expect(await exists(c1.p, c1.shared)).toBe(false);
      expect(await exists(p2, s2)).toBe(true);
      expect(await jobFiles(storage, JOB)).toEqual(await expectedJobFiles(storage, coord));
    });
  }

  it('the checkpoint that may reuse it still completes with it before it ends', async () => {
    const coord = await started(1);
    const c1 = await completedCheckpoint(coord);
    const p2 = coord.triggerCheckpoint();
    const p3 = coord.triggerCheckpoint();
    expect(await ack(coord, p2, [await upload(p2, 'shared')])).toMatchObject({ status: 'completed' });
    expect(await ack(coord, p3, [seenFrom(c1.p, p3, c1.shared)])).toMatchObject({ status: 'completed' });
    expect(await exists(c1.p, c1.shared)).toBe(true);
    expect(await jobFiles(storage, JOB)).toEqual(await expectedJobFiles(storage, coord));
  });
});
