import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import { leveldb } from '../../backends/leveldb/index.js';
import type { KeyedStateBackend, SnapshotTask, StateBackend } from '../../src/backend/contract.js';
import type { KeyedStateHandle } from '../../src/backend/handles.js';
import { changelog } from '../../src/changelog/index.js';
import type { AcknowledgeResult } from '../../src/checkpoint/acknowledgement.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator, type PendingCheckpoint } from '../../src/checkpoint/coordinator.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import { expectRejectsCode } from '../support/errors.js';

/**
 * Issue 12, "Late completion notices": checkpoints 2 and 3 are snapshotted before the backend hears
 * that 2 completed; 3 subsumes 2 (numRetained 1) and retention deletes 2's files; then the notice
 * of 2 arrives (3's later). Checkpoint 4 must not complete referencing a deleted file: it completes
 * and restores (the backend asked mayReuse), or it is declined and the next one completes and
 * restores. After every step every retained checkpoint restores, through a fresh coordinator and
 * backend, to exactly the state written before it.
 */
const JOB = 'job-late';
const OP = 'op';
const MAX_P = 128;
const KEYS = 300;
const value = valueState<string>('v', { serializer: stringSerializer });

interface Case {
  readonly name: string;
  make(root: string): { backend: StateBackend; storage: CheckpointStorage };
}

const leveldbOpts = (root: string) => ({
  workingDir: join(root, 'work'),
  writeBufferBytes: 64 * 1024,
  memtableBytes: 32 * 1024,
});
const cases: Case[] = [
  {
    name: 'filesystem',
    make: (root) => ({
      backend: filesystem({ checkpointDir: join(root, 'cp'), inlineThreshold: 0 }),
      storage: localCheckpointStorage(join(root, 'cp'), { inlineThreshold: 0 }),
    }),
  },
  {
    name: 'leveldb',
    make: (root) => ({
      backend: leveldb(leveldbOpts(root)),
      storage: localCheckpointStorage(join(root, 'cp'), { inlineThreshold: 0 }),
    }),
  },
  ...[0, Number.POSITIVE_INFINITY].flatMap((materializationIntervalMs): Case[] => [
    {
      name: `changelog(leveldb), materializationIntervalMs ${materializationIntervalMs}`,
      make: (root) => {
        const storage = localCheckpointStorage(join(root, 'cp'), { inlineThreshold: 0 });
        return {
          backend: changelog({ backend: leveldb(leveldbOpts(root)), storage, materializationIntervalMs }),
          storage,
        };
      },
    },
    {
      name: `changelog(filesystem), materializationIntervalMs ${materializationIntervalMs}`,
      make: (root) => {
        const storage = localCheckpointStorage(join(root, 'cp'), { inlineThreshold: 0 });
        return {
          backend: changelog({
            backend: filesystem({ checkpointDir: join(root, 'cp'), inlineThreshold: 0 }),
            storage,
            materializationIntervalMs,
          }),
          storage,
        };
      },
    },
  ]),
];

const roots: string[] = [];
const open: { close(): Promise<void> }[] = [];
afterEach(async () => {
  while (open.length > 0)
    await open
      .pop()!
      .close()
      .catch(() => undefined);
  while (roots.length > 0) await rm(roots.pop()!, { recursive: true, force: true });
});

class Job {
  readonly model = new Map<string, string>();
  /** The model as each checkpoint captured it. */
  readonly expected = new Map<number, Map<string, string>>();
  private verifiers = 0;
  /** Whether the backend ever asked SnapshotOptions.mayReuse (a backend that asks must never be declined twice in a row). */
  askedMayReuse = false;

  private constructor(
    readonly backend: StateBackend,
    readonly storage: CheckpointStorage,
    readonly coordinator: CheckpointCoordinator,
    readonly keyed: KeyedStateBackend<string>,
  ) {}

