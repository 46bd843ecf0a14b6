import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { KeyedStateBackend, SnapshotOptions, StateBackend } from '../../src/backend/contract.js';
import { referencedFiles, type KeyedStateHandle } from '../../src/backend/handles.js';
import { changelog } from '../../src/changelog/index.js';
import { localCheckpointStorage, type BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator, type PendingCheckpoint } from '../../src/checkpoint/coordinator.js';
import { resolveHandlePath } from '../../src/checkpoint/streams.js';
import { KeyGroupRange } from '../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';

/**
 * A one-subtask job driven step by step through the real CheckpointCoordinator, so that tests can
 * deliver completion and abort notices late, twice, out of order or never (issue 12, "Late
 * completion notices"). After every step `expectRetainedRestore` restores every retained
 * checkpoint into a fresh backend and compares it with the model taken when it was snapshotted.
 * Outcomes are read from the coordinator (completion promise, completedCheckpoints()), not from
 * acknowledge()'s result.
 */
export const NOTICE_JOB = 'job-notices';
const OP = 'op';
const MAX_P = 128;
const KEYS = 600;
const value = valueState<string>('v', { serializer: stringSerializer });

export interface NoticeBackendCase {
  readonly name: string;
  /** A new backend (each call its own working directory) writing to checkpoint storage under `root`. */
  make(root: string, storage: BlobCheckpointStorage): StateBackend;
}

export interface Taken {
  readonly pending: PendingCheckpoint;
  readonly handle: KeyedStateHandle | null;
  readonly model: ReadonlyMap<string, string>;
}

export class NoticeJob {
  private round = 0;
  private readonly model = new Map<string, string>();
  private readonly models = new Map<number, ReadonlyMap<string, string>>();
  /** Checkpoints the coordinator declined (the backend was told they were aborted). */
  readonly declined: number[] = [];

  private constructor(
    readonly root: string,
    readonly storage: BlobCheckpointStorage,
    readonly kase: NoticeBackendCase,
    readonly coordinator: CheckpointCoordinator,
    readonly keyed: KeyedStateBackend<string>,
    /** Whether snapshots get the coordinator's mayReuse (false: hand-built options without it). */
    readonly askMayReuse: boolean,
  ) {}

  static async start(kase: NoticeBackendCase, opts: { numRetained: number; askMayReuse: boolean }): Promise<NoticeJob> {
    const root = await mkdtemp(join(tmpdir(), 'streamstate-notices-'));
    const storage = localCheckpointStorage(join(root, 'cp'), { inlineThreshold: 0 });
    const coordinator = new CheckpointCoordinator({
      jobId: NOTICE_JOB,
      storage,
      backendName: kase.make(root, storage).name,
      operators: [{ operatorId: OP, parallelism: 1, maxParallelism: MAX_P }],
      numRetained: opts.numRetained,
    });
    await coordinator.restore();
    const keyed = await create(kase.make(root, storage), NOTICE_JOB);
    return new NoticeJob(root, storage, kase, coordinator, keyed, opts.askMayReuse);
  }

  /** Updates 200 keys with incompressible 256-byte values (LevelDB flushes table files). */
  write(): void {
    this.round++;
    const v = this.keyed.getState(value);
    for (let i = 0; i < 200; i++) {
      const key = `k${(this.round * 211 + i * 3) % KEYS}`;
      const val = createHash('sha256').update(`${this.round}-${i}`).digest('hex').repeat(4);
      this.keyed.setCurrentKey(key);
      v.update(val);
      this.model.set(key, val);
    }
  }

  /** Triggers a checkpoint and runs the snapshot to its handle (not acknowledged). */
  async snapshot(): Promise<Taken> {
    return this.snapshotOf(this.coordinator.triggerCheckpoint());
  }

  /** Triggers a native savepoint and runs the snapshot to its handle. */
  async savepoint(): Promise<Taken> {
    return this.snapshotOf(this.coordinator.triggerSavepoint({ format: 'native' }));
  }

