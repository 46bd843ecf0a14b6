import type { KeyedStateBackend, StateBackend } from '../../src/backend/contract.js';
import type { KeyedStateHandle } from '../../src/backend/handles.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator } from '../../src/checkpoint/coordinator.js';
import type { CompletedCheckpointInfo } from '../../src/checkpoint/metadata.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import { StorageError } from '../../src/errors.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { ForwardingBlobStore } from '../../src/storage/forwarding-blob-store.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';

export const OPERATOR = 'op';
export const MAX_P = 128;

/**
 * A minimal job for tests: one keyed operator at `parallelism`, a real CheckpointCoordinator
 * (retention, shared-state registry, restore assignment) over `storage`.
 */
export class MiniJob {
  private constructor(
    readonly coordinator: CheckpointCoordinator,
    readonly backends: KeyedStateBackend<string>[],
    readonly restoredFrom: number | null,
  ) {}

  static async start(opts: {
    jobId: string;
    backend: StateBackend;
    storage: CheckpointStorage;
    parallelism: number;
    pointer?: string;
    numRetained?: number;
    restoreMode?: 'claim' | 'no-claim';
  }): Promise<MiniJob> {
    const coordinator = new CheckpointCoordinator({
      jobId: opts.jobId,
      storage: opts.storage,
      backendName: opts.backend.name,
      operators: [{ operatorId: OPERATOR, parallelism: opts.parallelism, maxParallelism: MAX_P }],
      numRetained: opts.numRetained ?? 1,
      ...(opts.restoreMode ? { restoreMode: opts.restoreMode } : {}),
    });
    const plan = await coordinator.restore(opts.pointer);
    const backends: KeyedStateBackend<string>[] = [];
    for (let i = 0; i < opts.parallelism; i++) {
      const restore = plan?.subtask(OPERATOR, i).keyed;
      backends.push(
        await opts.backend.createKeyedStateBackend({
          jobId: opts.jobId,
          operatorId: OPERATOR,
          subtaskIndex: i,
          parallelism: opts.parallelism,
          maxParallelism: MAX_P,
          keyGroupRange: keyGroupRangeForSubtask(MAX_P, opts.parallelism, i),
          keySerializer: stringSerializer,
          ...(restore ? { restore } : {}),
        }),
      );
    }
    return new MiniJob(coordinator, backends, plan?.checkpointId ?? null);
  }

  /** Snapshots every subtask, acknowledges, and notifies completion. Returns the completed checkpoint. */
  async checkpoint(): Promise<{ info: CompletedCheckpointInfo; handles: (KeyedStateHandle | null)[] }> {
    const pending = this.coordinator.triggerCheckpoint();
    pending.completion.catch(() => undefined);
    const handles: (KeyedStateHandle | null)[] = [];
    try {
      const tasks = [];
      for (const [i, b] of this.backends.entries()) {
        const t = await b.snapshot(pending.checkpointId, pending.snapshotOptions(OPERATOR, i));
        t.done.catch(() => undefined);
        tasks.push(t);
      }
      let info: CompletedCheckpointInfo | null = null;
      for (const [i, t] of tasks.entries()) {
        const h = await t.done;
        handles.push(h);
        const result = await this.coordinator.acknowledge(pending.checkpointId, OPERATOR, i, {
          keyed: [h],
          operator: [],
        });
        if (result.status === 'completed') info = result.checkpoint;
        else if (result.status === 'rejected')
          throw new Error(`checkpoint ${pending.checkpointId} was rejected: ${result.message}`);
      }
      if (info === null) throw new Error('checkpoint did not complete');
      for (const b of this.backends) await b.notifyCheckpointComplete(pending.checkpointId);
      return { info, handles };
    } catch (err) {
      await this.coordinator.abort(pending.checkpointId, String(err));
      for (const b of this.backends) await b.notifyCheckpointAborted(pending.checkpointId);
      throw err;
    }
  }

  async close(): Promise<void> {
    for (const b of this.backends) await b.close();
    await this.coordinator.shutdown('finish');
  }
}

/** A memory store that fails every write once `failAfter` writes have happened (a crash point). */
export class CrashingStore extends ForwardingBlobStore {
  writes = 0;
  failAfter = Number.POSITIVE_INFINITY;

  constructor() {
    super(new MemoryBlobStore({ maxObjectBytes: 64 * 1024 * 1024 }));
  }
  private check(name: string): void {
    if (++this.writes > this.failAfter) throw new StorageError('STORAGE_IO', `simulated crash writing ${name}`);
  }
  override async put(name: string, data: Uint8Array): Promise<void> {
    this.check(name);
    return this.inner.put(name, data);
  }
  override async putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    this.check(name);
    return this.inner.putStream(name, data);
  }
  override async putAtomic(name: string, data: Uint8Array, opts?: { exclusive?: boolean }): Promise<void> {
    this.check(name);
    return this.inner.putAtomic(name, data, opts);
  }
}

export function crashingStorage(inlineThreshold = 0): { store: CrashingStore; storage: BlobCheckpointStorage } {
  const store = new CrashingStore();
  return { store, storage: new BlobCheckpointStorage(store, { inlineThreshold }) };
}
