import { channel, subscribe, unsubscribe } from 'node:diagnostics_channel';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CHECKPOINT_CHANNELS, type CheckpointEvent } from '../../src/checkpoint/checkpoint-stats.js';
import { CheckpointCoordinator, type PendingCheckpoint } from '../../src/checkpoint/coordinator.js';
import { decodeMetadata, encodeMetadata } from '../../src/checkpoint/metadata-codec.js';
import type { CheckpointMetadata } from '../../src/checkpoint/metadata.js';
import { ManualClock } from '../../src/checkpoint/scheduler-clock.js';
import { listJobCheckpoints } from '../../src/savepoint/checkpoint-dir.js';
import { formatReport, inspectMetadata } from '../../src/savepoint/inspect.js';
import { expectThrowsCode } from '../support/errors.js';
import { FakeIncrementalSubtask, tempStorage } from './coordinator-fixture.js';

const JOB = 'job-stats';
let storage: BlobCheckpointStorage;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ storage, cleanup } = await tempStorage());
});
afterEach(async () => {
  await cleanup();
});

const OPERATORS = [
  { operatorId: 'a', parallelism: 2, maxParallelism: 128 },
  { operatorId: 'b', parallelism: 3, maxParallelism: 128 },
];

function setup(statsHistorySize?: number) {
  const clock = new ManualClock(5_000);
  const coord = new CheckpointCoordinator({
    jobId: JOB,
    storage,
    backendName: 'fake',
    operators: OPERATORS,
    clock: () => clock.now(),
    statsHistorySize,
  });
  const tasks = OPERATORS.flatMap((op) =>
    Array.from({ length: op.parallelism }, (_, i) => new FakeIncrementalSubtask(op.operatorId, i, op.parallelism)),
  );
  return { clock, coord, tasks };
}

/** Every subtask acknowledges after `i + 1` ms, reporting durations derived from its index. */
async function checkpoint(
  coord: CheckpointCoordinator,
  clock: ManualClock,
  tasks: readonly FakeIncrementalSubtask[],
): Promise<PendingCheckpoint> {
  const p = coord.triggerCheckpoint();
  for (const [i, t] of tasks.entries()) {
    const ack = await t.snapshot(p);
    clock.advance(1);
    await coord.acknowledge(p.checkpointId, t.operatorId, t.subtaskIndex, {
      ...ack,
      metrics: { syncDurationMs: i, asyncDurationMs: 10 * i, alignmentDurationMs: 0.5 * i },
    });
  }
  return p;
}

