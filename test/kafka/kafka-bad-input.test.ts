import { expect, it } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import { fetchTopics, kafkaPipelineSource, resolveStartOffsets } from '../../src/kafka/index.js';
import { KafkaError } from '../../src/errors.js';
import {
  CommittedOutput,
  checkCounts,
  countingInput,
  countingJob,
  runPipeline,
  type CountInput,
  type CountOutput,
} from '../../src/testing/index.js';
import { describeOnMockCluster, FAST_GROUP } from './support/describe-on-mock-cluster.js';
import { startMockCluster } from './support/mock-cluster.js';
import { deserializeCount, producePartitions, testKafka, uniqueTopic } from './support/produce.js';

/** Bad input against a real Kafka-protocol broker (librdkafka's mock cluster): typed errors, never silent loss; and a resumed job. */
describeOnMockCluster('streamstate/kafka bad input and resume', (cluster) => {
  function job(
    topics: string[],
    input: CountInput[][],
    extra: { brokers?: string[]; retries?: number; jobId?: string } = {},
  ) {
    const { input: _inMemory, ...rest } = countingJob(input, {
      parallelism: 2,
      ...(extra.jobId ? { jobId: extra.jobId } : {}),
    });
    const source = kafkaPipelineSource({
      brokers: extra.brokers ?? cluster.brokers,
      topics,
      deserialize: deserializeCount,
      connectionTimeout: 300,
      retries: extra.retries ?? 1,
      ...FAST_GROUP,
    });
    return { ...rest, source };
  }

  it('an unreachable broker is KAFKA_UNREACHABLE', async () => {
    const run = runPipeline(job(['t'], [], { brokers: ['127.0.0.1:1'], retries: 0 }), {
      backend: memory(),
      checkpointEvery: 10,
    });
    await expect(run).rejects.toBeInstanceOf(KafkaError);
    await expect(run).rejects.toMatchObject({ code: 'KAFKA_UNREACHABLE' });
  });

  it('a topic the broker does not know is KAFKA_TOPIC_MISSING', async () => {
    // A cluster of its own: a topic error set on the mock was seen to stall consumer groups of later tests on the same cluster.
    const own = await startMockCluster(3);
    try {
      const topic = uniqueTopic('missing');
      await own.setTopicError(topic, 3); // UNKNOWN_TOPIC_OR_PARTITION (the mock would otherwise create it on demand)
      const run = runPipeline(job([topic], [], { brokers: [...own.brokers] }), {
        backend: memory(),
        checkpointEvery: 10,
      });
      await expect(run).rejects.toMatchObject({ code: 'KAFKA_TOPIC_MISSING' });
    } finally {
      await own.stop();
    }
  });

  it('a record the deserializer rejects is SERIALIZATION_FAILED naming topic, partition and offset; the records before it are taken first, none after it', async () => {
    const topic = uniqueTopic('undeserializable');
    await cluster.createTopic(topic, 1);
    const bad = 12;
    const producer = testKafka(cluster.brokers).producer({ allowAutoTopicCreation: false });
    await producer.connect();
    try {
      const messages = Array.from({ length: 20 }, (_, i) => ({
        key: `k${i % 3}`,
        value: i === bad ? 'not json' : JSON.stringify({ key: `k${i % 3}`, value: 1 }),
        partition: 0,
      }));
      await producer.send({ topic, messages });
    } finally {
      await producer.disconnect();
    }
    const emitted: number[] = [];
    const err = await runPipeline(
      { ...job([topic], [], {}), parallelism: 1 },
      {
        backend: memory(),
        checkpointEvery: 5,
        onEvent: (e) => {
          if (e.type === 'emit') emitted.push(e.origin.offset);
        },
      },
    ).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'SERIALIZATION_FAILED' });
    expect((err as Error).message).toContain(`${topic}[0]@${bad}`);
    expect(emitted).toEqual(Array.from({ length: bad }, (_, i) => i));
  });

  it('restored offsets past the end of a partition are KAFKA_OFFSET_OUT_OF_RANGE (or reset and reported with earliest)', async () => {
    const topic = uniqueTopic('range');
    await cluster.createTopic(topic, 2);
    await producePartitions(cluster.brokers, topic, [[{ key: 'a', value: 1 }], []]);
    const admin = testKafka(cluster.brokers).admin();
    await admin.connect();
    try {
      const snapshot = await fetchTopics(admin, [topic], cluster.brokers);
      expect(snapshot.watermarks.get(`${topic}\u00000`)).toEqual({ low: 0, high: 1 });
      const restored = [{ topic, partition: 0, offset: 5 }];
      expect(() => resolveStartOffsets(restored, snapshot, 'fail', () => undefined)).toThrow(
        expect.objectContaining({ code: 'KAFKA_OFFSET_OUT_OF_RANGE' }),
      );
      const resets: unknown[] = [];
      expect(resolveStartOffsets(restored, snapshot, 'earliest', (r) => resets.push(r))).toEqual([
        { topic, partition: 0, offset: 0 },
      ]);
      expect(resets).toHaveLength(1);
    } finally {
      await admin.disconnect();
    }
  });

  it('a resumed job continues from its checkpoint (records produced meanwhile, a topic added: read from its start); a checkpoint naming a topic no longer read is KAFKA_PARTITION_MISSING', async () => {
    const a = uniqueTopic('resume-a');
    const b = uniqueTopic('resume-b');
    await cluster.createTopic(a, 4);
    await cluster.createTopic(b, 3);
    const first = countingInput({ records: 600, keys: 20, partitions: 4, seed: 5 });
    await producePartitions(cluster.brokers, a, first);
    const backend = memory();
    const output = new CommittedOutput<CountOutput>();
    const jobId = `resume-${process.pid}`;
    const run1 = await runPipeline(job([a], first, { jobId }), { backend, checkpointEvery: 100, output });
    expect(checkCounts(run1.committed, first).ok).toBe(true);

    // More records on a (same keys, same partitions) and a new topic b with new keys.
    const more = countingInput({ records: 300, keys: 20, partitions: 4, seed: 6 });
    await producePartitions(cluster.brokers, a, more);
    const onB = countingInput({ records: 200, keys: 10, partitions: 3, seed: 7 }).map((p) =>
      p.map((r) => ({ ...r, key: `b-${r.key}` })),
    );
    await producePartitions(cluster.brokers, b, onB);
    const run2 = await runPipeline(job([a, b], first, { jobId }), {
      backend,
      checkpointEvery: 100,
      output,
      resume: true,
    });
    expect(run2.restoredFrom[0].checkpointId).not.toBeNull();
    const all = [...first.map((p, i) => [...p, ...more[i]]), ...onB];
    expect(checkCounts(output.records(), all)).toMatchObject({ ok: true, committedRecords: 1100, problems: [] });

    // The checkpoint now holds splits of a and b; a source that reads only b must not drop a's silently.
    const err = await runPipeline(job([b], first, { jobId }), {
      backend,
      checkpointEvery: 100,
      output,
      resume: true,
    }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({ code: 'KAFKA_PARTITION_MISSING' });
  });
});