  static async start(c: Case): Promise<Job> {
    const root = await mkdtemp(join(tmpdir(), 'streamstate-late-'));
    roots.push(root);
    const { backend, storage } = c.make(root);
    const coordinator = new CheckpointCoordinator({
      jobId: JOB,
      storage,
      backendName: backend.name,
      numRetained: 1,
      operators: [{ operatorId: OP, parallelism: 1, maxParallelism: MAX_P }],
    });
    expect(await coordinator.restore()).toBeNull();
    const keyed = await backend.createKeyedStateBackend({
      jobId: JOB,
      operatorId: OP,
      subtaskIndex: 0,
      parallelism: 1,
      maxParallelism: MAX_P,
      keyGroupRange: keyGroupRangeForSubtask(MAX_P, 1, 0),
      keySerializer: stringSerializer,
    });
    open.push(keyed);
    return new Job(backend, storage, coordinator, keyed);
  }

  /** Rewrites a share of the keys (enough bytes for LevelDB to write table files). */
  write(round: number): void {
    for (let i = 0; i < KEYS; i++) {
      if ((i + round) % 3 === 0) continue;
      const key = `key-${i}`;
      const v = `${round}:${i}:${'x'.repeat(200)}`;
      this.keyed.setCurrentKey(key);
      this.keyed.getState(value).update(v);
      this.model.set(key, v);
    }
  }

  async snapshot(): Promise<{ pending: PendingCheckpoint; task: SnapshotTask<KeyedStateHandle> }> {
    const pending = this.coordinator.triggerCheckpoint();
    const options = pending.snapshotOptions(OP, 0);
    const mayReuse = (path: string): boolean => {
      this.askedMayReuse = true;
      return options.mayReuse!(path);
    };
    const task = await this.keyed.snapshot(pending.checkpointId, { ...options, mayReuse });
    this.expected.set(pending.checkpointId, new Map(this.model));
    return { pending, task };
  }

  async ack(s: { pending: PendingCheckpoint; task: SnapshotTask<KeyedStateHandle> }): Promise<AcknowledgeResult> {
    return this.coordinator.acknowledge(s.pending.checkpointId, OP, 0, { keyed: [await s.task.done], operator: [] });
  }

  /** Every retained checkpoint restores, through a fresh coordinator and backend, to the state it captured. */
  async expectRetainedRestore(step: string): Promise<void> {
    const retained = this.coordinator.completedCheckpoints();
    expect(retained.length, step).toBeGreaterThan(0);
    for (const info of retained) {
      // Another job id: the verifier restores in no-claim mode and its start-up cleanup sees only its own (empty) directory.
      const verifier = new CheckpointCoordinator({
        jobId: `verify-${++this.verifiers}`,
        storage: this.storage,
        backendName: this.backend.name,
        operators: [{ operatorId: OP, parallelism: 1, maxParallelism: MAX_P }],
      });
      const plan = await verifier.restore(info.pointer);
      const restored = await this.backend.createKeyedStateBackend({
        jobId: `verify-${this.verifiers}`,
        operatorId: OP,
        subtaskIndex: 0,
        parallelism: 1,
        maxParallelism: MAX_P,
        keyGroupRange: keyGroupRangeForSubtask(MAX_P, 1, 0),
        keySerializer: stringSerializer,
        restore: plan!.subtask(OP, 0).keyed,
      });
      try {
        const got = new Map<string, string>();
        for (let i = 0; i < KEYS; i++) {
          restored.setCurrentKey(`key-${i}`);
          const v = restored.getState(value).value();
          if (v !== null) got.set(`key-${i}`, v);
        }
        expect(got, `${step}: checkpoint ${info.checkpointId}`).toEqual(this.expected.get(info.checkpointId));
      } finally {
        await restored.close();
        await verifier.shutdown('finish');
      }
    }
  }

