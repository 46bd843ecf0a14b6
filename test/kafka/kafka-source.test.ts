import { expect, it } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import { kafkaPipelineSource } from '../../src/kafka/index.js';
import {
  checkCounts,
  countingInput,
  countingJob,
  runPipeline,
  type CountInput,
  type PipelineEvent,
} from '../../src/testing/index.js';
import { describeOnMockCluster, FAST_GROUP } from './support/describe-on-mock-cluster.js';
import { deserializeCount, producePartitions, uniqueTopic } from './support/produce.js';

/**
 * streamstate/kafka end to end against a real Kafka-protocol broker (librdkafka's mock cluster,
 * three brokers on 127.0.0.1): the reference runtime reads a topic through KafkaJS, crashes, and
 * restores at another parallelism; the committed output counts every record exactly once.
 */
describeOnMockCluster('streamstate/kafka source', (cluster) => {
  function jobOn(topic: string, input: CountInput[][], parallelism: number) {
    const { input: _inMemory, ...job } = countingJob(input, { parallelism });
    return {
      ...job,
      source: kafkaPipelineSource({
        brokers: cluster.brokers,
        topics: [topic],
        deserialize: deserializeCount,
        ...FAST_GROUP,
      }),
    };
  }

  it('8 partitions, parallelism 2, a crash mid-stream, restored at parallelism 3: every record counted exactly once', async () => {
    const topic = uniqueTopic('crash-rescale');
    await cluster.createTopic(topic, 8);
    const input = countingInput({ records: 4000, keys: 60, partitions: 8, seed: 11 });
    await producePartitions(cluster.brokers, topic, input);
    const partitionsAfterRestore = new Set<number>();
    const lastOffsetBeforeCrash = new Map<number, number>();
    const onEvent = (e: PipelineEvent) => {
      if (e.type !== 'record') return;
      if (e.attempt === 1) partitionsAfterRestore.add(e.origin.partition);
      else lastOffsetBeforeCrash.set(e.origin.partition, e.origin.offset);
    };
    // The crash: the first record from 1700 on once a checkpoint of the first attempt has completed. A fixed
    // record number (crashAt: 1700) restored from nothing whenever the first checkpoint's asynchronous part had
    // not finished by then (the heap snapshot takes its share of the thread by wall-clock time, so a loaded
    // machine can let the records run ahead of it), and `checkpointId` was null.
    let completedBeforeCrash = false;
    const crashAt = (e: PipelineEvent): boolean => {
      if (e.type === 'checkpoint-completed' && e.attempt === 0) completedBeforeCrash = true;
      return e.type === 'record' && e.attempt === 0 && completedBeforeCrash && e.recordsProcessed >= 1700;
    };
    const result = await runPipeline(jobOn(topic, input, 2), {
      backend: memory(),
      checkpointEvery: 250,
      crashAt,
      recoverWithParallelism: 3,
      recoverWithSourceParallelism: 3,
      onEvent,
    });
    expect(result.crashes).toBe(1);
    expect(result.restoredFrom[0]).toMatchObject({ parallelism: 3, sourceParallelism: 3 });
    expect(result.restoredFrom[0].checkpointId).not.toBeNull();
    expect(checkCounts(result.committed, input)).toMatchObject({ ok: true, committedRecords: 4000, problems: [] });
    // Every partition not processed to its end before the crash is read on after the restore (by one of 3 new
    // subtasks, from its checkpointed offset); which ones those are depends on how fetches interleaved.
    const unfinished = input
      .map((records, p) => ((lastOffsetBeforeCrash.get(p) ?? -1) < records.length - 1 ? p : -1))
      .filter((p) => p >= 0);
    expect(unfinished.length).toBeGreaterThan(0);
    for (const p of unfinished) expect(partitionsAfterRestore.has(p), `partition ${p}`).toBe(true);
  });
});