  private async snapshotOf(pending: PendingCheckpoint): Promise<Taken> {
    pending.completion.catch(() => undefined);
    const given = pending.snapshotOptions(OP, 0);
    const options: SnapshotOptions = this.askMayReuse
      ? given
      : {
          type: given.type,
          ...(given.format ? { format: given.format } : {}),
          full: given.full,
          streams: given.streams,
        };
    const task = await this.keyed.snapshot(pending.checkpointId, options);
    const handle = await task.done;
    const model = new Map(this.model);
    this.models.set(pending.checkpointId, model);
    return { pending, handle, model };
  }

  /** Acknowledges; true when the checkpoint completed, false when the coordinator declined or subsumed it. */
  async acknowledge(t: Taken): Promise<boolean> {
    await this.coordinator.acknowledge(t.pending.checkpointId, OP, 0, { keyed: [t.handle], operator: [] });
    return t.pending.completion.then(
      () => true,
      () => false,
    );
  }

  /**
   * Writes, snapshots, acknowledges and notifies until a checkpoint completes. A backend that asks
   * mayReuse must never be declined; one that does not may be declined once (it referenced an
   * upload that is gone), after which the abort notice must make the next one complete.
   */
  async checkpointUntilComplete(): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      this.write();
      const t = await this.snapshot();
      if (await this.acknowledge(t)) {
        await this.keyed.notifyCheckpointComplete(t.pending.checkpointId);
        return t.pending.checkpointId;
      }
      this.declined.push(t.pending.checkpointId);
      await this.keyed.notifyCheckpointAborted(t.pending.checkpointId);
      expect(
        this.askMayReuse,
        `checkpoint ${t.pending.checkpointId} was declined although the backend was given mayReuse`,
      ).toBe(false);
      expect(attempt, `checkpoint ${t.pending.checkpointId}: declined again after the abort notice`).toBe(0);
    }
  }

  /** Every retained checkpoint references only existing files and restores into a fresh backend with its model. */
  async expectRetainedRestore(step: string): Promise<void> {
    const retained = this.coordinator.completedCheckpoints();
    expect(retained.length, `${step}: retained checkpoints`).toBeGreaterThan(0);
    for (const info of retained) {
      const { metadata, files } = await this.storage.resolve(info.pointer);
      const handles = metadata.operators[0].subtasks[0].keyed;
      for (const f of referencedFiles(handles)) {
        const key = resolveHandlePath(info.pointer, f.path);
        expect(
          await this.storage.store.stat(key).catch(() => null),
          `${step}: ${key} of checkpoint ${info.checkpointId}`,
        ).not.toBeNull();
      }
      const kb = await create(this.kase.make(this.root, this.storage), `${NOTICE_JOB}-restore`, {
        handles,
        files,
        mode: 'no-claim',
        checkpointId: metadata.checkpointId,
      });
      try {
        const v = kb.getState(value);
        const got = new Map<string, string>();
        for (let i = 0; i < KEYS; i++) {
          kb.setCurrentKey(`k${i}`);
          const x = v.value();
          if (x !== null && x !== undefined) got.set(`k${i}`, x);
        }
        expect(got, `${step}: state of checkpoint ${info.checkpointId}`).toEqual(this.models.get(info.checkpointId));
      } finally {
        await kb.close();
      }
    }
  }

  async close(): Promise<void> {
    await this.keyed.close().catch(() => undefined);
    await this.coordinator.shutdown('finish').catch(() => undefined);
    await rm(this.root, { recursive: true, force: true });
  }
}

async function create(
  backend: StateBackend,
  jobId: string,
  restore?: Parameters<StateBackend['createKeyedStateBackend']>[0]['restore'],
): Promise<KeyedStateBackend<string>> {
  return backend.createKeyedStateBackend({
    jobId,
    operatorId: OP,
    subtaskIndex: 0,
    parallelism: 1,
    maxParallelism: MAX_P,
    keyGroupRange: new KeyGroupRange(0, MAX_P - 1),
    keySerializer: stringSerializer,
    ...(restore ? { restore } : {}),
  });
}

/**
 * The scenarios of issue 12 for one backend: late, duplicated, out-of-order and missing completion
 * notices, an abort after a completion, notices for a savepoint id. Each returns after checking
 * every retained checkpoint after every step.
 */
