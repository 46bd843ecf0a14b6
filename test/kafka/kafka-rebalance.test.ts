import { expect, it } from 'vitest';
import { KafkaSplitReader, splitAssigner } from '../../src/kafka/index.js';
import { countingInput } from '../../src/testing/index.js';
import { describeOnMockCluster } from './support/describe-on-mock-cluster.js';
import { producePartitions, testKafka, uniqueTopic } from './support/produce.js';

/**
 * A consumer-group rebalance while a source reads: another member joins the job's group mid-stream.
 * KafkaJS would resume every partition from the group's committed offset (none here: from the
 * beginning); the reader seeks to its own positions after the rejoin and drops re-deliveries, so each
 * partition's offsets come out exactly once, in order.
 */
describeOnMockCluster('streamstate/kafka rebalance', (cluster) => {
  it('a member joining mid-stream: the reader rejoins and still yields every offset exactly once', async () => {
    const topic = uniqueTopic('rebalance');
    await cluster.createTopic(topic, 4);
    const input = countingInput({ records: 3000, keys: 40, partitions: 4, seed: 9 });
    await producePartitions(cluster.brokers, topic, input);
    const groupId = `rebalance-${process.pid}`;
    const kafka = testKafka(cluster.brokers);
    const partitions = [0, 1, 2, 3];
    const reader = new KafkaSplitReader<number>({
      kafka,
      brokers: cluster.brokers,
      groupId,
      splits: partitions.map((partition) => ({ topic, partition, offset: 0 })),
      stopAt: partitions.map((p) => input[p].length),
      claim: { epoch: 2, subtaskIndex: 0, partitions: { [topic]: partitions } },
      deserialize: (r) => r.offset,
      maxBuffered: 20, // small: fetching is still going on when the other member joins
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
          if (++taken === 500) {
            // Mid-stream: another member joins; wait until it is in (the group rebalanced), then read on.
            const joined = new Promise<void>((resolve) => intruder.on(intruder.events.GROUP_JOIN, () => resolve()));
            await intruder.connect();
            await intruder.subscribe({ topics: [topic] });
            await intruder.run({ eachMessage: async () => undefined });
            await joined;
          }
          continue;
        }
        const wait = reader.waitForInput();
        if (wait === null) break;
        await wait;
      }
      expect(taken).toBeGreaterThan(500);
      expect(reader.groupJoins).toBeGreaterThanOrEqual(2);
      for (const p of partitions) expect(seen[p]).toEqual(input[p].map((_, i) => i));
      expect(reader.positions().map((s) => s.offset)).toEqual(partitions.map((p) => input[p].length));
    } finally {
      // Together: whichever leaves first would otherwise make the other sit through one more rebalance.
      await Promise.all([intruder.disconnect(), reader.close()]);
    }
  });
});
