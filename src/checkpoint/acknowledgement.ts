import { isKeyGroupsHandle, type KeyedStateHandle, type OperatorStateHandle } from '../backend/handles.js';
import { SnapshotError, StreamStateError } from '../errors.js';
import { keyGroupRangeForSubtask } from '../keygroups/key-groups.js';
import type { ChannelStateHandle } from './channel-state.js';
import type { CoordinatedOperator } from './job-operators.js';
import type { CompletedCheckpointInfo } from './metadata.js';

/**
 * Why a checkpoint did not complete. Stable, machine-readable (match on it, not on messages; more
 * may be added, so treat unknown ones like `ABORTED`). Every failed checkpoint carries one: in
 * `acknowledge()` results, `CheckpointDeclinedError.reason`, and the statistics (checkpoint-stats.ts).
 * - `SHARED_STATE_NOT_LIVE`: its handles reference a file that is neither its own upload nor live
 *   in the shared-state registry (deleted, another checkpoint's private file, unknown origin). The
 *   backend uploads the data again at the next checkpoint.
 * - `ABORTED`: `abort()` was called for it without a more specific reason.
 * - `SUBSUMED`: a newer checkpoint completed first.
 * - `ALREADY_COMPLETED`: it completed already (an acknowledgement arrived after that).
 * - `JOB_STOPPED`: the coordinator was shut down while it was pending.
 * - `TIMEOUT`: it was still pending when the scheduler's `timeout` ran out (Flink's CHECKPOINT_EXPIRED).
 * - `DECLINED`: a subtask declined it (its snapshot failed; Flink's CHECKPOINT_DECLINED / CHECKPOINT_ASYNC_EXCEPTION).
 * - `TASK_NOT_READY`: the runtime declined the trigger: a task is not running (yet, or any more).
 * - `TRIGGER_FAILED`: the runtime's trigger callback threw.
 * - `STORAGE_IO`: its _metadata (or the job lease check before it) could not be written or read.
 * - `FENCED`: a newer instance of the job took the lease; this instance completes nothing.
 * - `CANCELLED`: the runtime cancelled it (e.g. a cancellation barrier), not a failure of the checkpoint.
 */
export type CheckpointFailureReason =
  | 'SHARED_STATE_NOT_LIVE'
  | 'ABORTED'
  | 'SUBSUMED'
  | 'ALREADY_COMPLETED'
  | 'JOB_STOPPED'
  | 'TIMEOUT'
  | 'DECLINED'
  | 'TASK_NOT_READY'
  | 'TRIGGER_FAILED'
  | 'STORAGE_IO'
  | 'FENCED'
  | 'CANCELLED';

/** Every CheckpointFailureReason (for validation and documentation). */
export const CHECKPOINT_FAILURE_REASONS: readonly CheckpointFailureReason[] = [
  'SHARED_STATE_NOT_LIVE',
  'ABORTED',
  'SUBSUMED',
  'ALREADY_COMPLETED',
  'JOB_STOPPED',
  'TIMEOUT',
  'DECLINED',
  'TASK_NOT_READY',
  'TRIGGER_FAILED',
  'STORAGE_IO',
  'FENCED',
  'CANCELLED',
];

/**
 * Whether a failed checkpoint counts against `tolerableFailures` (Flink's CheckpointFailureManager
 * counts expired, declined, I/O and finalization failures; it ignores subsumption, shutdown,
 * tasks not running, cancellation and trigger failures).
 */
export function countsAgainstTolerableFailures(reason: CheckpointFailureReason): boolean {
  return reason === 'TIMEOUT' || reason === 'DECLINED' || reason === 'STORAGE_IO' || reason === 'SHARED_STATE_NOT_LIVE';
}

/** What one `acknowledge()` call did (docs/RUNTIME.md, "A checkpoint"). */
export type AcknowledgeResult =
  /** Recorded; `missing` subtasks have not acknowledged yet. */
  | { readonly status: 'waiting'; readonly missing: number }
  /** This was the last acknowledgement and the checkpoint (or savepoint) completed. */
  | { readonly status: 'completed'; readonly checkpoint: CompletedCheckpointInfo }
  /**
   * The checkpoint did not complete: declined by this acknowledgement (then call
   * notifyCheckpointAborted on the backends), or it had already ended (a late acknowledgement,
   * whose files the coordinator deleted when nothing else uses them).
   */
  | {
      readonly status: 'rejected';
      readonly checkpointId: number;
      readonly reason: CheckpointFailureReason;
      readonly message: string;
    };

/** How `completion` of a checkpoint that did not complete rejects: code CHECKPOINT_DECLINED plus the reason. */
export class CheckpointDeclinedError extends SnapshotError {
  constructor(
    readonly checkpointId: number,
    readonly reason: CheckpointFailureReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super('CHECKPOINT_DECLINED', message, options);
  }
}

/** What a subtask acknowledges: the handles of its snapshot tasks (nulls, i.e. empty snapshots, are dropped). */
export interface SubtaskAck {
  readonly keyed: readonly (KeyedStateHandle | null)[];
  readonly operator: readonly (OperatorStateHandle | null)[];
  /** In-flight records of an unaligned checkpoint (ChannelStateWriter.finish); null or absent: none. */
  readonly channel?: ChannelStateHandle | null;
  /** What the runtime measured for this subtask's snapshot (recorded in the checkpoint statistics). */
  readonly metrics?: SubtaskCheckpointMetrics;
}

/** Durations (ms, non-negative) a runtime measures for one subtask's part of a checkpoint (Flink's CheckpointMetrics). */
export interface SubtaskCheckpointMetrics {
  /** The synchronous part: from the start of snapshot() until its promise resolved (record processing paused). */
  readonly syncDurationMs?: number;
  /** The asynchronous part: from then until the snapshot tasks' `done` resolved (serialize and write). */
  readonly asyncDurationMs?: number;
  /** From the first barrier to the last barrier across this task's inputs (0 for a task with one input). */
  readonly alignmentDurationMs?: number;
}