export const noticeScenarios: { readonly name: string; run(job: NoticeJob): Promise<void> }[] = [
  {
    name: "2 and 3 snapshotted before 2's notice, both complete (3 subsumes 2), 2's notice comes late, 3's after checkpoint 4 or never",
    async run(job) {
      await job.checkpointUntilComplete(); // 1, confirmed
      await job.expectRetainedRestore('after 1');
      job.write();
      const two = await job.snapshot();
      job.write();
      const three = await job.snapshot();
      expect(await job.acknowledge(two)).toBe(true);
      await job.expectRetainedRestore('after 2 completed');
      expect(await job.acknowledge(three)).toBe(true); // 3 subsumes 2: retention deletes what only 2 references
      expect(job.coordinator.completedCheckpoints().map((c) => c.checkpointId)).toEqual([three.pending.checkpointId]);
      await job.expectRetainedRestore('after 3 completed');
      await job.keyed.notifyCheckpointComplete(two.pending.checkpointId); // late
      await job.expectRetainedRestore("after 2's late notice");
      await job.checkpointUntilComplete(); // 4
      await job.expectRetainedRestore('after 4');
      await job.keyed.notifyCheckpointComplete(three.pending.checkpointId); // later still: older than 4's
      await job.checkpointUntilComplete();
      await job.expectRetainedRestore("after 3's notice and one more checkpoint");
      await job.checkpointUntilComplete();
      await job.expectRetainedRestore('after another checkpoint');
    },
  },
  {
    name: 'duplicated notices, an abort notice after a completion notice, notices for unknown ids',
    async run(job) {
      const one = await job.checkpointUntilComplete();
      await job.keyed.notifyCheckpointComplete(one); // duplicate
      const two = await job.checkpointUntilComplete();
      await job.keyed.notifyCheckpointComplete(two);
      await job.keyed.notifyCheckpointComplete(one); // older duplicate, out of order
      await job.expectRetainedRestore('after duplicates');
      await job.keyed.notifyCheckpointAborted(two); // aborted after complete: conflicting, trust neither
      await job.checkpointUntilComplete();
      await job.expectRetainedRestore('after abort-after-complete');
      await job.keyed.notifyCheckpointComplete(10_000); // never triggered
      await job.keyed.notifyCheckpointAborted(10_001);
      await job.checkpointUntilComplete();
      await job.expectRetainedRestore('after unknown ids');
    },
  },
  {
    name: "a savepoint's completion notice is ignored: the next checkpoint references none of its files",
    async run(job) {
      await job.checkpointUntilComplete();
      job.write();
      const sp = await job.savepoint();
      expect(await job.acknowledge(sp)).toBe(true);
      await job.keyed.notifyCheckpointComplete(sp.pending.checkpointId);
      const spFiles = new Set(referencedFiles(sp.handle).map((f) => resolveHandlePath(sp.pending.pointer, f.path)));
      expect(spFiles.size).toBeGreaterThan(0);
      await job.checkpointUntilComplete();
      const latest = job.coordinator.latestCompleted()!;
      const { metadata } = await job.storage.resolve(latest.pointer);
      const files = referencedFiles(metadata.operators[0].subtasks[0].keyed).map((f) =>
        resolveHandlePath(latest.pointer, f.path),
      );
      expect(files.filter((f) => spFiles.has(f))).toEqual([]);
      await job.expectRetainedRestore('after the savepoint notice');
    },
  },
];

/** changelog(inner) materializing at every checkpoint and never on a timer, each with and without mayReuse. */
export function changelogNoticeCases(
  innerName: string,
  inner: (root: string) => StateBackend,
): (NoticeBackendCase & { readonly askMayReuse: boolean })[] {
  return [0, Number.POSITIVE_INFINITY].flatMap((materializationIntervalMs) =>
    [true, false].map((askMayReuse) => ({
      name: `changelog(${innerName}), materializationIntervalMs ${materializationIntervalMs}, mayReuse given: ${askMayReuse}`,
      askMayReuse,
      make: (root: string, storage: BlobCheckpointStorage) =>
        changelog({ backend: inner(root), storage, materializationIntervalMs, preemptivePersistBytes: 16 * 1024 }),
    })),
  );
}
