/**
 * The child process of test/kafka/kafka-crash.test.ts: runs the counting job through streamstate/kafka
 * (filesystem backend, checkpoints on disk, resume: true) and commits to a durable transaction log
 * (or, with cfg.sinkTopic, to that Kafka topic through kafkaSink, at least once),
 * until it kills itself with SIGKILL (from record killAfter on, once a checkpoint of this run has completed,
 * at the latest at record killBy; mid-processing, with checkpoint uploads and sink commits in flight) or reaches the end of the topic.
 *
 * Plain JavaScript on the compiled dist/ (a child process cannot import TypeScript; the test builds dist
 * first with ensureCrashChild). Argument: a JSON config. Prints JSON lines: {type:'restored'},
 * then {type:'killed', records} just before the kill, {type:'finished', records}, or {type:'error'}.
 */
import { filesystem } from '../../../dist/backends/filesystem/index.js';
import { DurableCommittedOutput } from '../../../dist/bench/proof/durable-output.js';
import { kafkaPipelineSource, kafkaSink } from '../../../dist/src/kafka/index.js';
import { countingJob, runPipeline } from '../../../dist/src/testing/index.js';

const send = (msg) => process.stdout.write(`${JSON.stringify(msg)}\n`);

async function main() {
  const cfg = JSON.parse(process.argv[2] ?? '');
  const output = cfg.sinkTopic ? null : DurableCommittedOutput.open(cfg.outputFile, cfg.processNo);
  const { input: _none, ...job } = countingJob([], { parallelism: cfg.parallelism, jobId: cfg.jobId });
  let records = 0;
  let checkpoints = 0;
  const result = await runPipeline(
    {
      ...job,
      source: kafkaPipelineSource({
        brokers: cfg.brokers,
        topics: [cfg.topic],
        deserialize: (r) => JSON.parse(r.value.toString('utf8')),
        sessionTimeout: 3000,
        heartbeatInterval: 100,
      }),
      ...(cfg.sinkTopic
        ? {
            sink: kafkaSink({
              brokers: cfg.brokers,
              topic: cfg.sinkTopic,
              guarantee: 'at-least-once',
              serialize: (o) => ({ key: o.key, value: JSON.stringify(o) }),
            }),
          }
        : {}),
    },
    {
      backend: filesystem({ checkpointDir: cfg.checkpointDir }),
      checkpointEvery: cfg.checkpointEvery,
      ...(output ? { output } : {}),
      resume: true,
      onEvent: (e) => {
        if (e.type === 'restored') send({ type: 'restored', checkpointId: e.checkpointId, parallelism: e.parallelism });
        if (e.type === 'checkpoint-completed') checkpoints++;
        if (e.type !== 'record') return;
        records++;
        // The kill point: the first record from killAfter on once a checkpoint of this run has completed (so the
        // next run has one to restore), at the latest at killBy. stdout is a pipe, written synchronously on Linux.
        if (cfg.killAfter !== null && ((records >= cfg.killAfter && checkpoints > 0) || records >= cfg.killBy)) {
          send({ type: 'killed', records });
          process.kill(process.pid, 'SIGKILL');
        }
      },
    },
  );
  output?.close();
  send({ type: 'finished', records, restoredFrom: result.restoredFrom.map((r) => r.checkpointId) });
}

main().then(
  () => process.exit(0),
  (err) => {
    send({ type: 'error', code: err?.code ?? null, message: String(err?.stack ?? err) });
    process.exit(1);
  },
);
