import { KafkaError } from '../errors.js';

/** One source split: a partition of a topic and the offset of the next record to read from it. */
export interface KafkaSplit {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
}

/** How many partitions a topic had when the source last agreed on its partitions. */
export interface TopicPartitionCount {
  readonly topic: string;
  readonly partitions: number;
}

/** Split-list operator state: each subtask's splits with their offsets (redistributed round-robin on a rescaled restore). */
export const KAFKA_SPLITS_STATE = 'kafka-splits';
/** Union-list operator state: the partition counts the splits cover, so a restore can tell new partitions from other subtasks' ones. */
export const KAFKA_KNOWN_PARTITIONS_STATE = 'kafka-known-partitions';

/** A split this subtask reads, with where reading starts: an offset, or the partition's log start (a partition never read before). */
export interface PlannedSplit {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number | 'earliest';
}

/**
 * The subtask that first reads a partition nobody has read before. Deterministic, spreads the
 * partitions of a topic round-robin, and starts different topics at different subtasks.
 */
export function subtaskForNewPartition(topic: string, partition: number, parallelism: number): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < topic.length; i++) h = Math.imul(h ^ topic.charCodeAt(i), 0x01000193) >>> 0;
  return (h + partition) % parallelism;
}

/**
 * Which splits subtask `subtaskIndex` of `parallelism` reads in this attempt.
 *
 * - Restored splits (this subtask's share of the split-list state) are read from their offsets.
 * - A partition the checkpoint did not know (beyond `known`'s count for its topic: the topic grew,
 *   or the topic is new to the job) is read from its log start by subtaskForNewPartition's subtask.
 * - A partition the checkpoint knew but that is not among this subtask's restored splits belongs to
 *   another subtask.
 *
 * `current` must be the same for every subtask of the attempt (fetched once per attempt), so the
 * subtasks divide one set of partitions. A restored split whose topic or partition is not in
 * `current` fails with KAFKA_PARTITION_MISSING: dropping it would lose its unread records silently.
 */
export function planSplits(args: {
  readonly restored: readonly KafkaSplit[] | null;
  readonly known: readonly TopicPartitionCount[];
  readonly current: readonly TopicPartitionCount[];
  readonly subtaskIndex: number;
  readonly parallelism: number;
}): PlannedSplit[] {
  const { restored, current, subtaskIndex, parallelism } = args;
  const counts = new Map(current.map((t) => [t.topic, t.partitions]));
  const known = new Map<string, number>();
  // A fresh start knows no partitions; a restore knows what every subtask of the checkpoint covered.
  if (restored !== null)
    for (const k of args.known) known.set(k.topic, Math.min(known.get(k.topic) ?? Infinity, k.partitions));
  const planned: PlannedSplit[] = [];
  for (const s of restored ?? []) {
    const count = counts.get(s.topic);
    if (count === undefined || s.partition >= count) {
      throw new KafkaError(
        'KAFKA_PARTITION_MISSING',
        `the restored checkpoint holds offset ${s.offset} of ${s.topic}[${s.partition}], but ` +
          (count === undefined
            ? `the source no longer reads topic '${s.topic}'`
            : `'${s.topic}' has only ${count} partitions now`) +
          '; its unread records would be lost. Restore with the topic (and its partitions) the checkpoint was taken with, or start the job fresh.',
      );
    }
    planned.push({ topic: s.topic, partition: s.partition, offset: s.offset });
  }
  for (const { topic, partitions } of current) {
    for (let p = known.get(topic) ?? 0; p < partitions; p++) {
      if (subtaskForNewPartition(topic, p, parallelism) === subtaskIndex)
        planned.push({ topic, partition: p, offset: 'earliest' });
    }
  }
  return planned;
}
