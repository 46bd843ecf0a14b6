import { StreamStateError } from '../errors.js';
import { checkParallelism } from '../keygroups/key-groups.js';

/** One operator of the job as the coordinator sees it. */
export interface CoordinatedOperator {
  readonly operatorId: string;
  readonly parallelism: number;
  readonly maxParallelism: number;
}

/** The job's operators by id; refuses duplicate ids, bad parallelism and an empty job. */
export function indexOperators(list: readonly CoordinatedOperator[]): ReadonlyMap<string, CoordinatedOperator> {
  const ops = new Map<string, CoordinatedOperator>();
  for (const op of list) {
    if (ops.has(op.operatorId))
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `operator id ${op.operatorId} is listed twice; operator ids must be unique.`,
      );
    checkParallelism(op.maxParallelism, op.parallelism);
    ops.set(op.operatorId, op);
  }
  if (ops.size === 0)
    throw new StreamStateError('INVALID_ARGUMENT', 'a CheckpointCoordinator needs at least one operator.');
  return ops;
}

/** The operator `operatorId`, checking that `subtaskIndex` is one of its subtasks. INVALID_ARGUMENT otherwise. */
export function operatorOf(
  operators: ReadonlyMap<string, CoordinatedOperator>,
  jobId: string,
  operatorId: string,
  subtaskIndex: number,
): CoordinatedOperator {
  const op = operators.get(operatorId);
  if (op === undefined) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `job ${jobId} has no operator ${operatorId}; known: ${[...operators.keys()].join(', ')}.`,
    );
  }
  if (!Number.isInteger(subtaskIndex) || subtaskIndex < 0 || subtaskIndex >= op.parallelism) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `operator ${operatorId} has subtasks 0..${op.parallelism - 1}; got ${subtaskIndex}.`,
    );
  }
  return op;
}

/** Subtasks of all operators: the acknowledgements a checkpoint needs. */
export function subtaskCount(operators: ReadonlyMap<string, CoordinatedOperator>): number {
  let n = 0;
  for (const op of operators.values()) n += op.parallelism;
  return n;
}
