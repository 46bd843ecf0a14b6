import { Kafka, logLevel, Partitioners } from 'kafkajs';
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
export async function producePartitions(
  brokers: readonly string[],
  topic: string,
  input: readonly (readonly CountInput[])[],
  firstPartition = 0,
): Promise<void> {
  const producer = testKafka(brokers).producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
  });
  await producer.connect();
  try {
    for (let p = 0; p < input.length; p++) {
      for (let i = 0; i < input[p].length; i += 500) {
        const messages = input[p]
          .slice(i, i + 500)
          .map((r) => ({ key: r.key, value: JSON.stringify(r), partition: firstPartition + p }));
        await producer.send({ topic, messages });
      }
    }
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