/** An acknowledgement with the empty snapshots dropped. */
export interface NormalizedAck {
  readonly keyed: readonly KeyedStateHandle[];
  readonly operator: readonly OperatorStateHandle[];
  readonly channel?: ChannelStateHandle;
  readonly metrics?: SubtaskCheckpointMetrics;
}

export function dropNulls(state: SubtaskAck): NormalizedAck {
  const keyed = (state.keyed ?? []).filter((h): h is KeyedStateHandle => h !== null && typeof h === 'object');
  const operator = (state.operator ?? []).filter((h): h is OperatorStateHandle => h !== null && typeof h === 'object');
  return state.channel ? { keyed, operator, channel: state.channel } : { keyed, operator };
}

/** Drops nulls and checks every keyed handle against the subtask (maxParallelism, key-group range). INVALID_ARGUMENT otherwise. */
export function normalizeAck(
  state: SubtaskAck,
  op: CoordinatedOperator,
  checkpointId: number,
  subtaskIndex: number,
  jobId: string,
): NormalizedAck {
  const { keyed, operator, channel } = dropNulls(state);
  if (channel !== undefined && channel.type !== 'channel-state') {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `checkpoint ${checkpointId}: subtask ${subtaskIndex} of ${op.operatorId} acknowledged a ${String((channel as { type?: unknown }).type)} handle as channel state; pass ChannelStateWriter.finish()'s handle.`,
    );
  }
  const extra = channel ? { channel } : {};
  for (const h of keyed) {
    if (h.maxParallelism !== op.maxParallelism) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `checkpoint ${checkpointId}: subtask ${subtaskIndex} of ${op.operatorId} acknowledged a ${h.type} handle with maxParallelism ${h.maxParallelism}, ` +
          `but the operator has ${op.maxParallelism}. Create the keyed backend with the operator's maxParallelism.`,
      );
    }
    checkKeyedHandleRange(h, {
      jobId,
      operatorId: op.operatorId,
      parallelism: op.parallelism,
      maxParallelism: op.maxParallelism,
      checkpointId,
      subtaskIndex,
    });
  }
  for (const h of operator) {
    if (h.type !== 'operator') {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `checkpoint ${checkpointId}: subtask ${subtaskIndex} of ${op.operatorId} acknowledged a non-operator handle as operator state.`,
      );
    }
  }
  const metrics = state.metrics;
  if (metrics !== undefined) {
    for (const field of ['syncDurationMs', 'asyncDurationMs', 'alignmentDurationMs'] as const) {
      const v: unknown = metrics[field];
      if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v >= 0)) {
        throw new StreamStateError(
          'INVALID_ARGUMENT',
          `checkpoint ${checkpointId}: subtask ${subtaskIndex} of ${op.operatorId} acknowledged metrics.${field} = ${String(v)}; it must be a non-negative number of milliseconds (or left out).`,
        );
      }
    }
    return { keyed, operator, ...extra, metrics };
  }
  return { keyed, operator, ...extra };
}

interface RangeJson {
  readonly start: number;
  readonly end: number;
}

/**
 * A keyed handle acknowledged by subtask `subtaskIndex` must cover exactly that subtask's key
 * groups (keyGroupRangeForSubtask), whatever its type (key-groups, LevelDB, changelog, ...): the
 * subtasks' ranges partition the key groups, so no key group is then held twice or by the wrong
 * subtask. A key-groups handle's blocks must lie within its range too. (Handles nested inside a
 * changelog handle may be wider after rescaling: their restore reads only the outer range.)
 */
export function checkKeyedHandleRange(
  handle: KeyedStateHandle,
  where: {
    readonly jobId: string;
    readonly operatorId: string;
    readonly parallelism: number;
    readonly maxParallelism: number;
    readonly checkpointId: number;
    readonly subtaskIndex: number;
  },
): void {
  const own = keyGroupRangeForSubtask(where.maxParallelism, where.parallelism, where.subtaskIndex);
  const prefix = `checkpoint ${where.checkpointId} of job ${where.jobId}: subtask ${where.subtaskIndex} of operator ${where.operatorId} (parallelism ${where.parallelism}, maxParallelism ${where.maxParallelism})`;
  const fix = `Create subtask i's keyed backend with keyGroupRange keyGroupRangeForSubtask(${where.maxParallelism}, ${where.parallelism}, i) and acknowledge with that subtask's index.`;
  const r = handle.keyGroupRange as RangeJson | undefined;
  if (!isRange(r) || r.start !== own.start || r.end !== own.end) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `${prefix} acknowledged a ${String(handle.type)} handle for key groups ${describe(r)}, but the subtask owns key groups ${own.start}-${own.end}; ` +
        `a checkpoint must hold every key group exactly once. ${fix}`,
    );
  }
  if (isKeyGroupsHandle(handle)) {
    const stray = handle.blocks.find((b) => !own.contains(b.keyGroup));
    if (stray !== undefined) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `${prefix} acknowledged a key-groups handle for key groups ${own.start}-${own.end} with a block of key group ${stray.keyGroup}. ${fix}`,
      );
    }
  }
}

function isRange(r: unknown): r is RangeJson {
  return (
    r !== null &&
    typeof r === 'object' &&
    Number.isInteger((r as RangeJson).start) &&
    Number.isInteger((r as RangeJson).end)
  );
}

function describe(r: unknown): string {
  return isRange(r) ? `${r.start}-${r.end}` : JSON.stringify(r ?? null);
}
