import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { KeyedStateHandle } from '../../src/backend/handles.js';
import type { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator, type CheckpointCoordinatorOptions } from '../../src/checkpoint/coordinator.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import { StreamStateError } from '../../src/errors.js';
import { HeapOperatorStateBackend } from '../../src/operator/index.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { expectRejectsCode, expectThrowsCode } from '../support/errors.js';
import {
  expectedJobFiles,
  FakeIncrementalSubtask,
  jobFiles,
  runCheckpoint,
  tempStorage,
  writeFile,
} from './coordinator-fixture.js';

const JOB = 'job-a';
let storage: BlobCheckpointStorage;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ storage, cleanup } = await tempStorage());
});
afterEach(async () => {
  await cleanup();
});

function coordinator(opts: Partial<CheckpointCoordinatorOptions> = {}, parallelism = 2): CheckpointCoordinator {
  return new CheckpointCoordinator({
    jobId: JOB,
    storage,
    backendName: 'fake',
    operators: [{ operatorId: 'op', parallelism, maxParallelism: 128 }],
    ...opts,
  });
}

function subtasks(parallelism = 2, operatorId = 'op'): FakeIncrementalSubtask[] {
  return Array.from({ length: parallelism }, (_, i) => new FakeIncrementalSubtask(operatorId, i, parallelism));
}

describe('CheckpointCoordinator retention', () => {
  it.each([1, 3])(
    'numRetained %i: only the retained checkpoints and the shared files they use remain',
    async (numRetained) => {
      const coord = coordinator({ numRetained });
      expect(await coord.restore()).toBeNull();
      const tasks = subtasks();
      for (let n = 1; n <= 6; n++) {
        const { info } = await runCheckpoint(coord, tasks);
        expect(info?.checkpointId).toBe(n);
        const retained = coord.completedCheckpoints().map((c) => c.checkpointId);
        expect(retained).toEqual(
          Array.from({ length: Math.min(n, numRetained) }, (_, k) => n - Math.min(n, numRetained) + 1 + k),
        );
        expect(await jobFiles(storage, JOB)).toEqual(await expectedJobFiles(storage, coord));
      }
      const dirs = new Set((await jobFiles(storage, JOB)).map((f) => f.split('/')[1]));
      expect([...dirs].filter((d) => d.startsWith('chk-')).sort()).toEqual(
        coord
          .completedCheckpoints()
          .map((c) => `chk-${c.checkpointId}`)
          .sort(),
      );
      // the shared files of the newest checkpoint's predecessor are still there because it reuses them
      const shared = (await jobFiles(storage, JOB)).filter((f) => f.startsWith(`${JOB}/shared/`));
      expect(shared.length).toBe(2 * (numRetained + 1));
    },
  );

  it('reports completion only on the last acknowledgement; duplicates and unknown ids are typed errors', async () => {
    const coord = coordinator();
    await coord.restore();
    const [a, b] = subtasks();
    const p = coord.triggerCheckpoint();
    expect(await coord.acknowledge(p.checkpointId, 'op', 0, await a.snapshot(p))).toEqual({
      status: 'waiting',
      missing: 1,
    });
    await expectRejectsCode(
      coord.acknowledge(p.checkpointId, 'op', 0, await a.snapshot(p)),
      'DUPLICATE_ACKNOWLEDGEMENT',
    );
    expect(coord.completedCheckpoints()).toEqual([]);
    const result = await coord.acknowledge(p.checkpointId, 'op', 1, await b.snapshot(p));
    if (result.status !== 'completed') throw new Error(`expected completed, got ${JSON.stringify(result)}`);
    const info = result.checkpoint;
    expect(info).toMatchObject({ checkpointId: 1, pointer: `${JOB}/chk-1` });
    expect(info.size).toBeGreaterThan(0);
    await expect(p.completion).resolves.toEqual(info);
    await expectRejectsCode(coord.acknowledge(99, 'op', 0, { keyed: [], operator: [] }), 'CHECKPOINT_NOT_FOUND');
    expect(await coord.acknowledge(1, 'op', 0, { keyed: [], operator: [] })).toMatchObject({
      status: 'rejected',
      reason: 'ALREADY_COMPLETED',
    });
    expect(coord.latestCompleted()).toEqual(info);
    const q = coord.triggerCheckpoint();
    await expectRejectsCode(
      coord.acknowledge(q.checkpointId, 'nope', 0, { keyed: [], operator: [] }),
      'INVALID_ARGUMENT',
    );
    await expectRejectsCode(
      coord.acknowledge(q.checkpointId, 'op', 2, { keyed: [], operator: [] }),
      'INVALID_ARGUMENT',
    );
  });

  it('a newer completed checkpoint subsumes older pending ones', async () => {
    const coord = coordinator({ numRetained: 2 });
    await coord.restore();
    const tasks = subtasks();
    const p1 = coord.triggerCheckpoint();
    const acks1 = [await tasks[0].snapshot(p1, false), await tasks[1].snapshot(p1, false)];
    await coord.acknowledge(1, 'op', 0, acks1[0]);
    const { info } = await runCheckpoint(coord, tasks, false);
    expect(info?.checkpointId).toBe(2);
    expect(await expectRejectsCode(p1.completion, 'CHECKPOINT_DECLINED')).toMatchObject({ reason: 'SUBSUMED' });
    expect(await coord.acknowledge(1, 'op', 1, acks1[1])).toMatchObject({ status: 'rejected', reason: 'SUBSUMED' });
    expect(coord.completedCheckpoints().map((c) => c.checkpointId)).toEqual([2]);
    // the late acknowledgement's files were written by checkpoint 1's streams and nothing uses them: deleted at once
    expect(await jobFiles(storage, JOB)).toEqual(await expectedJobFiles(storage, coord));
    expect(await coord.collectGarbage()).toEqual([]);
  });

  it('refuses to trigger before restore(), and a second restore()', async () => {
    const coord = coordinator();
    expectThrowsCode(() => coord.triggerCheckpoint(), 'INVALID_ARGUMENT');
    await coord.restore();
    await expectRejectsCode(coord.restore(), 'INVALID_ARGUMENT');
  });

  it('garbage collection never touches a checkpoint that is pending or waiting to complete', async () => {
    const coord = coordinator();
    await coord.restore();
    const tasks = subtasks();
    await runCheckpoint(coord, tasks);
    const p = coord.triggerCheckpoint();
    const acks = [await tasks[0].snapshot(p), await tasks[1].snapshot(p)];
    await coord.acknowledge(p.checkpointId, 'op', 0, acks[0]);
    expect(await coord.collectGarbage()).toEqual([]); // pending: its files stay
    const gc = coord.collectGarbage(); // starts listing first ...
    const done = coord.acknowledge(p.checkpointId, 'op', 1, acks[1]); // ... while the last ack arrives
    expect(await gc).toEqual([]);
    expect(await done).toMatchObject({ status: 'completed', checkpoint: { checkpointId: 2 } });
    expect(await jobFiles(storage, JOB)).toEqual(await expectedJobFiles(storage, coord));
  });
});

