import type { Admin } from 'kafkajs';
import { KafkaError } from '../errors.js';
import { kafkaCall } from './client-errors.js';
import type { KafkaSplit, PlannedSplit, TopicPartitionCount } from './splits.js';

/** A partition's log start (oldest offset still held) and end (the offset the next record gets). */
export interface Watermarks {
  readonly low: number;
  readonly high: number;
}

/** What the source sees of its topics at the start of an attempt: fetched once, shared by every subtask. */
export interface TopicsSnapshot {
  readonly counts: readonly TopicPartitionCount[];
  /** `${topic}\0${partition}` -> watermarks. */
  readonly watermarks: ReadonlyMap<string, Watermarks>;
}

export function partitionKey(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}

/** Partition counts and watermarks of `topics`; a topic Kafka does not know is KAFKA_TOPIC_MISSING. */
export async function fetchTopics(
  admin: Admin,
  topics: readonly string[],
  brokers: readonly string[],
): Promise<TopicsSnapshot> {
  const meta = await kafkaCall(`reading the metadata of ${topics.join(', ')}`, brokers, () =>
    admin.fetchTopicMetadata({ topics: [...topics] }),
  );
  const counts: TopicPartitionCount[] = [];
  const watermarks = new Map<string, Watermarks>();
  for (const topic of topics) {
    const t = meta.topics.find((x) => x.name === topic);
    if (!t || t.partitions.length === 0) {
      throw new KafkaError(
        'KAFKA_TOPIC_MISSING',
        `Kafka has no topic '${topic}' (no partitions in its metadata); create it, or fix the source's topic list.`,
      );
    }
    counts.push({ topic, partitions: t.partitions.length });
    const offsets = await kafkaCall(`reading the offsets of ${topic}`, brokers, () => admin.fetchTopicOffsets(topic));
    for (const o of offsets)
      watermarks.set(partitionKey(topic, o.partition), { low: Number(o.low), high: Number(o.high) });
  }
  return { counts, watermarks };
}

/** What to do with a restored offset outside a partition's [log start, end]: fail (default), or start at the log start and report it. */
export type OffsetOutOfRangePolicy = 'fail' | 'earliest';

export interface OffsetReset {
  readonly topic: string;
  readonly partition: number;
  readonly restoredOffset: number;
  readonly resetTo: number;
  readonly watermarks: Watermarks;
}

/**
 * Resolves where each planned split starts. 'earliest' means the partition's log start. A restored
 * offset below the log start (retention deleted records that were never read) or above the end (the
 * topic was recreated) is KAFKA_OFFSET_OUT_OF_RANGE under policy 'fail'; under 'earliest' it starts at
 * the log start and `onReset` hears of it (the records lost to retention are reported, not hidden).
 */
export function resolveStartOffsets(
  planned: readonly PlannedSplit[],
  snapshot: TopicsSnapshot,
  policy: OffsetOutOfRangePolicy,
  onReset: (reset: OffsetReset) => void,
): KafkaSplit[] {
  return planned.map((s) => {
    const wm = snapshot.watermarks.get(partitionKey(s.topic, s.partition));
    if (!wm) {
      throw new KafkaError(
        'KAFKA_PARTITION_MISSING',
        `Kafka returned no offsets for ${s.topic}[${s.partition}]; the partition does not exist (any more).`,
      );
    }
    if (s.offset === 'earliest') return { topic: s.topic, partition: s.partition, offset: wm.low };
    if (s.offset >= wm.low && s.offset <= wm.high) return { topic: s.topic, partition: s.partition, offset: s.offset };
    if (policy === 'fail') {
      throw new KafkaError(
        'KAFKA_OFFSET_OUT_OF_RANGE',
        `the restored offset ${s.offset} of ${s.topic}[${s.partition}] is outside the partition's range [${wm.low}, ${wm.high}] ` +
          (s.offset < wm.low
            ? `(retention deleted offsets ${s.offset}..${wm.low - 1} before they were read)`
            : '(the partition ends before it: the topic was recreated?)') +
          ". Restore from a newer checkpoint, or accept the gap with offsetOutOfRange: 'earliest'.",
      );
    }
    onReset({ topic: s.topic, partition: s.partition, restoredOffset: s.offset, resetTo: wm.low, watermarks: wm });
    return { topic: s.topic, partition: s.partition, offset: wm.low };
  });
}
