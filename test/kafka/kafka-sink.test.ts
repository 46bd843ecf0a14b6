import { expect, it } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import { isStreamStateError } from '../../src/errors.js';
import { kafkaPipelineSource, kafkaSink, type KafkaSinkGuarantee } from '../../src/kafka/index.js';
import {
  checkCounts,
  countingInput,
  countingJob,
  runPipeline,
  type CountInput,
  type CountOutput,
  type PipelineEvent,
} from '../../src/testing/index.js';
import { describeOnMockCluster, FAST_GROUP } from './support/describe-on-mock-cluster.js';
import { dedupeByHeaders, deserializeCount, producePartitions, readTopic, uniqueTopic } from './support/produce.js';

/**
 * streamstate/kafka's sink against a real Kafka-protocol broker (librdkafka's mock cluster): Kafka in,
 * the counting job, Kafka out, with a crash and a restore at another parallelism. The mock has no
 * transactions KafkaJS can use (docs/KAFKA.md), so the exactly-once mode is tested here only for how
 * it fails, and its logic in kafka-sink-transactions.test.ts against a recording client.
 */
describeOnMockCluster('streamstate/kafka sink', (cluster) => {
  function jobOn(inTopic: string, outTopic: string, parallelism: number, guarantee: KafkaSinkGuarantee) {
    const { input: _inMemory, ...job } = countingJob([], { parallelism });
    return {
      ...job,
      source: kafkaPipelineSource({
        brokers: cluster.brokers,
        topics: [inTopic],
        deserialize: deserializeCount,
        ...FAST_GROUP,
      }),
      sink: kafkaSink<CountOutput>({
        brokers: cluster.brokers,
        topic: outTopic,
        guarantee,
        serialize: (o) => ({ key: o.key, value: JSON.stringify(o) }),
      }),
    };
  }

  async function topics(what: string, input: CountInput[][]): Promise<[string, string]> {
    const inTopic = uniqueTopic(`${what}-in`);
    const outTopic = uniqueTopic(`${what}-out`);
    await cluster.createTopic(inTopic, 8);
    await cluster.createTopic(outTopic, 4);
    await producePartitions(cluster.brokers, inTopic, input);
    return [inTopic, outTopic];
  }

  it('at-least-once: crash after a checkpoint completed and before its output was produced, restored at parallelism 3: the restore produces it; de-duplicated by header, every count exactly once', async () => {
    const input = countingInput({ records: 3000, keys: 50, partitions: 8, seed: 5 });
    const [inTopic, outTopic] = await topics('sink-alo', input);
    // The crash point: the third checkpoint's completion, before the sink is told (its output is only in the checkpoint).
    let completed = 0;
    const crashAt = (e: PipelineEvent) => e.type === 'checkpoint-completed' && e.attempt === 0 && ++completed === 3;
    const result = await runPipeline(jobOn(inTopic, outTopic, 2, 'at-least-once'), {
      backend: memory(),
      checkpointEvery: 200,
      crashAt,
      recoverWithParallelism: 3,
      recoverWithSourceParallelism: 3,
    });
    expect(result.crashes).toBe(1);
    expect(result.restoredFrom[0]).toMatchObject({ parallelism: 3 });
    expect(result.committed).toEqual([]); // nothing went to the in-process output

    const read = await readTopic(cluster.brokers, outTopic);
    for (const r of read) {
      expect(Object.keys(r.headers)).toEqual(
        expect.arrayContaining(['streamstate-transaction', 'streamstate-sequence', 'streamstate-checkpoint']),
      );
    }
    const { kept } = dedupeByHeaders(read);
    const counts = kept.map((r) => JSON.parse(r.value) as CountOutput);
    expect(checkCounts(counts, input)).toMatchObject({ ok: true, committedRecords: 3000, problems: [] });
    // The checkpoint whose commit the crash cut off was produced by the restored attempt (its transaction id names attempt 0).
    const restoredCheckpoint = result.restoredFrom[0].checkpointId!;
    const fromRestore = kept.filter((r) => r.headers['streamstate-checkpoint'] === String(restoredCheckpoint));
    expect(fromRestore.length).toBeGreaterThan(0);
    expect(fromRestore.every((r) => /-a0-/.test(r.headers['streamstate-transaction']))).toBe(true);
  });

  it('exactly-once on this mock: the transactional producer cannot start (it names controller 0, its brokers are 1-3): KAFKA_UNREACHABLE, nothing produced', async () => {
    const input = countingInput({ records: 10, keys: 2, partitions: 1, seed: 1 });
    const [inTopic, outTopic] = await topics('sink-eos-mock', input);
    const err = await runPipeline(jobOn(inTopic, outTopic, 1, 'exactly-once'), {
      backend: memory(),
      checkpointEvery: 5,
    }).catch((e: unknown) => e);
    expect(isStreamStateError(err, 'KAFKA_UNREACHABLE'), String(err)).toBe(true);
    expect(String((err as Error).message)).toMatch(/transactional producer/);
    expect(await readTopic(cluster.brokers, outTopic)).toEqual([]);
  });

  it.skip('exactly-once against a broker with transactions: SKIPPED, librdkafka 2.0.2 mock cluster names controller 0 (KafkaJS cannot init a transactional producer), writes no transaction markers and does not store TxnOffsetCommit offsets (the commit marker), so read_committed isolation and the marker cannot be shown', () => {
    // Deliberately empty: run the at-least-once test above with guarantee 'exactly-once' against a real broker
    // (Kafka 2.5+) and assert no duplicates; kafka-sink-transactions.test.ts covers the logic with a recording client.
  });
});