describe('CheckpointCoordinator abort and failures', () => {
  it('abort deletes the checkpoint directory and every file its streams wrote, never a file it only references', async () => {
    const coord = coordinator();
    await coord.restore();
    const tasks = subtasks();
    await runCheckpoint(coord, tasks);
    const before = await jobFiles(storage, JOB);
    const p = coord.triggerCheckpoint();
    const ack0 = await tasks[0].snapshot(p);
    expect(JSON.stringify(ack0)).toContain('../shared/'); // reuses chk-1's shared file
    await coord.acknowledge(p.checkpointId, 'op', 0, ack0);
    await tasks[1].snapshot(p); // wrote files, never acknowledged
    expect((await jobFiles(storage, JOB)).length).toBe(before.length + 4);
    await coord.abort(p.checkpointId, 'test');
    expect(await expectRejectsCode(p.completion, 'CHECKPOINT_DECLINED')).toMatchObject({ reason: 'ABORTED' });
    // chk-1 and everything it uses are intact; both subtasks' uploads are gone
    expect(await jobFiles(storage, JOB)).toEqual(before);
    expect(await coord.acknowledge(p.checkpointId, 'op', 1, { keyed: [], operator: [] })).toMatchObject({
      status: 'rejected',
      reason: 'ABORTED',
    });
    expect(await coord.collectGarbage()).toEqual([]);
    await coord.abort(p.checkpointId, 'again'); // ended: no-op
    expect(await jobFiles(storage, JOB)).toEqual(before);
  });

  it('a failed _metadata write aborts the checkpoint; earlier ones are untouched', async () => {
    let failNext = false;
    const flaky: CheckpointStorage = new Proxy(storage, {
      get(target, prop, receiver) {
        if (prop === 'writeMetadata') {
          return async (...args: Parameters<CheckpointStorage['writeMetadata']>) => {
            if (failNext) {
              failNext = false;
              throw new Error('disk full');
            }
            return target.writeMetadata(...args);
          };
        }
        const v = Reflect.get(target, prop, receiver) as unknown;
        return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
      },
    });
    const coord = coordinator({ storage: flaky });
    await coord.restore();
    const tasks = subtasks();
    await runCheckpoint(coord, tasks);
    const before = await jobFiles(storage, JOB);
    failNext = true;
    await expectRejectsCode(runCheckpoint(coord, tasks), 'SNAPSHOT_FAILED');
    expect(coord.completedCheckpoints().map((c) => c.checkpointId)).toEqual([1]);
    expect(await jobFiles(storage, JOB)).toEqual(before);
    const { info } = await runCheckpoint(coord, tasks, false);
    expect(info?.checkpointId).toBe(3);
    expect(await jobFiles(storage, JOB)).toEqual(await expectedJobFiles(storage, coord));
  });

  it('a crash between the files and _metadata leaves nothing restorable; the next start removes the files', async () => {
    const first = coordinator();
    await first.restore();
    const tasks = subtasks();
    await runCheckpoint(first, tasks);
    const complete = await jobFiles(storage, JOB);
    const p = first.triggerCheckpoint();
    for (const t of tasks) await t.snapshot(p); // files written, the process dies before _metadata
    expect((await jobFiles(storage, JOB)).length).toBeGreaterThan(complete.length);
    await expectRejectsCode(storage.resolve(`${JOB}/chk-2`), 'METADATA_MISSING');

    // The first instance never released its lease: it may be alive and still complete checkpoint 2,
    // so a start within the fencing grace period leaves its files (docs/RUNTIME.md, "Fencing").
    const second = coordinator();
    expect((await second.restore())?.checkpointId).toBe(1);
    expect((await jobFiles(storage, JOB)).length).toBeGreaterThan(complete.length);
    expect(second.nextCheckpointId).toBe(3); // never reuse the id of the broken directory

    const third = coordinator({ fencing: { now: () => Date.now() + 11 * 60_000 } });
    const plan = await third.restore();
    expect(plan?.checkpointId).toBe(1);
    expect(await jobFiles(storage, JOB)).toEqual(complete);
    expect(third.nextCheckpointId).toBe(3);
  });
});

