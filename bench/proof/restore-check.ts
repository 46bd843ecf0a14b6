import type { KeyedStateBackend, OperatorStateBackend, StateBackend } from '../../src/backend/contract.js';
import { assignKeyedState, assignOperatorState } from '../../src/checkpoint/assignment.js';
import type { CheckpointMetadata } from '../../src/checkpoint/metadata.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { float64Serializer, stringSerializer, VOID_NAMESPACE } from '../../src/serializers/builtins.js';
import { reducingState, valueState } from '../../src/state/descriptors.js';
import type { CountInput } from '../../src/testing/counting-job.js';
import { SINK_PENDING_STATE, type PendingTransaction } from '../../src/testing/sink.js';
import { SOURCE_OFFSETS_STATE, type PartitionOffset } from '../../src/testing/source.js';

// The counting job's keyed states (same names and serializers as src/testing/counting-job.ts).
const countState = valueState<number>('count', { serializer: float64Serializer });
const sumState = reducingState<number>('sum', (a, b) => a + b, { serializer: float64Serializer });

/** Operator ids of the harness job (runPipeline's defaults). */
const SOURCE = 'source';
const KEYED = 'keyed';
const SINK = 'sink';

export interface RetainedCheck {
  /** chk-<n> directories with a _metadata that were restored. */
  readonly checked: readonly number[];
  /** One line per checkpoint that failed to restore or restored a state inconsistent with its source offsets. */
  readonly problems: readonly string[];
}

/** Store-relative pointers of every chk-<n> directory of `jobId` that has a _metadata, oldest first (damaged ones included). */
export async function checkpointsWithMetadata(
  storage: CheckpointStorage,
  jobId: string,
): Promise<{ id: number; pointer: string }[]> {
  const out: { id: number; pointer: string }[] = [];
  for (const name of await storage.listJobFiles(jobId)) {
    const m = /^[^/]+\/chk-(\d+)\/_metadata$/.exec(name);
    if (m) out.push({ id: Number(m[1]), pointer: name.slice(0, -'/_metadata'.length) });
  }
  return out.sort((a, b) => a.id - b.id);
}

/**
 * Restores every checkpoint of `jobId` that has a _metadata — every subtask of every operator,
 * through `backend`, in no-claim mode (nothing is changed) — and checks that its keyed state is
 * the state its source offsets imply: per key, count and sum of exactly the records before the
 * checkpointed offsets. A _metadata that does not restore, or restores wrong state, is a problem.
 */
export async function checkRetainedCheckpoints(
  storage: CheckpointStorage,
  backend: StateBackend,
  jobId: string,
  input: readonly (readonly CountInput[])[],
): Promise<RetainedCheck> {
  const checked: number[] = [];
  const problems: string[] = [];
  for (const { id, pointer } of await checkpointsWithMetadata(storage, jobId)) {
    try {
      await restoreAndCompare(storage, backend, pointer, input);
      checked.push(id);
    } catch (err) {
      problems.push(
        `${pointer}: ${err instanceof Error ? `${err.name} ${(err as { code?: string }).code ?? ''}: ${err.message}` : String(err)}`,
      );
    }
  }
  return { checked, problems };
}

/** Restores the snapshot at `pointer` and throws when it fails or its state does not match its offsets. */
export async function restoreAndCompare(
  storage: CheckpointStorage,
  backend: StateBackend,
  pointer: string,
  input: readonly (readonly CountInput[])[],
): Promise<void> {
  const { metadata, files } = await storage.resolve(pointer);
  const opened: (KeyedStateBackend<string> | OperatorStateBackend)[] = [];
  try {
    const offsets: PartitionOffset[] = [];
    const counts = new Map<string, { count: number; sum: number }>();
    for (const op of metadata.operators) {
      const operatorHandles = assignOperatorState(op, op.parallelism);
      const keyedHandles = assignKeyedState(op, op.parallelism, op.maxParallelism);
      for (let i = 0; i < op.parallelism; i++) {
        const info = { jobId: metadata.jobId, operatorId: op.operatorId, subtaskIndex: i, parallelism: op.parallelism };
        const source = { files, mode: 'no-claim' as const, checkpointId: metadata.checkpointId };
        const ob = await backend.createOperatorStateBackend({
          ...info,
          restore: { ...source, handles: operatorHandles[i] },
        });
        opened.push(ob);
        if (op.operatorId === SOURCE) offsets.push(...ob.getListState<PartitionOffset>(SOURCE_OFFSETS_STATE).get());
        if (op.operatorId === SINK) ob.getListState<PendingTransaction<unknown>>(SINK_PENDING_STATE).get();
        if (op.operatorId !== KEYED) continue;
        const kb = await backend.createKeyedStateBackend<string>({
          ...info,
          maxParallelism: op.maxParallelism,
          keyGroupRange: keyGroupRangeForSubtask(op.maxParallelism, op.parallelism, i),
          keySerializer: stringSerializer,
          restore: { ...source, handles: keyedHandles[i] },
        });
        opened.push(kb);
        await readCounts(kb, counts);
      }
    }
    compare(metadata, offsets, counts, input);
  } finally {
    await Promise.allSettled(opened.map((b) => b.close()));
  }
}

async function readCounts(
  kb: KeyedStateBackend<string>,
  into: Map<string, { count: number; sum: number }>,
): Promise<void> {
  const counts = new Map<string, number>();
  await kb.applyToAllKeys(VOID_NAMESPACE, countState, (key, state) => {
    counts.set(key, state.value() ?? 0);
  });
  for (const [key, count] of counts) {
    kb.setCurrentKey(key);
    const sum = kb.getState(sumState).get() ?? 0;
    if (into.has(key)) throw new Error(`key ${key} was restored by two keyed subtasks`);
    into.set(key, { count, sum });
  }
}

function compare(
  metadata: CheckpointMetadata,
  offsets: readonly PartitionOffset[],
  counts: ReadonlyMap<string, { count: number; sum: number }>,
  input: readonly (readonly CountInput[])[],
): void {
  const seen = new Set<number>();
  const expected = new Map<string, { count: number; sum: number }>();
  for (const { partition, offset } of offsets) {
    if (seen.has(partition)) throw new Error(`partition ${partition} has two restored offsets`);
    seen.add(partition);
    const records = input[partition];
    if (records === undefined || offset > records.length)
      throw new Error(`restored offset ${offset} of partition ${partition} is outside the input`);
    for (let i = 0; i < offset; i++) {
      const e = expected.get(records[i].key) ?? { count: 0, sum: 0 };
      e.count++;
      e.sum += records[i].value;
      expected.set(records[i].key, e);
    }
  }
  // A fresh source restores offsets for every partition it was assigned; none may be missing.
  if (seen.size !== input.length)
    throw new Error(
      `checkpoint ${metadata.checkpointId} restored offsets for ${seen.size} of ${input.length} partitions`,
    );
  for (const key of new Set([...expected.keys(), ...counts.keys()])) {
    const e = expected.get(key) ?? { count: 0, sum: 0 };
    const got = counts.get(key) ?? { count: 0, sum: 0 };
    if (e.count !== got.count || e.sum !== got.sum) {
      throw new Error(
        `checkpoint ${metadata.checkpointId}: key ${key} restored count ${got.count} / sum ${got.sum}, but its source offsets imply ${e.count} / ${e.sum} (state and offsets are not one consistent cut)`,
      );
    }
  }
}