  /**
   * Acknowledges a checkpoint that may be declined. Completed: the backend is told, and every
   * retained checkpoint restores. Declined: SHARED_STATE_NOT_LIVE, its completion rejects, the
   * backend hears of the abort, the retained checkpoints still restore.
   */
  async ackCompletedOrDeclined(
    s: { pending: PendingCheckpoint; task: SnapshotTask<KeyedStateHandle> },
    step: string,
  ): Promise<'completed' | 'declined'> {
    const result = await this.ack(s);
    if (result.status === 'completed') {
      await this.keyed.notifyCheckpointComplete(s.pending.checkpointId);
      await this.expectRetainedRestore(step);
      return 'completed';
    }
    expect(result, step).toMatchObject({ status: 'rejected', reason: 'SHARED_STATE_NOT_LIVE' });
    expect(await expectRejectsCode(s.pending.completion, 'CHECKPOINT_DECLINED')).toMatchObject({
      reason: 'SHARED_STATE_NOT_LIVE',
    });
    await this.keyed.notifyCheckpointAborted(s.pending.checkpointId);
    await this.expectRetainedRestore(`${step}, declined`);
    return 'declined';
  }

  /**
   * After a checkpoint that may have been declined: the next ones complete and restore. A backend
   * that asks mayReuse must complete the very next one; one that does not ask (its side of the
   * contract not in yet) may be declined again, but never completes a checkpoint that does not restore.
   */
  async expectRecovery(first: 'completed' | 'declined', round: number, step: string): Promise<void> {
    let outcome = first;
    for (let attempt = 1; attempt <= 3; attempt++) {
      if (outcome === 'declined')
        expect(this.askedMayReuse, `${step}: declined although the backend asks mayReuse`).toBe(false);
      this.write(round + attempt);
      outcome = await this.ackCompletedOrDeclined(await this.snapshot(), `${step}, then checkpoint +${attempt}`);
    }
  }
}

describe.each(cases)('late completion notices: $name', (c) => {
  it('2 and 3 snapshotted before 2 is confirmed, 3 subsumes 2, the notice of 2 comes late (3 later still): checkpoint 4 never completes unrestorable', async () => {
    const job = await Job.start(c);
    job.write(1);
    const c1 = await job.snapshot();
    expect(await job.ack(c1)).toMatchObject({ status: 'completed' });
    await job.keyed.notifyCheckpointComplete(1);
    await job.expectRetainedRestore('after 1');

    job.write(2);
    const c2 = await job.snapshot();
    job.write(3);
    const c3 = await job.snapshot();
    expect(await job.ack(c2)).toMatchObject({ status: 'completed' });
    await job.expectRetainedRestore('after 2 completed');
    expect(await job.ack(c3)).toMatchObject({ status: 'completed' });
    expect(job.coordinator.completedCheckpoints().map((i) => i.checkpointId)).toEqual([3]);
    await job.expectRetainedRestore('after 3 subsumed 2');

    await job.keyed.notifyCheckpointComplete(2); // late: 2 is gone already
    job.write(4);
    const c4 = await job.snapshot();
    await job.keyed.notifyCheckpointComplete(3); // later still: after 4's snapshot
    await job.expectRecovery(await job.ackCompletedOrDeclined(c4, 'checkpoint 4'), 5, 'checkpoint 4');
  });

  it("reference §15.4: N snapshotted before the notice of M, then M confirmed, N completes and subsumes M, N's notice is lost: N+1 never completes unrestorable", async () => {
    const job = await Job.start(c);
    job.write(1);
    const m = await job.snapshot(); // M = 1
    expect(await job.ack(m)).toMatchObject({ status: 'completed' });
    job.write(2);
    const n = await job.snapshot(); // N = 2, taken before the notice of M: uploads its own copies
    await job.keyed.notifyCheckpointComplete(1); // the backend now bases later checkpoints on M
    expect(await job.ack(n)).toMatchObject({ status: 'completed' }); // subsumes M (numRetained 1)
    await job.expectRetainedRestore('after N subsumed M');
    // N's notice is lost.
    job.write(3);
    await job.expectRecovery(await job.ackCompletedOrDeclined(await job.snapshot(), 'N+1'), 4, 'N+1');
  });
});