describe('CheckpointCoordinator restore', () => {
  it('continues ids after the latest checkpoint and keeps retention across restarts', async () => {
    const first = coordinator({ numRetained: 2 });
    await first.restore();
    const tasks = subtasks();
    for (let n = 0; n < 3; n++) await runCheckpoint(first, tasks);
    await first.shutdown('cancel');
    expect((await jobFiles(storage, JOB)).length).toBeGreaterThan(0); // retain on cancel by default

    const second = coordinator({ numRetained: 2 });
    const plan = await second.restore();
    expect(plan).toMatchObject({ checkpointId: 3, mode: 'claim', pointer: `${JOB}/chk-3` });
    expect(second.completedCheckpoints().map((c) => c.checkpointId)).toEqual([2, 3]);
    expect(second.nextCheckpointId).toBe(4);
    const restoredTasks = subtasks();
    const p = second.triggerCheckpoint();
    expect(p.fullRequired).toBe(false);
    // keep reusing chk-3's shared files, as an incremental backend restored from it would
    for (const [i, t] of restoredTasks.entries()) {
      const ack = await t.snapshot(p);
      const reused = (plan!.subtask('op', i).keyed.handles[0] as KeyedStateHandle & { shared: unknown[] }).shared[0];
      const h = ack.keyed[0] as KeyedStateHandle & { shared: unknown[] };
      await second.acknowledge(p.checkpointId, 'op', i, {
        keyed: [{ ...h, shared: [...h.shared, reused] }],
        operator: [],
      });
    }
    expect(second.completedCheckpoints().map((c) => c.checkpointId)).toEqual([3, 4]);
    expect(await jobFiles(storage, JOB)).toEqual(await expectedJobFiles(storage, second));
  });

  it('restores an explicit pointer of another job: ids continue (chk-860 -> chk-861), no-claim keeps its files', async () => {
    const old = await writeForeignCheckpoint(storage, 'old-job', 860);
    const coord = coordinator();
    const plan = await coord.restore(`${storage.location}/old-job/chk-860/_metadata`);
    expect(plan).toMatchObject({ checkpointId: 860, mode: 'no-claim', pointer: 'old-job/chk-860' });
    expect(plan!.subtask('op', 1).keyed).toMatchObject({ checkpointId: 860, mode: 'no-claim' });
    const tasks = subtasks();
    const { pending, info } = await runCheckpoint(coord, tasks);
    expect(info?.checkpointId).toBe(861);
    expect(pending.full && pending.fullRequired).toBe(true);
    const next = coord.triggerCheckpoint();
    expect(next.fullRequired).toBe(false);
    await coord.abort(next.checkpointId, 'not needed');
    for (let n = 0; n < 3; n++) await runCheckpoint(coord, tasks);
    expect(await jobFiles(storage, 'old-job')).toEqual(old);
    await coord.shutdown('cancel');
  });

  it('claim mode takes ownership of a foreign checkpoint and deletes it once subsumed', async () => {
    await writeForeignCheckpoint(storage, 'old-job', 5);
    const coord = coordinator({ restoreMode: 'claim' });
    const plan = await coord.restore('old-job/chk-5');
    expect(plan?.mode).toBe('claim');
    expect(coord.completedCheckpoints().map((c) => c.checkpointId)).toEqual([5]);
    const tasks = subtasks();
    const { pending } = await runCheckpoint(coord, tasks);
    expect(pending.fullRequired).toBe(false);
    expect(coord.completedCheckpoints().map((c) => c.checkpointId)).toEqual([6]);
    expect(await jobFiles(storage, 'old-job')).toEqual([]);
  });

  it('rejects snapshots with operators the job does not have unless allowNonRestoredState', async () => {
    await writeForeignCheckpoint(storage, 'old-job', 3, 'gone');
    const coord = coordinator();
    const err = await expectRejectsCode(coord.restore('old-job/chk-3'), 'UNKNOWN_OPERATOR');
    expect(err.message).toContain('allowNonRestoredState');
    const plan = await coord.restore('old-job/chk-3', { allowNonRestoredState: true });
    expect(plan!.subtask('op', 0).keyed.handles).toEqual([]);
    expect(coord.nextCheckpointId).toBe(4);
  });

  it('refuses a different maxParallelism and missing pointers', async () => {
    await writeForeignCheckpoint(storage, 'old-job', 3);
    const coord = new CheckpointCoordinator({
      jobId: JOB,
      storage,
      backendName: 'fake',
      operators: [{ operatorId: 'op', parallelism: 2, maxParallelism: 256 }],
    });
    await expectRejectsCode(coord.restore('old-job/chk-3'), 'MAX_PARALLELISM_MISMATCH');
    await expectRejectsCode(coord.restore('old-job/chk-4'), 'NOT_FOUND');
  });

  it('routes keyed and operator state to the subtasks of a new parallelism', async () => {
    const before = coordinator({}, 2);
    await before.restore();
    const p = before.triggerCheckpoint();
    for (let i = 0; i < 2; i++) {
      const backend = new HeapOperatorStateBackend();
      backend.getListState<string>('offsets', stringSerializer).addAll([`${i}a`, `${i}b`]);
      const task = await backend.snapshot(p.checkpointId, p.snapshotOptions('op', i));
      const ack = await new FakeIncrementalSubtask('op', i, 2).snapshot(p);
      await before.acknowledge(p.checkpointId, 'op', i, { keyed: ack.keyed, operator: [await task.done] });
    }
    const after = coordinator({}, 4);
    const plan = await after.restore();
    const restored = await Promise.all(
      [0, 1, 2, 3].map((i) =>
        HeapOperatorStateBackend.create({
          jobId: JOB,
          operatorId: 'op',
          subtaskIndex: i,
          parallelism: 4,
          restore: plan!.subtask('op', i).operator,
        }),
      ),
    );
    expect(restored.map((b) => b.getListState('offsets', stringSerializer).get())).toEqual([
      ['0a'],
      ['0b'],
      ['1a'],
      ['1b'],
    ]);
    expect(plan!.subtask('op', 1).keyed.handles.map((h) => h.keyGroupRange)).toEqual([{ start: 0, end: 63 }]);
    expect(plan!.subtask('op', 2).keyed.handles.map((h) => h.keyGroupRange)).toEqual([{ start: 64, end: 127 }]);
  });
});

