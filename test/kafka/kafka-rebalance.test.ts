import type { Kafka } from 'kafkajs';
import { expect, it } from 'vitest';
import { KafkaSplitReader, splitAssigner } from '../../src/kafka/index.js';
import { countingInput } from '../../src/testing/index.js';
import { describeOnMockCluster, type SharedMockCluster } from './support/describe-on-mock-cluster.js';
import { producePartitions, testKafka, uniqueTopic } from './support/produce.js';

/**
 * A consumer-group rebalance while a source reads: another member joins the job's group mid-stream.
 * KafkaJS would resume every partition from the group's committed offset (none here: from the
 * beginning); the reader seeks to its own positions after the rejoin and drops re-deliveries, so each
 * partition's offsets come out exactly once, in order.
 *
 * The group coordinator may also refuse a member's SyncGroup with INVALID_REQUEST (librdkafka's mock
 * cluster does so to a late SyncGroup during a rebalance, seen under load). KafkaJS treats that as
 * fatal and stops the consumer for good; the reader replaces its consumer (restartAfter) and reads on.
 */
const SYNC_GROUP = 14;
const INVALID_REQUEST = 42;

describeOnMockCluster('streamstate/kafka rebalance', (cluster) => {
  it('a member joining mid-stream, one SyncGroup refused (whichever member it hits): the reader rejoins and still yields every offset exactly once', async () => {
    const run = await readThroughRebalance(cluster, { refuseSyncGroupAtJoin: true });
    expect(run.groupJoins).toBeGreaterThanOrEqual(2);
  });

  it("the coordinator refuses the reader's SyncGroup (fatal for KafkaJS): the reader replaces its consumer and yields every offset exactly once", async () => {
    await cluster.pushRequestErrors(SYNC_GROUP, 1, INVALID_REQUEST); // the next SyncGroup is the reader's first
    const run = await readThroughRebalance(cluster, { refuseSyncGroupAtJoin: false, noIntruder: true });
    expect(run.consumerRestarts).toBe(1);
    expect(run.groupJoins).toBeGreaterThanOrEqual(1);
  });
});

/**
 * Reads 4 partitions of 3,000 records with a small buffer; after 500 records another member joins
 * the group (unless `noIntruder`) and the test waits until the reader rejoined, then reads to the end.
 * Asserts every partition's offsets came out exactly once, in order, and the final positions.
 */
async function readThroughRebalance(
  cluster: SharedMockCluster,
  opts: { refuseSyncGroupAtJoin: boolean; noIntruder?: boolean },
): Promise<{ groupJoins: number; consumerRestarts: number }> {
  const topic = uniqueTopic('rebalance');
  await cluster.createTopic(topic, 4);
  const input = countingInput({ records: 3000, keys: 40, partitions: 4, seed: 9 });
  await producePartitions(cluster.brokers, topic, input);
  const groupId = `${topic}-group`;
  const kafka = testKafka(cluster.brokers);
  // Sees the reader's own consumers (a replaced one too) join: `rejoined()` waits for the next join.
  let readerJoined: (() => void) | null = null;
  const watched = new Proxy(kafka, {
    get(target, prop, receiver) {
      if (prop !== 'consumer') return Reflect.get(target, prop, receiver);
      return (config: Parameters<Kafka['consumer']>[0]) => {
        const consumer = target.consumer(config);
        consumer.on(consumer.events.GROUP_JOIN, () => readerJoined?.());
        return consumer;
      };
    },
  });
  const rejoined = () => new Promise<void>((resolve) => (readerJoined = resolve));
  const partitions = [0, 1, 2, 3];
  const reader = new KafkaSplitReader<number>({
    kafka: watched,
    brokers: cluster.brokers,
    groupId,
    splits: partitions.map((partition) => ({ topic, partition, offset: 0 })),
    stopAt: partitions.map((p) => input[p].length),
    claim: { epoch: 2, subtaskIndex: 0, partitions: { [topic]: partitions } },
    deserialize: (r) => r.offset,
    maxBuffered: 20, // small: fetching is still going on when the other member joins (unless the machine is slow)
    sessionTimeout: 3000,
    heartbeatInterval: 100,
  });
  const intruder = kafka.consumer({
    groupId,
    partitionAssigners: [splitAssigner({ epoch: 1, subtaskIndex: 9, partitions: {} })],
    sessionTimeout: 3000,
    heartbeatInterval: 100,
    maxWaitTimeInMs: 100, // it leads no partition: with KafkaJS's 5 s fetch wait it would outlive its session
  });
  const seen: number[][] = partitions.map(() => []);
  try {
    reader.start();
    let taken = 0;
    for (;;) {
      const r = reader.poll();
      if (r) {
        seen[r.origin.partition].push(r.value);
        if (++taken === 500 && opts.noIntruder !== true) {
          // Mid-stream: another member joins; wait until the reader rejoined (the group rebalanced),
          // then read on. Not until the intruder's own GROUP_JOIN: a refused SyncGroup stops the
          // intruder for good, so that join may never come; its JoinGroup already made the group
          // rebalance.
          const readerRejoined = rejoined();
          if (opts.refuseSyncGroupAtJoin) await cluster.pushRequestErrors(SYNC_GROUP, 1, INVALID_REQUEST);
          await intruder.connect();
          await intruder.subscribe({ topics: [topic] });
          await intruder.run({ eachMessage: async () => undefined });
          await readerRejoined;
        }
        continue;
      }
      const wait = reader.waitForInput();
      if (wait === null) break;
      await wait;
    }
    expect(taken).toBe(input.reduce((n, p) => n + p.length, 0));
    for (const p of partitions) expect(seen[p]).toEqual(input[p].map((_, i) => i));
    expect(reader.positions().map((s) => s.offset)).toEqual(partitions.map((p) => input[p].length));
    return { groupJoins: reader.groupJoins, consumerRestarts: reader.consumerRestarts };
  } finally {
    // Together: whichever leaves first would otherwise make the other sit through one more rebalance.
    await Promise.all([intruder.disconnect(), reader.close()]);
  }
}
