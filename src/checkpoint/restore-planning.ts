import type { RestoreSource, StateFileReader } from '../backend/contract.js';
import type { KeyedStateHandle, OperatorStateHandle } from '../backend/handles.js';
import { RestoreError, StreamStateError } from '../errors.js';
import { assignKeyedState, assignOperatorState } from './assignment.js';
import type { CoordinatedOperator } from './job-operators.js';
import type { CheckpointMetadata, OperatorSnapshot } from './metadata.js';
import type { RestoreMode } from './shared-registry.js';
import type { ResolvedSnapshot } from './storage.js';

/** What one subtask restores from. */
export interface SubtaskRestore {
  readonly keyed: RestoreSource<KeyedStateHandle>;
  readonly operator: RestoreSource<OperatorStateHandle>;
}

export interface RestorePlan {
  /** Store-relative directory of the restored snapshot's _metadata. */
  readonly pointer: string;
  readonly checkpointId: number;
  readonly metadata: CheckpointMetadata;
  /** `claim` for this job's own checkpoints; else the configured restore mode. */
  readonly mode: RestoreMode;
  readonly files: StateFileReader;
  /** Per operator of the job: one entry per subtask of its (new) parallelism. */
  readonly operators: ReadonlyMap<string, readonly SubtaskRestore[]>;
  /** The restore sources of one subtask. Throws INVALID_ARGUMENT for an unknown operator or index. */
  subtask(operatorId: string, subtaskIndex: number): SubtaskRestore;
}

/**
 * Routes the handles of `source` to the subtasks of the job's current parallelism (rescaling
 * included). Refuses (UNKNOWN_OPERATOR) a snapshot holding operators the job no longer has,
 * unless `allowNonRestoredState`. Pure: changes nothing, so it runs before any restore state changes.
 */
export function planRestore(
  source: ResolvedSnapshot,
  mode: RestoreMode,
  job: { readonly jobId: string; readonly operators: ReadonlyMap<string, CoordinatedOperator> },
  allowNonRestoredState: boolean,
): RestorePlan {
  const { metadata, files, pointer } = source;
  const byId = new Map<string, OperatorSnapshot>();
  for (const snap of metadata.operators) {
    if (!job.operators.has(snap.operatorId) && !allowNonRestoredState) {
      throw new RestoreError(
        'UNKNOWN_OPERATOR',
        `the snapshot at ${pointer} holds state of operator ${snap.operatorId}, which job ${job.jobId} does not have. ` +
          'Restore with the operator present, or pass allowNonRestoredState to drop its state.',
      );
    }
    byId.set(snap.operatorId, snap);
  }
  const checkpointId = metadata.checkpointId;
  const operators = new Map<string, SubtaskRestore[]>();
  for (const op of job.operators.values()) {
    const snap = byId.get(op.operatorId);
    const keyed = snap ? assignKeyedState(snap, op.parallelism, op.maxParallelism) : [];
    const operator = snap ? assignOperatorState(snap, op.parallelism) : [];
    const subtasks: SubtaskRestore[] = [];
    for (let i = 0; i < op.parallelism; i++) {
      subtasks.push({
        keyed: { handles: keyed[i] ?? [], files, mode, checkpointId },
        operator: { handles: operator[i] ?? [], files, mode, checkpointId },
      });
    }
    operators.set(op.operatorId, subtasks);
  }
  return {
    pointer,
    checkpointId,
    metadata,
    mode,
    files,
    operators,
    subtask: (operatorId, subtaskIndex) => {
      const s = operators.get(operatorId)?.[subtaskIndex];
      if (s === undefined)
        throw new StreamStateError(
          'INVALID_ARGUMENT',
          `no subtask ${subtaskIndex} of operator ${operatorId} in job ${job.jobId}.`,
        );
      return s;
    },
  };
}