describe('CheckpointCoordinator savepoints and shutdown', () => {
  it('savepoints are self-contained, not retained and never deleted', async () => {
    const coord = coordinator({ numRetained: 1 });
    await coord.restore();
    const tasks = subtasks();
    await runCheckpoint(coord, tasks);
    const sp = coord.triggerSavepoint({ format: 'canonical', targetDir: 'savepoints' });
    expect(sp.full).toBe(true);
    let result = null;
    for (const t of tasks)
      result = await coord.acknowledge(sp.checkpointId, 'op', t.subtaskIndex, await t.snapshot(sp));
    const info = result?.status === 'completed' ? result.checkpoint : null;
    expect(info?.pointer).toMatch(/^savepoints\/savepoint-job-a-[0-9a-f]{12}$/);
    expect(coord.completedCheckpoints().map((c) => c.checkpointId)).toEqual([1]);
    for (let n = 0; n < 2; n++) await runCheckpoint(coord, tasks);
    const resolved = await storage.resolve(info!.pointer);
    expect(resolved.metadata).toMatchObject({ kind: 'savepoint', format: 'canonical', checkpointId: 2 });
    await coord.shutdown('cancel');
    expect((await storage.store.list('savepoints/')).length).toBe(5); // _metadata + 2 x (exclusive + shared)
  });

  it('refuses a savepoint whose handles point outside its directory', async () => {
    const coord = coordinator({}, 1);
    await coord.restore();
    const [t] = subtasks(1);
    const { pending } = await runCheckpoint(coord, [t]);
    const sp = coord.triggerSavepoint();
    const ack = await t.snapshot(sp);
    const foreign = await writeFile(pending.streamsFor('op', 0), 'shared', 'x');
    const h = ack.keyed[0] as KeyedStateHandle & { shared: unknown[] };
    const bad = {
      ...h,
      shared: [...h.shared, { ...foreign, path: `../${JOB}/shared/${foreign.path.split('/').pop()}` }],
    };
    // Refused when acknowledged (the path leaves what the savepoint may reference: CORRUPT) or at completion (SNAPSHOT_FAILED).
    const err = await coord.acknowledge(sp.checkpointId, 'op', 0, { keyed: [bad], operator: [] }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StreamStateError);
    expect(['CORRUPT', 'SNAPSHOT_FAILED']).toContain((err as StreamStateError).code);
    await coord.abort(sp.checkpointId, 'refused');
    expect(await storage.store.list(`${sp.pointer}/`)).toEqual([]);
  });

  it("shutdown('cancel') with onCancel 'delete' removes every checkpoint; pending ones are aborted", async () => {
    const coord = coordinator({ onCancel: 'delete', numRetained: 2 });
    await coord.restore();
    const tasks = subtasks();
    for (let n = 0; n < 3; n++) await runCheckpoint(coord, tasks);
    const p = coord.triggerCheckpoint();
    await coord.acknowledge(p.checkpointId, 'op', 0, await tasks[0].snapshot(p));
    await coord.shutdown('cancel');
    await expectRejectsCode(p.completion, 'CHECKPOINT_DECLINED');
    expect(await jobFiles(storage, JOB)).toEqual([]);
    expectThrowsCode(() => coord.triggerCheckpoint(), 'INVALID_ARGUMENT');
    await coord.shutdown('cancel'); // idempotent
  });

  it("shutdown('finish') keeps the retained checkpoints", async () => {
    const coord = coordinator({ onCancel: 'delete' });
    await coord.restore();
    await runCheckpoint(coord, subtasks());
    const files = await jobFiles(storage, JOB);
    await coord.shutdown('finish');
    expect(await jobFiles(storage, JOB)).toEqual(files);
  });
});

/** A completed checkpoint of another job with id `id`, written through real streams; returns its files. */
async function writeForeignCheckpoint(
  storage: BlobCheckpointStorage,
  jobId: string,
  id: number,
  operatorId = 'op',
): Promise<string[]> {
  const pointer = storage.checkpointPointer(jobId, id);
  const streams = storage.checkpointStreams(jobId, id);
  const subtasks = [];
  for (let i = 0; i < 2; i++) {
    const shared = await writeFile(streams, 'shared', `foreign shared ${i}`);
    const exclusive = await writeFile(streams, 'exclusive', `foreign exclusive ${i}`);
    subtasks.push({
      subtaskIndex: i,
      keyed: [
        {
          type: 'fake-incremental',
          keyGroupRange: { start: i * 64, end: i * 64 + 63 },
          maxParallelism: 128,
          exclusive,
          shared: [shared],
        },
      ],
      operator: [],
    });
  }
  await storage.writeMetadata(pointer, {
    checkpointId: id,
    jobId,
    kind: 'checkpoint',
    format: 'native',
    backend: 'fake',
    timestamp: Date.now(),
    operators: [{ operatorId, parallelism: 2, maxParallelism: 128, subtasks }],
  });
  return jobFiles(storage, jobId);
}
