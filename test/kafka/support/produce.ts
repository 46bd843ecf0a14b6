import { Kafka, logLevel, type Message, Partitioners } from 'kafkajs';
import type { CountInput } from '../../../src/testing/index.js';
import type { KafkaRecord } from '../../../src/kafka/index.js';

export function testKafka(brokers: readonly string[]): Kafka {
  return new Kafka({
    clientId: 'streamstate-test',
    brokers: [...brokers],
    logLevel: logLevel.NOTHING,
    retry: { retries: 3, initialRetryTime: 100 },
  });
}

/** Produces partition i of `input` to partition i of `topic` (records keyed by their key, JSON values). */
export function producePartitions(
  brokers: readonly string[],
  topic: string,
  input: readonly (readonly CountInput[])[],
  firstPartition = 0,
): Promise<void> {
  return produceMessages(
    brokers,
    topic,
    input.flatMap((part, p) =>
      part.map((r) => ({ key: r.key, value: JSON.stringify(r), partition: firstPartition + p })),
    ),
  );
}

/** Produces `messages` to `topic` in order, 500 per request (no partition and no key: KafkaJS's default partitioner places it). */
export async function produceMessages(
  brokers: readonly string[],
  topic: string,
  messages: readonly Message[],
): Promise<void> {
  const producer = testKafka(brokers).producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
  });
  await producer.connect();
  try {
    for (let i = 0; i < messages.length; i += 500) await producer.send({ topic, messages: messages.slice(i, i + 500) });
  } finally {
    await producer.disconnect();
  }
}

export function deserializeCount(record: KafkaRecord): CountInput {
  return JSON.parse(record.value!.toString('utf8')) as CountInput;
}

let topicCounter = 0;
/** A topic name unique to this process and test. */
export function uniqueTopic(what: string): string {
  return `${what}-${process.pid}-${++topicCounter}`;
}

/** A record read back from a topic: its value and its string headers. */
export interface ReadRecord {
  readonly partition: number;
  readonly offset: number;
  readonly value: string;
  readonly headers: Readonly<Record<string, string>>;
}

/**
 * Every record of `topic` up to the end its partitions have now (a fresh consumer group, from the
 * start). Resolves when each partition was read to its end: no timing involved.
 */
export async function readTopic(brokers: readonly string[], topic: string): Promise<ReadRecord[]> {
  const kafka = testKafka(brokers);
  const admin = kafka.admin();
  await admin.connect();
  const ends = new Map<number, number>();
  try {
    for (const o of await admin.fetchTopicOffsets(topic)) ends.set(o.partition, Number(o.high));
  } finally {
    await admin.disconnect();
  }
  const left = new Set([...ends].filter(([, high]) => high > 0).map(([p]) => p));
  const out: ReadRecord[] = [];
  if (left.size === 0) return out;
  const consumer = kafka.consumer({
    groupId: `read-${topic}-${Date.now()}`,
    sessionTimeout: 6000,
    heartbeatInterval: 200,
  });
  await consumer.connect();
  try {
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      consumer
        .run({
          eachMessage: async ({ partition, message }) => {
            const offset = Number(message.offset);
            if (offset >= ends.get(partition)!) return;
            const headers: Record<string, string> = {};
            for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
            out.push({ partition, offset, value: message.value?.toString('utf8') ?? '', headers });
            if (offset === ends.get(partition)! - 1) left.delete(partition);
            if (left.size === 0) resolve();
          },
        })
        .catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  return out;
}

/** De-duplicates sink output by its (transaction id, sequence) headers; returns the records kept and how many were dropped. */
export function dedupeByHeaders(records: readonly ReadRecord[]): { kept: ReadRecord[]; duplicates: number } {
  const seen = new Set<string>();
  const kept: ReadRecord[] = [];
  for (const r of records) {
    const id = `${r.headers['streamstate-transaction']}\u0000${r.headers['streamstate-sequence']}`;
    if (seen.has(id)) continue;
    seen.add(id);
    kept.push(r);
  }
  return { kept, duplicates: records.length - kept.length };
}
