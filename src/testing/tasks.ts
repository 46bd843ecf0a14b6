import type { KeyedStateBackend, OperatorStateBackend, SnapshotOptions, SnapshotTask } from '../backend/contract.js';
import type { KeyedStateHandle, OperatorStateHandle } from '../backend/handles.js';
import type { ChannelStateHandle } from '../checkpoint/channel-state.js';

/** The snapshot tasks of one subtask for one checkpoint (operator state first, then keyed state). */
export interface SubtaskSnapshot {
  readonly operator: SnapshotTask<OperatorStateHandle>;
  readonly keyed: SnapshotTask<KeyedStateHandle> | null;
  /** Unaligned checkpoints: the in-flight records, written once the last barrier came (null: none). */
  readonly channel?: Promise<ChannelStateHandle | null>;
}

/**
 * What every subtask of the pipeline shares: its state backends and the checkpoint call order of
 * the runtime contract (docs/RUNTIME.md): user state is written first, then the operator state
 * backend snapshots, then the keyed one. The caller must not touch state until this resolves.
 */
export abstract class SubtaskBase {
  private closed = false;

  constructor(
    readonly operatorId: string,
    readonly subtaskIndex: number,
    protected readonly operatorBackend: OperatorStateBackend,
    protected readonly keyedBackend: KeyedStateBackend<unknown> | null,
  ) {}

  /** Writes the subtask's in-memory bookkeeping (offsets, pending transactions) into its state. */
  protected abstract prepareSnapshot(checkpointId: number): void;

  /** `options`: a checkpoint's `{ type: 'checkpoint', full, streams }`, or a savepoint's snapshotOptions (type, format, full). */
  async snapshotState(checkpointId: number, options: SnapshotOptions): Promise<SubtaskSnapshot> {
    this.prepareSnapshot(checkpointId);
    const operator = await this.operatorBackend.snapshot(checkpointId, options);
    let keyed: SnapshotTask<KeyedStateHandle> | null = null;
    try {
      keyed = this.keyedBackend ? await this.keyedBackend.snapshot(checkpointId, options) : null;
    } catch (err) {
      operator.done.catch(() => undefined); // the checkpoint fails as a whole; do not leave this rejection unhandled
      throw err;
    }
    return { operator, keyed };
  }

  async notifyCheckpointComplete(checkpointId: number): Promise<void> {
    await Promise.all([
      this.operatorBackend.notifyCheckpointComplete(checkpointId),
      this.keyedBackend?.notifyCheckpointComplete(checkpointId),
    ]);
  }

  async notifyCheckpointAborted(checkpointId: number): Promise<void> {
    await Promise.all([
      this.operatorBackend.notifyCheckpointAborted(checkpointId),
      this.keyedBackend?.notifyCheckpointAborted(checkpointId),
    ]);
  }

  /** Closes the backends; in-flight snapshots fail with SNAPSHOT_CANCELLED. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([this.operatorBackend.close(), this.keyedBackend?.close()]);
  }
}
