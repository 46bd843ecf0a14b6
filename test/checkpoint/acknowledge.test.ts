import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { KeyedStateHandle } from '../../src/backend/handles.js';
import type { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator, type SubtaskAck } from '../../src/checkpoint/coordinator.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { expectRejectsCode } from '../support/errors.js';
import { tempStorage } from './coordinator-fixture.js';

/** Issue 12, "Acknowledgements": what acknowledge() accepts, refuses and reports. */
const JOB = 'job-ack';
let storage: BlobCheckpointStorage;
let cleanup: () => Promise<void>;
beforeEach(async () => {
  ({ storage, cleanup } = await tempStorage());
});
afterEach(async () => {
  await cleanup();
});

async function started(parallelism: number, maxParallelism = 128): Promise<CheckpointCoordinator> {
  const coord = new CheckpointCoordinator({
    jobId: JOB,
    storage,
    backendName: 'fake',
    operators: [{ operatorId: 'op', parallelism, maxParallelism }],
  });
  await coord.restore();
  return coord;
}

/** A keyed handle with no files, of any type, for key groups `range`. */
function keyed(
  range: { start: number; end: number },
  type = 'fake',
  maxParallelism = 128,
  extra: Record<string, unknown> = {},
): SubtaskAck {
  const h = { type, keyGroupRange: range, maxParallelism, ...extra } as KeyedStateHandle;
  return { keyed: [h], operator: [] };
}
const rangeOf = (parallelism: number, i: number, maxParallelism = 128) =>
  keyGroupRangeForSubtask(maxParallelism, parallelism, i).toJSON();

describe('acknowledge: results', () => {
  it('waiting (with the number still missing), then completed', async () => {
    const coord = await started(3);
    const p = coord.triggerCheckpoint();
    expect(await coord.acknowledge(p.checkpointId, 'op', 2, keyed(rangeOf(3, 2)))).toEqual({
      status: 'waiting',
      missing: 2,
    });
    expect(await coord.acknowledge(p.checkpointId, 'op', 0, { keyed: [null], operator: [null] })).toEqual({
      status: 'waiting',
      missing: 1,
    });
    const done = await coord.acknowledge(p.checkpointId, 'op', 1, keyed(rangeOf(3, 1)));
    expect(done).toMatchObject({ status: 'completed', checkpoint: { checkpointId: 1, pointer: `${JOB}/chk-1` } });
  });

  it('late acknowledgements are not errors: rejected with the reason the checkpoint ended', async () => {
    const coord = await started(2);
    const aborted = coord.triggerCheckpoint();
    await coord.abort(aborted.checkpointId, 'operator request');
    const subsumed = coord.triggerCheckpoint();
    const completed = coord.triggerCheckpoint();
    for (const i of [0, 1]) await coord.acknowledge(completed.checkpointId, 'op', i, keyed(rangeOf(2, i)));
    const stopped = coord.triggerCheckpoint();
    await coord.shutdown('cancel');

    const late = (id: number) => coord.acknowledge(id, 'op', 0, keyed(rangeOf(2, 0)));
    expect(await late(aborted.checkpointId)).toMatchObject({
      status: 'rejected',
      checkpointId: 1,
      reason: 'ABORTED',
      message: expect.stringContaining('operator request'),
    });
    expect(await late(subsumed.checkpointId)).toMatchObject({ status: 'rejected', reason: 'SUBSUMED' });
    expect(await late(completed.checkpointId)).toMatchObject({ status: 'rejected', reason: 'ALREADY_COMPLETED' });
    expect(await late(stopped.checkpointId)).toMatchObject({ status: 'rejected', reason: 'JOB_STOPPED' });
    for (const p of [aborted, subsumed, stopped])
      expect(await expectRejectsCode(p.completion, 'CHECKPOINT_DECLINED')).toHaveProperty('reason');
  });
});

