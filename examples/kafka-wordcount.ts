/**
 * Word count over a Kafka topic with streamstate's checkpoints (streamstate/kafka + the reference runtime):
 *
 *   KAFKA_BROKERS=localhost:9092 KAFKA_TOPIC=words npm run build && node dist/examples/kafka-wordcount.js
 *
 * Reads every record of KAFKA_TOPIC (its value: one word, e.g. `tr -s ' ' '\n' < book.txt | kcat -P -t words`)
 * up to the end the partitions had at start, counts each word in keyed state (filesystem backend, checkpoints under
 * CHECKPOINT_DIR, default ./kafka-wordcount-checkpoints) and prints the top words. Run it again and it
 * resumes from its latest checkpoint (same JOB_ID): it reads only what was produced since, and the
 * counts go on from where they were. The table shows the latest count of each word whose output was
 * committed in this process: a resumed run first commits again the output the restored checkpoint
 * holds pre-committed (the in-process output is new in every process), so words of the previous
 * run's last checkpoint interval show too, with their current counts. Env: KAFKA_BROKERS (comma-separated, required), KAFKA_TOPIC
 * (default words), JOB_ID (default kafka-wordcount), PARALLELISM (default 2), CHECKPOINT_EVERY
 * (records, default 1000).
 *
 * With KAFKA_OUTPUT_TOPIC set (the topic must exist), every (word, count) update goes to that topic through
 * kafkaSink instead (key: the word, value: the count as JSON), committed when its checkpoint completes:
 * KAFKA_SINK_GUARANTEE=exactly-once (default; Kafka transactions, read it with read_committed) or
 * at-least-once (brokers without transactions; duplicates after a crash carry the same
 * streamstate-transaction/streamstate-sequence headers). Then the top words are not printed.
 */
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { filesystem } from '../backends/filesystem/index.js';
import { StreamStateError } from '../src/errors.js';
import { kafkaPipelineSource, kafkaSink, type KafkaSinkGuarantee } from '../src/kafka/index.js';
import { stringSerializer, float64Serializer } from '../src/serializers/builtins.js';
import { valueState } from '../src/state/descriptors.js';
import { runPipeline } from '../src/testing/index.js';

const count = valueState<number>('count', { serializer: float64Serializer });

async function main(): Promise<number> {
  const brokers = (process.env.KAFKA_BROKERS ?? '').split(',').filter((b) => b.length > 0);
  if (brokers.length === 0) {
    console.error('set KAFKA_BROKERS to your brokers, e.g. KAFKA_BROKERS=localhost:9092');
    return 2;
  }
  const topic = process.env.KAFKA_TOPIC ?? 'words';
  const checkpointDir = resolve(process.env.CHECKPOINT_DIR ?? 'kafka-wordcount-checkpoints');
  await mkdir(checkpointDir, { recursive: true });
  const outputTopic = process.env.KAFKA_OUTPUT_TOPIC;
  const sink = outputTopic
    ? kafkaSink<{ word: string; count: number }>({
        brokers,
        topic: outputTopic,
        guarantee: (process.env.KAFKA_SINK_GUARANTEE ?? 'exactly-once') as KafkaSinkGuarantee,
        serialize: (o) => ({ key: o.word, value: JSON.stringify(o) }),
      })
    : undefined;
  const result = await runPipeline<string, string, { word: string; count: number }>(
    {
      jobId: process.env.JOB_ID ?? 'kafka-wordcount',
      source: kafkaPipelineSource({
        brokers,
        topics: [topic],
        deserialize: (r) => (r.value?.toString('utf8') ?? '').trim().toLowerCase(),
      }),
      ...(sink ? { sink } : {}),
      keyBy: (word) => word,
      keySerializer: stringSerializer,
      parallelism: Number(process.env.PARALLELISM ?? 2),
      process(_word, ctx) {
        const c = ctx.state(count);
        const n = (c.value() ?? 0) + 1;
        c.update(n);
        ctx.emit({ word: ctx.key, count: n });
      },
    },
    {
      backend: filesystem({ checkpointDir }),
      checkpointEvery: Number(process.env.CHECKPOINT_EVERY ?? 1000),
      resume: true,
    },
  );
  const latest = new Map<string, number>();
  for (const o of result.committed) latest.set(o.word, Math.max(latest.get(o.word) ?? 0, o.count));
  const top = [...latest].sort((a, b) => b[1] - a[1]).slice(0, 10);
  console.log(
    `read ${result.recordsEmitted} records from ${topic}; ${result.checkpointsCompleted.length} checkpoints in ${checkpointDir}`,
  );
  if (outputTopic) console.log(`counts went to ${outputTopic} (${process.env.KAFKA_SINK_GUARANTEE ?? 'exactly-once'})`);
  for (const [word, n] of top) console.log(`${String(n).padStart(8)}  ${word}`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof StreamStateError ? `${err.code}: ${err.message}` : err);
    process.exit(1);
  },
);
