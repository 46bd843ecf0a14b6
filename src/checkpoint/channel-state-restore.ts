import type { StateFileReader } from '../backend/contract.js';
import { ChannelStateError } from '../errors.js';
import { subtaskForKeyGroup } from '../keygroups/key-groups.js';
import type { Serializer } from '../serializers/serializer.js';
import { readChannelState, type InFlightRecord } from './channel-state.js';
import type { CheckpointMetadata, OperatorSnapshot } from './metadata.js';

/**
 * One exchange of the job: records flow from `producer` (whose subtasks hold its output channel
 * state) to `consumer` (whose subtasks hold its input channel state). The restore model assumes
 * each operator has at most one input and one output exchange (the reference pipeline's shape).
 */
export interface ChannelStateExchange {
  readonly producer: string;
  readonly consumer: string;
  /** The consumer's parallelism after the restore. */
  readonly parallelism: number;
  /** The job's maxParallelism (key groups of keyed records). */
  readonly maxParallelism: number;
}

/**
 * The in-flight records of `exchange` in a snapshot, placed on the consumer's new subtasks:
 * result[i] is what new subtask i must process, in order, before any new input.
 *
 * For each old channel (upstream u → downstream d) the consumer's input state of that channel comes
 * first (it read those records before the barrier overtook the rest), then the producer's output
 * state (the records still queued). Channels are taken by d, then u. A keyed exchange places each
 * record by its key group (so every record reaches the subtask that owns its key), a round-robin
 * one places old subtask d's records on new subtask d mod parallelism. The order within one old
 * channel is kept.
 */
export async function placeInFlightRecords<T>(
  metadata: CheckpointMetadata,
  files: StateFileReader,
  exchange: ChannelStateExchange,
  serializer: Serializer<T>,
): Promise<InFlightRecord<T>[][]> {
  const producer = metadata.operators.find((o) => o.operatorId === exchange.producer);
  const consumer = metadata.operators.find((o) => o.operatorId === exchange.consumer);
  const groups = new Map<string, { u: number; d: number; input: InFlightRecord<T>[]; output: InFlightRecord<T>[] }>();
  const group = (u: number, d: number) => {
    const key = `${d}/${u}`;
    let g = groups.get(key);
    if (g === undefined) {
      g = { u, d, input: [], output: [] };
      groups.set(key, g);
    }
    return g;
  };
  let partitioning: 'keyed' | 'round-robin' | null = null;
  const visit = async (
    op: OperatorSnapshot | undefined,
    direction: 'input' | 'output',
    other: OperatorSnapshot | undefined,
  ) => {
    if (op === undefined) return;
    for (const s of op.subtasks) {
      if (s.channel === undefined) continue;
      const what = `channel state of ${op.operatorId}[${s.subtaskIndex}] in checkpoint ${metadata.checkpointId}`;
      const read = await readChannelState(
        { ...s.channel, entries: s.channel.entries.filter((e) => e.direction === direction) },
        files,
        serializer,
        what,
      );
      for (const { entry, records } of read) {
        if (other === undefined || entry.channel >= other.parallelism) {
          throw new ChannelStateError(
            'CHANNEL_STATE_UNKNOWN_CHANNEL',
            `${what}: ${direction} channel ${entry.channel} names subtask ${entry.channel} of ${direction === 'input' ? exchange.producer : exchange.consumer}, ` +
              `which the snapshot ${other === undefined ? 'does not hold' : `holds at parallelism ${other.parallelism}`}; the snapshot is inconsistent. Restore an earlier checkpoint.`,
          );
        }
        partitioning ??= entry.partitioning;
        const g = direction === 'input' ? group(entry.channel, s.subtaskIndex) : group(s.subtaskIndex, entry.channel);
        (direction === 'input' ? g.input : g.output).push(...records);
      }
    }
  };
  await visit(consumer, 'input', producer);
  await visit(producer, 'output', consumer);
  const out: InFlightRecord<T>[][] = Array.from({ length: exchange.parallelism }, () => []);
  const ordered = [...groups.values()].sort((a, b) => a.d - b.d || a.u - b.u);
  for (const g of ordered) {
    for (const r of [...g.input, ...g.output]) {
      let target: number;
      if (partitioning === 'keyed') {
        const kg = r.keyGroup;
        if (kg === undefined || !Number.isSafeInteger(kg) || kg < 0 || kg >= exchange.maxParallelism) {
          throw new ChannelStateError(
            'CHANNEL_STATE_UNPLACEABLE',
            `checkpoint ${metadata.checkpointId}: in-flight record ${r.sequence} from ${exchange.producer}[${g.u}] to ${exchange.consumer}[${g.d}] has key group ${kg}, ` +
              `outside 0..${exchange.maxParallelism - 1}; it cannot be placed on a subtask. Restore with the maxParallelism the job ran with.`,
          );
        }
        target = subtaskForKeyGroup(exchange.maxParallelism, exchange.parallelism, kg);
      } else target = g.d % exchange.parallelism;
      out[target].push(r);
    }
  }
  return out;
}

/**
 * Refuses a restore that would drop in-flight records: channel state held by an operator that no
 * exchange of the job reads (removed, renamed, or its edge gone). Dropping it would lose records,
 * so allowNonRestoredState does not apply; restore an aligned checkpoint or a savepoint instead.
 */
export function checkChannelStatePlaceable(
  metadata: CheckpointMetadata,
  exchanges: readonly ChannelStateExchange[],
): void {
  for (const op of metadata.operators) {
    for (const s of op.subtasks) {
      for (const e of s.channel?.entries ?? []) {
        const placed =
          e.direction === 'input'
            ? exchanges.some((x) => x.consumer === op.operatorId)
            : exchanges.some((x) => x.producer === op.operatorId);
        if (!placed) {
          throw new ChannelStateError(
            'CHANNEL_STATE_UNPLACEABLE',
            `checkpoint ${metadata.checkpointId} holds ${e.count} in-flight record(s) on ${e.direction} channel ${e.channel} of ${op.operatorId}[${s.subtaskIndex}], ` +
              `but the job has no exchange ${e.direction === 'input' ? 'into' : 'out of'} ${op.operatorId}; they cannot be placed and would be lost ` +
              '(allowNonRestoredState does not drop in-flight data). Restore an aligned checkpoint or a savepoint, or keep the operator and its edge.',
          );
        }
      }
    }
  }
}