describe('acknowledge: refused with a typed error (and not recorded)', () => {
  it('an id this coordinator never triggered: CHECKPOINT_NOT_FOUND, also ids of an earlier run', async () => {
    const first = await started(1);
    const p = first.triggerCheckpoint();
    await first.acknowledge(p.checkpointId, 'op', 0, keyed(rangeOf(1, 0)));
    for (const id of [0, -1, 1.5, 2, 99, Number.NaN])
      await expectRejectsCode(first.acknowledge(id, 'op', 0, keyed(rangeOf(1, 0))), 'CHECKPOINT_NOT_FOUND');
    const second = await started(1);
    expect(second.nextCheckpointId).toBe(2);
    const err = await expectRejectsCode(second.acknowledge(1, 'op', 0, keyed(rangeOf(1, 0))), 'CHECKPOINT_NOT_FOUND');
    expect(err.message).toContain('none yet');
  });

  it('an unknown operator or subtask: INVALID_ARGUMENT', async () => {
    const coord = await started(2);
    const p = coord.triggerCheckpoint();
    await expectRejectsCode(coord.acknowledge(p.checkpointId, 'nope', 0, keyed(rangeOf(2, 0))), 'INVALID_ARGUMENT');
    for (const i of [2, -1, 0.5])
      await expectRejectsCode(coord.acknowledge(p.checkpointId, 'op', i, keyed(rangeOf(2, 0))), 'INVALID_ARGUMENT');
    await expectRejectsCode(coord.acknowledge(99, 'nope', 0, keyed(rangeOf(2, 0))), 'INVALID_ARGUMENT');
  });

  it('a duplicate, also while the checkpoint is completing: DUPLICATE_ACKNOWLEDGEMENT; the first one stands', async () => {
    const coord = await started(2);
    const p = coord.triggerCheckpoint();
    await coord.acknowledge(p.checkpointId, 'op', 0, keyed(rangeOf(2, 0)));
    await expectRejectsCode(
      coord.acknowledge(p.checkpointId, 'op', 0, keyed(rangeOf(2, 0))),
      'DUPLICATE_ACKNOWLEDGEMENT',
    );
    const last = coord.acknowledge(p.checkpointId, 'op', 1, keyed(rangeOf(2, 1)));
    await expectRejectsCode(
      coord.acknowledge(p.checkpointId, 'op', 1, keyed(rangeOf(2, 1))),
      'DUPLICATE_ACKNOWLEDGEMENT',
    );
    expect(await last).toMatchObject({ status: 'completed' });
    const { metadata } = await storage.resolve(p.pointer);
    expect(metadata.operators[0].subtasks.map((s) => s.subtaskIndex)).toEqual([0, 1]);
  });

  it("the README's old snippet (parallelism 4 declared, subtask 0 acknowledging all 128 key groups) is refused", async () => {
    const coord = await started(4);
    const p = coord.triggerCheckpoint();
    const err = await expectRejectsCode(
      coord.acknowledge(p.checkpointId, 'op', 0, keyed({ start: 0, end: 127 }, 'key-groups', 128, { blocks: [] })),
      'INVALID_ARGUMENT',
    );
    expect(err.message).toContain('owns key groups 0-31');
    expect(err.message).toContain('keyGroupRangeForSubtask(128, 4, i)');
  });

  it('four subtasks acknowledging the same range: only subtask 0 is accepted', async () => {
    const coord = await started(4);
    const p = coord.triggerCheckpoint();
    expect(await coord.acknowledge(p.checkpointId, 'op', 0, keyed(rangeOf(4, 0)))).toEqual({
      status: 'waiting',
      missing: 3,
    });
    for (const i of [1, 2, 3])
      await expectRejectsCode(coord.acknowledge(p.checkpointId, 'op', i, keyed(rangeOf(4, 0))), 'INVALID_ARGUMENT');
    expect(coord.pendingCheckpoints().map((x) => x.checkpointId)).toEqual([p.checkpointId]);
    for (const i of [1, 2, 3]) await coord.acknowledge(p.checkpointId, 'op', i, keyed(rangeOf(4, i)));
    expect(coord.latestCompleted()?.checkpointId).toBe(p.checkpointId);
  });

  it('every handle type is checked: changelog and LevelDB handles, a key-groups handle with a block of another subtask, a missing range', async () => {
    const coord = await started(2);
    const p = coord.triggerCheckpoint();
    const ack = (a: SubtaskAck) => coord.acknowledge(p.checkpointId, 'op', 1, a);
    await expectRejectsCode(
      ack(keyed({ start: 0, end: 127 }, 'changelog', 128, { materialized: [], logs: [] })),
      'INVALID_ARGUMENT',
    );
    await expectRejectsCode(ack(keyed({ start: 64, end: 126 }, 'leveldb-incremental')), 'INVALID_ARGUMENT');
    await expectRejectsCode(
      ack(keyed(rangeOf(2, 1), 'key-groups', 128, { blocks: [{ keyGroup: 3, offset: 0, length: 1, crc32: 0 }] })),
      'INVALID_ARGUMENT',
    );
    await expectRejectsCode(
      ack({ keyed: [{ type: 'fake', maxParallelism: 128 } as unknown as KeyedStateHandle], operator: [] }),
      'INVALID_ARGUMENT',
    );
    // A changelog handle may carry wider ranges inside after rescaling (its restore reads only its own range).
    expect(
      await ack(
        keyed(rangeOf(2, 1), 'changelog', 128, {
          materialized: [{ type: 'key-groups', keyGroupRange: { start: 0, end: 127 }, blocks: [] }],
          logs: [],
        }),
      ),
    ).toEqual({
      status: 'waiting',
      missing: 1,
    });
  });

  it('property: subtask i of any parallelism is accepted with exactly keyGroupRangeForSubtask(maxP, p, i)', async () => {
    let runs = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 12 }).chain((parallelism) =>
          fc.record({
            parallelism: fc.constant(parallelism),
            maxParallelism: fc.integer({ min: parallelism, max: 300 }),
            i: fc.integer({ min: 0, max: parallelism - 1 }),
            j: fc.integer({ min: 0, max: parallelism - 1 }),
            shift: fc.integer({ min: -2, max: 2 }),
          }),
        ),
        async ({ parallelism, maxParallelism, i, j, shift }) => {
          const coord = new CheckpointCoordinator({
            jobId: `${JOB}-${++runs}`,
            storage,
            backendName: 'fake',
            operators: [{ operatorId: 'op', parallelism, maxParallelism }],
          });
          await coord.restore();
          const p = coord.triggerCheckpoint();
          const r = rangeOf(parallelism, j, maxParallelism);
          const range = { start: r.start, end: r.end + shift };
          const attempt = coord.acknowledge(p.checkpointId, 'op', i, keyed(range, 'fake', maxParallelism));
          if (i === j && shift === 0) expect((await attempt).status).not.toBe('rejected');
          else await expectRejectsCode(attempt, 'INVALID_ARGUMENT');
          await coord.shutdown('cancel');
        },
      ),
      { numRuns: 60 },
    );
  });
});