describe('checkpoint statistics', () => {
  it('add up across subtasks: bytes written, reused and full size, file count, durations', async () => {
    const { clock, coord, tasks } = setup();
    await coord.restore();
    await checkpoint(coord, clock, tasks);
    const p = await checkpoint(coord, clock, tasks); // incremental: each subtask reuses its previous shared file
    const stats = coord.statistics.get(p.checkpointId)!;
    expect(stats.status).toBe('completed');
    expect(stats.numAcknowledged).toBe(5);
    expect(stats.subtasks.map((s) => [s.operatorId, s.subtaskIndex])).toEqual([
      ['a', 0],
      ['a', 1],
      ['b', 0],
      ['b', 1],
      ['b', 2],
    ]);
    const { metadata } = await storage.resolve(p.pointer);
    for (const s of stats.subtasks) {
      // what the handles say: exclusive + fresh shared written now, the previous shared file reused
      const handle = metadata.operators
        .find((o) => o.operatorId === s.operatorId)!
        .subtasks.find((x) => x.subtaskIndex === s.subtaskIndex)!.keyed[0] as unknown as {
        exclusive: { size: number };
        shared: Array<{ size: number }>;
      };
      expect(handle.shared).toHaveLength(2);
      expect(s).toMatchObject({
        bytesWritten: handle.exclusive.size + handle.shared[0].size,
        bytesReused: handle.shared[1].size,
        fullSize: handle.exclusive.size + handle.shared[0].size + handle.shared[1].size,
        fileCount: 3,
      });
    }
    const sum = (f: 'bytesWritten' | 'bytesReused' | 'fullSize' | 'fileCount'): number =>
      stats.subtasks.reduce((n, s) => n + s[f], 0);
    expect(stats).toMatchObject({
      bytesWritten: sum('bytesWritten'),
      bytesReused: sum('bytesReused'),
      fullSize: sum('fullSize'),
      fileCount: 15,
    });
    expect(stats.fullSize).toBe(stats.bytesWritten + stats.bytesReused);
    expect(stats.bytesReused).toBeGreaterThan(0);
    // end-to-end: trigger to the last acknowledgement (5 subtasks, 1 ms apart)
    expect({
      trigger: stats.triggerTimestamp,
      duration: stats.durationMs,
      latestAck: stats.latestAckTimestamp,
    }).toEqual({ trigger: 5_005, duration: 5, latestAck: 5_010 });
    expect(stats.subtasks.map((s) => [s.syncDurationMs, s.asyncDurationMs, s.alignmentDurationMs])).toEqual(
      [0, 1, 2, 3, 4].map((i) => [i, 10 * i, 0.5 * i]),
    );
    // the first checkpoint wrote everything: nothing reused
    expect(coord.statistics.get(1)).toMatchObject({ bytesReused: 0, fileCount: 10 });
    const snap = coord.statistics.snapshot();
    expect(snap.counts).toEqual({ triggered: 2, inProgress: 0, completed: 2, failed: 0, restored: 0 });
    expect(snap.latestCompleted?.checkpointId).toBe(2);
    expect(snap.latestCompleted?.size).toBe(coord.latestCompleted()?.size);
  });

  it('are recorded in _metadata and shown by inspect', async () => {
    const { clock, coord, tasks } = setup();
    await coord.restore();
    const p = await checkpoint(coord, clock, tasks);
    const { metadata } = await storage.resolve(p.pointer);
    const live = coord.statistics.get(p.checkpointId)!;
    expect(metadata.stats).toEqual({
      durationMs: live.durationMs,
      bytesWritten: live.bytesWritten,
      fullSize: live.fullSize,
      bytesReused: live.bytesReused,
      fileCount: live.fileCount,
      subtasks: live.subtasks,
    });
    const report = inspectMetadata(metadata, p.pointer);
    expect(report.stats).toEqual(metadata.stats);
    const text = formatReport(report);
    expect(text).toContain(
      `checkpoint statistics: duration 5 ms, written ${live.bytesWritten} B of ${live.fullSize} B (reused ${live.bytesReused} B), ${live.fileCount} files`,
    );
    expect(text).toMatch(/subtask 2 of b: sync 4 ms, async 40 ms, alignment 2 ms/);
    // `streamstate list` reads them too
    const listed = await listJobCheckpoints(storage, JOB);
    expect(listed.checkpoints.map((c) => c.stats)).toEqual([
      {
        durationMs: 5,
        bytesWritten: live.bytesWritten,
        fullSize: live.fullSize,
        bytesReused: 0,
        fileCount: live.fileCount,
      },
    ]);
  });

  it('old _metadata without stats still reads; malformed stats are CORRUPT naming the field', async () => {
    const { clock, coord, tasks } = setup();
    await coord.restore();
    const p = await checkpoint(coord, clock, tasks);
    const { metadata } = await storage.resolve(p.pointer);
    const { stats: _stats, ...old } = metadata;
    const decoded = decodeMetadata(encodeMetadata(old));
    expect(decoded.stats).toBeUndefined();
    expect(formatReport(inspectMetadata(decoded, 'x'))).not.toContain('checkpoint statistics');
    const bad = { ...metadata, stats: { ...metadata.stats!, fileCount: -1 } } as CheckpointMetadata;
    const body = Buffer.from(encodeMetadata(old));
    expect(body.length).toBeGreaterThan(0);
    expectThrowsCode(() => encodeMetadata(bad), 'INVALID_ARGUMENT');
    // a file written with stats whose body was damaged by hand: re-frame the JSON with a valid crc
    const { crc32 } = await import('node:zlib');
    const json = Buffer.from(
      JSON.stringify({ ...metadata, stats: { ...metadata.stats!, subtasks: [{ operatorId: 'a' }] } }),
    );
    const framed = Buffer.concat([body.subarray(0, 8), Buffer.alloc(4), json, Buffer.alloc(4)]);
    framed.writeUInt32BE(json.length, 8);
    framed.writeUInt32BE(crc32(json), 12 + json.length);
    const err = expectThrowsCode(() => decodeMetadata(framed), 'CORRUPT');
    expect(err.message).toContain('stats.subtasks[0].subtaskIndex');
  });

  it('a diagnostics_channel subscriber that subscribes after a garbage collection hears every event', async () => {
    // Node 20: a channel nobody holds is collected, and its finalizer deletes the entry of the newer
    // channel that a later subscribe(name) created, so the publisher's next channel(name) has no
    // subscribers. The library holds its channels, so this must not happen to its events.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const names = Object.values(CHECKPOINT_CHANNELS);
    for (const name of names) channel(name).publish(undefined); // no subscribers, no strong reference kept here
    await sleep(1); // weak references read in a job stay alive until it ends
    gc();
    const heard: string[] = [];
    const handlers = names.map((name) => {
      const fn = (message: unknown): void => {
        if ((message as CheckpointEvent).jobId === JOB) heard.push(name);
      };
      subscribe(name, fn);
      return [name, fn] as const;
    });
    try {
      for (let i = 0; i < 10; i++) await sleep(1); // finalizers of collected channels run in later tasks
      const { clock, coord, tasks } = setup();
      await coord.restore();
      await checkpoint(coord, clock, tasks);
      expect(heard).toEqual([
        CHECKPOINT_CHANNELS.triggered,
        ...Array(5).fill(CHECKPOINT_CHANNELS.acknowledged),
        CHECKPOINT_CHANNELS.completed,
      ]);
    } finally {
      for (const [name, fn] of handlers) unsubscribe(name, fn);
    }
  });

  it('listener and diagnostics_channel receive the same events, in order; failures carry their reason', async () => {
    const { clock, coord, tasks } = setup();
    const heard: CheckpointEvent[] = [];
    const published: Array<[string, CheckpointEvent]> = [];
    const handlers = Object.entries(CHECKPOINT_CHANNELS).map(([, name]) => {
      const fn = (message: unknown): void => void published.push([name, message as CheckpointEvent]);
      subscribe(name, fn);
      return [name, fn] as const;
    });
    const off = coord.addCheckpointListener((e) => heard.push(e));
    try {
      await coord.restore();
      const ok = await checkpoint(coord, clock, tasks);
      const failed = coord.triggerCheckpoint();
      await coord.acknowledge(failed.checkpointId, 'a', 0, await tasks[0].snapshot(failed));
      clock.advance(7);
      await coord.abort(failed.checkpointId, 'a task failed', 'DECLINED');
      off();
      await checkpoint(coord, clock, tasks); // not heard any more
      expect(heard.map((e) => e.type)).toEqual([
        'triggered',
        ...Array(5).fill('acknowledged'),
        'completed',
        'triggered',
        'acknowledged',
        'failed',
      ]);
      const last = heard.at(-1)!;
      expect(last.type === 'failed' && last.checkpoint).toMatchObject({
        checkpointId: failed.checkpointId,
        failureReason: 'DECLINED',
        durationMs: 7,
        numAcknowledged: 1,
      });
      expect(heard[6].type === 'completed' && heard[6].checkpoint.checkpointId).toBe(ok.checkpointId);
      // the channels carry the same event objects under their documented names
      const mine = published.filter(([, e]) => e.jobId === JOB);
      expect(mine.slice(0, heard.length).map(([name, e]) => [name, e])).toEqual(
        heard.map((e) => [CHECKPOINT_CHANNELS[e.type], e]),
      );
      expect(CHECKPOINT_CHANNELS.completed).toBe('streamstate:checkpoint:completed');
      // a restore is an event too, and counted
      const again = new CheckpointCoordinator({
        jobId: JOB,
        storage,
        backendName: 'fake',
        operators: OPERATORS,
        clock: () => clock.now(),
      });
      const restoredEvents: CheckpointEvent[] = [];
      again.addCheckpointListener((e) => restoredEvents.push(e));
      const plan = await again.restore();
      expect(restoredEvents).toEqual([
        {
          type: 'restored',
          jobId: JOB,
          restored: {
            checkpointId: plan!.checkpointId,
            pointer: plan!.pointer,
            kind: 'checkpoint',
            mode: 'claim',
            restoreTimestamp: clock.now(),
          },
        },
      ]);
      expect(again.statistics.snapshot()).toMatchObject({
        counts: { restored: 1 },
        latestRestored: { checkpointId: 3 },
      });
    } finally {
      for (const [name, fn] of handlers) unsubscribe(name, fn);
    }
  });

  it('a throwing listener does not break checkpointing (its error goes to onCleanupError)', async () => {
    const errors: unknown[] = [];
    const clock = new ManualClock(0);
    const coord = new CheckpointCoordinator({
      jobId: JOB,
      storage,
      backendName: 'fake',
      operators: OPERATORS,
      clock: () => clock.now(),
      onCleanupError: (e) => errors.push(e),
    });
    coord.addCheckpointListener(() => {
      throw new Error('listener bug');
    });
    await coord.restore();
    const tasks = OPERATORS.flatMap((op) =>
      Array.from({ length: op.parallelism }, (_, i) => new FakeIncrementalSubtask(op.operatorId, i, op.parallelism)),
    );
    await checkpoint(coord, clock, tasks);
    expect(coord.latestCompleted()?.checkpointId).toBe(1);
    expect(errors.length).toBe(7); // triggered, 5 acknowledged, completed
  });

  it('the history is bounded (newest first) and counts keep counting', async () => {
    const { clock, coord, tasks } = setup(3);
    await coord.restore();
    for (let n = 0; n < 5; n++) await checkpoint(coord, clock, tasks);
    const snap = coord.statistics.snapshot();
    expect(snap.history.map((c) => c.checkpointId)).toEqual([5, 4, 3]);
    expect(snap.counts).toMatchObject({ triggered: 5, completed: 5 });
    expect(
      () =>
        new CheckpointCoordinator({
          jobId: JOB,
          storage,
          backendName: 'fake',
          operators: OPERATORS,
          statsHistorySize: -1,
        }),
    ).toThrow(/statsHistorySize/);
  });

  it('metrics that are not non-negative numbers are refused before anything is recorded', async () => {
    const { coord, tasks } = setup();
    await coord.restore();
    const p = coord.triggerCheckpoint();
    const ack = await tasks[0].snapshot(p);
    const err = await coord
      .acknowledge(p.checkpointId, 'a', 0, { ...ack, metrics: { syncDurationMs: -1 } })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('metrics.syncDurationMs') });
    expect(coord.statistics.get(p.checkpointId)?.numAcknowledged).toBe(0);
  });
});
