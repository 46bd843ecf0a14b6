/**
 * bench/kafka: records/s of a keyed count reading Kafka through streamstate (reference runtime,
 * kafkaPipelineSource, memory backend, checkpoints about every second) against the same KafkaJS
 * consumer loop without streamstate doing the same user work (eachBatch; count and sum per key, one
 * output kept per record; see plainLoop), in one run, alternating rounds; and
 * the time from a crash to the first record processed after the restore. Then the sink: the same job
 * writing its (key, count, sum) outputs to a topic through kafkaSink (at least once: the mock cluster
 * has no transactions KafkaJS can use) against the same KafkaJS consume-count-produce loop without
 * streamstate, timed from the first record to the last output acknowledged. Each round prints the
 * load average (os.loadavg) it ran under, and the CPU time per record of this process (steadier than
 * records/s when other processes share the cores; see Window). Every path runs once unmeasured first
 * (the plain loop's run is the calibration of the checkpoint interval), so no round times cold code.
 *
 *   npm run build && node dist/bench/kafka.js [--quick] [--rounds=N] [--baseline=<checkout>]
 *
 * `--baseline=<checkout>`: another checkout of streamstate with its own build (e.g. a git worktree
 * of the commit before a change, `npm run build` there). Each round then runs the plain loop, this
 * build's streamstate and the baseline's streamstate against the same cluster and topic, the two
 * builds in alternating order (no sink or in-memory rounds): old and new compared in one run. Every
 * round also runs the count-only plain loop of the figures before 2026-12-06 (ratios against both).
 *
 * The broker is librdkafka's mock cluster (test/kafka/support), so absolute figures say little about a
 * real cluster; the ratio is the point. Throughput counts from the first record to the last (the
 * consumer group join, ~3 s on the mock, is excluded from both); restore-to-first-record includes it.
 */
import { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Kafka, logLevel, Partitioners } from 'kafkajs';
import { memory } from '../backends/memory/index.js';
import { kafkaPipelineSource, kafkaSink } from '../src/kafka/index.js';
import {
  countingInput,
  countingJob,
  runPipeline,
  checkCounts,
  type CountInput,
  type CountOutput,
} from '../src/testing/index.js';
import { startMockCluster, type MockCluster } from '../test/kafka/support/mock-cluster.js';

const quick = process.argv.includes('--quick');
const baselineDir = process.argv.find((a) => a.startsWith('--baseline='))?.slice('--baseline='.length);
const RECORDS = quick ? 40_000 : 200_000;
const roundsArg = process.argv.find((a) => a.startsWith('--rounds='))?.slice('--rounds='.length);
const ROUNDS = roundsArg !== undefined ? Number(roundsArg) : quick ? 2 : 3;
const PARTITIONS = 8;
const GROUP = { sessionTimeout: 3000, heartbeatInterval: 100 } as const;

/**
 * A timed window, first record to last: records/s (wall clock) and this process's CPU time per record
 * (user + system, process.cpuUsage; the mock brokers run in their own process, so this is the consumer
 * and streamstate only). On a shared machine the CPU per record is the steadier comparison: the wall
 * clock also counts the time other processes had the cores.
 */
interface Timing {
  readonly rate: number;
  readonly cpuUsPerRecord: number;
}

/** Start it at the first record, end it at the last. */
class Window {
  private first = 0;
  private last = 0;
  private cpu: NodeJS.CpuUsage | null = null;
  private used: NodeJS.CpuUsage | null = null;

  get started(): boolean {
    return this.first !== 0;
  }

  start(): void {
    if (this.first !== 0) return;
    this.first = performance.now();
    this.cpu = process.cpuUsage();
  }

  end(): void {
    this.last = performance.now();
    this.used = process.cpuUsage(this.cpu ?? undefined);
  }

  timing(records: number): Timing {
    const cpu = this.used ? this.used.user + this.used.system : Number.NaN;
    return { rate: records / ((this.last - this.first) / 1000), cpuUsPerRecord: cpu / records };
  }
}

function deserialize(r: { value: Buffer | null }): CountInput {
  return JSON.parse(r.value!.toString('utf8')) as CountInput;
}

async function produce(cluster: MockCluster, topic: string, input: CountInput[][]): Promise<void> {
  const kafka = new Kafka({ brokers: [...cluster.brokers], logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  for (let p = 0; p < input.length; p++) {
    for (let i = 0; i < input[p].length; i += 2000) {
      await producer.send({
        topic,
        messages: input[p].slice(i, i + 2000).map((r) => ({ key: r.key, value: JSON.stringify(r), partition: p })),
      });
    }
  }
  await producer.disconnect();
}

/**
 * The plain KafkaJS loop: one consumer, eachBatch, and per record the same user work as the
 * streamstate job (countingJob): count and sum per key, and one (key, count, sum) output kept per
 * record (an array standing in for the runtime's committed output). `countOnly`: the loop before
 * 2026-12-06, a count per key in a Map and nothing kept, still run for comparison with older figures.
 * Returns records/s from first to last record.
 */
async function plainLoop(
  cluster: MockCluster,
  topic: string,
  total: number,
  round: number,
  countOnly = false,
): Promise<Timing> {
  const kafka = new Kafka({ brokers: [...cluster.brokers], logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `plain-${round}-${Date.now()}`, ...GROUP });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const counts = new Map<string, number>();
  const perKey = new Map<string, { count: number; sum: number }>();
  const outputs: CountOutput[] = [];
  let seen = 0;
  const window = new Window();
  await new Promise<void>((resolve) => {
    void consumer.run({
      autoCommit: false,
      partitionsConsumedConcurrently: PARTITIONS,
      eachBatch: async ({ batch }) => {
        window.start();
        for (const m of batch.messages) {
          const r = deserialize({ value: m.value });
          if (countOnly) {
            counts.set(r.key, (counts.get(r.key) ?? 0) + 1);
            continue;
          }
          let acc = perKey.get(r.key);
          if (acc === undefined) perKey.set(r.key, (acc = { count: 0, sum: 0 }));
          acc.count++;
          acc.sum += r.value;
          outputs.push({ key: r.key, count: acc.count, sum: acc.sum });
        }
        seen += batch.messages.length;
        if (seen >= total) {
          window.end();
          resolve();
        }
      },
    });
  });
  await consumer.disconnect();
  return window.timing(total);
}

/**
 * The plain consume-transform-produce loop (at least once, like the sink's mode here): per batch,
 * count and produce one output per record, acknowledged before the next batch. Records/s from the
 * first record to the last output acknowledged.
 */
async function plainSinkLoop(
  cluster: MockCluster,
  topic: string,
  out: string,
  total: number,
  round: number,
): Promise<number> {
  const kafka = new Kafka({ brokers: [...cluster.brokers], logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `plain-sink-${round}-${Date.now()}`, ...GROUP });
  const producer = kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
  });
  await Promise.all([consumer.connect(), producer.connect()]);
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const counts = new Map<string, number>();
  let seen = 0;
  let first = 0;
  let last = 0;
  await new Promise<void>((resolve) => {
    void consumer.run({
      autoCommit: false,
      partitionsConsumedConcurrently: PARTITIONS,
      eachBatch: async ({ batch }) => {
        if (first === 0) first = performance.now();
        const messages = batch.messages.map((m) => {
          const r = deserialize({ value: m.value });
          const n = (counts.get(r.key) ?? 0) + 1;
          counts.set(r.key, n);
          return { key: r.key, value: JSON.stringify({ key: r.key, count: n, sum: 0 }) };
        });
        await producer.send({ topic: out, acks: -1, messages });
        seen += batch.messages.length;
        if (seen >= total) {
          last = performance.now();
          resolve();
        }
      },
    });
  });
  await Promise.all([consumer.disconnect(), producer.disconnect()]);
  return total / ((last - first) / 1000);
}

/** streamstate with kafkaSink (at least once): records/s from the first record to the end of the run (the last commit). */
async function streamstateSinkRun(
  cluster: MockCluster,
  topic: string,
  out: string,
  input: CountInput[][],
  checkpointEvery: number,
): Promise<number> {
  const { input: _inMemory, ...job } = countingJob(input, { parallelism: 1 });
  let first = 0;
  const result = await runPipeline(
    {
      ...job,
      source: kafkaPipelineSource({ brokers: cluster.brokers, topics: [topic], deserialize, ...GROUP }),
      sink: kafkaSink<CountOutput>({
        brokers: cluster.brokers,
        topic: out,
        guarantee: 'at-least-once',
        serialize: (o) => ({ key: o.key, value: JSON.stringify(o) }),
      }),
    },
    {
      backend: memory(),
      checkpointEvery,
      onEvent: (e) => {
        if (e.type === 'record' && first === 0) first = performance.now();
      },
    },
  );
  return result.recordsProcessed / ((performance.now() - first) / 1000);
}

/** What a streamstate run needs from a build: this one, or the baseline checkout's (--baseline). */
interface Build {
  readonly runPipeline: typeof runPipeline;
  readonly countingJob: typeof countingJob;
  readonly checkCounts: typeof checkCounts;
  readonly kafkaPipelineSource: typeof kafkaPipelineSource;
  readonly memory: typeof memory;
}

const thisBuild: Build = { runPipeline, countingJob, checkCounts, kafkaPipelineSource, memory };

/** The same modules of another checkout's dist/ (an older version of this API: the bench uses nothing newer). */
async function loadBuild(dir: string): Promise<Build> {
  const load = (path: string) => import(pathToFileURL(resolve(dir, 'dist', path)).href);
  const [testing, kafka, mem] = await Promise.all([
    load('src/testing/index.js'),
    load('src/kafka/index.js'),
    load('backends/memory/index.js'),
  ]);
  return {
    runPipeline: testing.runPipeline,
    countingJob: testing.countingJob,
    checkCounts: testing.checkCounts,
    kafkaPipelineSource: kafka.kafkaPipelineSource,
    memory: mem.memory,
  };
}

async function streamstateRun(
  cluster: MockCluster,
  topic: string,
  input: CountInput[][],
  checkpointEvery: number,
  crashAt?: number,
  build: Build = thisBuild,
): Promise<Timing & { restoreMs: number | null; checkpoints: number }> {
  const { runPipeline, countingJob, checkCounts, kafkaPipelineSource, memory } = build;
  const { input: _inMemory, ...job } = countingJob(input, { parallelism: 1 });
  // The run's last record (recordsProcessed counts replays too, so with a crash this is not the last:
  // the crash run is for restoreMs, its rate is not reported).
  const lastRecord = input.reduce((n, p) => n + p.length, 0);
  const window = new Window();
  let crashedAt = 0;
  let restoreMs: number | null = null;
  const result = await runPipeline(
    { ...job, source: kafkaPipelineSource({ brokers: cluster.brokers, topics: [topic], deserialize, ...GROUP }) },
    {
      backend: memory(),
      checkpointEvery,
      ...(crashAt ? { crashAt } : {}),
      // Only the events needed for timing; 'record' is reported for every record (its cost is part of the
      // figure). eventTypes keeps the runtime from building the others (a baseline before it ignores it).
      eventTypes: ['record', 'crash'],
      onEvent: (e) => {
        if (e.type === 'record') {
          // The clock is read at the first and the last record only, as the plain loop reads it once per
          // batch: a read per record (about 2% of the runtime's time) was the bench's cost, not streamstate's.
          window.start();
          if (e.recordsProcessed === lastRecord) window.end();
          if (e.attempt === 1 && restoreMs === null) restoreMs = performance.now() - crashedAt;
        } else if (e.type === 'crash') crashedAt = performance.now();
      },
    },
  );
  const check = checkCounts(result.committed, input);
  if (!check.ok) throw new Error(`bench/kafka: wrong output: ${check.problems.join('; ')}`);
  return {
    ...window.timing(result.recordsProcessed),
    restoreMs,
    checkpoints: result.checkpointsCompleted.length,
  };
}

/** The same job on the runtime's in-memory input (no Kafka): what the reference runtime itself costs per record. */
async function inMemoryRun(input: CountInput[][], checkpointEvery: number): Promise<Timing> {
  const lastRecord = input.reduce((n, p) => n + p.length, 0);
  const window = new Window();
  const result = await runPipeline(countingJob(input, { parallelism: 1 }), {
    backend: memory(),
    checkpointEvery,
    eventTypes: ['record'],
    onEvent: (e) => {
      // First and last record only, as in streamstateRun.
      if (e.type !== 'record') return;
      window.start();
      if (e.recordsProcessed === lastRecord) window.end();
    },
  });
  return window.timing(result.recordsProcessed);
}

/** --baseline: per round the plain loop, then the two builds in alternating order; medians and ratios. */
async function compareWithBaseline(
  cluster: MockCluster,
  topic: string,
  input: CountInput[][],
  checkpointEvery: number,
  baseline: Build,
): Promise<void> {
  const plain: number[] = [];
  const countOnly: number[] = [];
  const base: number[] = [];
  const mine: number[] = [];
  const plainCpu: number[] = [];
  const baseCpu: number[] = [];
  const mineCpu: number[] = [];
  const loads: number[] = [];
  // Warm-up of both builds, not measured (the plain loop's is the calibration run).
  for (const build of [baseline, thisBuild])
    await streamstateRun(cluster, topic, input, checkpointEvery, undefined, build);
  for (let round = 0; round < ROUNDS; round++) {
    const p = await plainLoop(cluster, topic, RECORDS, round);
    plain.push(p.rate);
    plainCpu.push(p.cpuUsPerRecord);
    countOnly.push((await plainLoop(cluster, topic, RECORDS, round, true)).rate);
    const order = round % 2 === 0 ? [baseline, thisBuild] : [thisBuild, baseline];
    for (const build of order) {
      const { rate, cpuUsPerRecord } = await streamstateRun(cluster, topic, input, checkpointEvery, undefined, build);
      (build === baseline ? base : mine).push(rate);
      (build === baseline ? baseCpu : mineCpu).push(cpuUsPerRecord);
    }
    loads.push(loadavg()[0]);
    console.log(
      `round ${round + 1} (load ${loads[round].toFixed(1)}, ${round % 2 === 0 ? 'baseline first' : 'this build first'}): plain ${plain[round].toFixed(0)} rec/s (count-only ${countOnly[round].toFixed(0)}), ` +
        `baseline ${base[round].toFixed(0)} (${(base[round] / plain[round]).toFixed(2)}), this build ${mine[round].toFixed(0)} (${(mine[round] / plain[round]).toFixed(2)}; ${(mine[round] / base[round]).toFixed(2)}x the baseline); ` +
        `CPU per record: plain ${plainCpu[round].toFixed(2)} us, baseline ${baseCpu[round].toFixed(2)} us, this build ${mineCpu[round].toFixed(2)} us`,
    );
  }
  console.log(
    JSON.stringify(
      {
        records: RECORDS,
        partitions: PARTITIONS,
        checkpointEvery,
        baseline: baselineDir,
        plainMedian: Math.round(median(plain)),
        countOnlyPlainMedian: Math.round(median(countOnly)),
        baselineMedian: Math.round(median(base)),
        thisBuildMedian: Math.round(median(mine)),
        baselineRatio: Number((median(base) / median(plain)).toFixed(3)),
        thisBuildRatio: Number((median(mine) / median(plain)).toFixed(3)),
        baselineRatioToCountOnly: Number((median(base) / median(countOnly)).toFixed(3)),
        thisBuildRatioToCountOnly: Number((median(mine) / median(countOnly)).toFixed(3)),
        speedup: Number((median(mine) / median(base)).toFixed(3)),
        // CPU time of this process per record (steadier than records/s on a shared machine): the
        // ratio plain/streamstate is the throughput ratio an otherwise idle core would give.
        plainCpuUsPerRecordMedian: Number(median(plainCpu).toFixed(3)),
        baselineCpuUsPerRecordMedian: Number(median(baseCpu).toFixed(3)),
        thisBuildCpuUsPerRecordMedian: Number(median(mineCpu).toFixed(3)),
        baselineCpuRatio: Number((median(plainCpu) / median(baseCpu)).toFixed(3)),
        thisBuildCpuRatio: Number((median(plainCpu) / median(mineCpu)).toFixed(3)),
        loadAverages: loads.map((l) => Number(l.toFixed(1))),
      },
      null,
      2,
    ),
  );
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

async function main(): Promise<void> {
  const cluster = await startMockCluster(3);
  try {
    const topic = `bench-${Date.now()}`;
    await cluster.createTopic(topic, PARTITIONS);
    const input = countingInput({ records: RECORDS, keys: 1000, partitions: PARTITIONS, seed: 3 });
    await produce(cluster, topic, input);
    // Calibrate "every second": checkpoint after as many records as the plain loop reads in a second
    // (streamstate is slower, so that is more often than every second), and at least 10 times a run.
    const calibration = (await plainLoop(cluster, topic, RECORDS, -1)).rate;
    const checkpointEvery = Math.max(1000, Math.min(Math.round(calibration), Math.floor(RECORDS / 10)));
    if (baselineDir !== undefined) {
      await compareWithBaseline(cluster, topic, input, checkpointEvery, await loadBuild(baselineDir));
      return;
    }
    // Warm-up, not measured: the calibration run above already ran (and compiled) the plain loop; the
    // streamstate paths get one run each too, so round 1 compares warm code with warm code (before,
    // a process's first streamstate round ran at 0.33-0.55 of plain against 0.65-0.81 for the others).
    await streamstateRun(cluster, topic, input, checkpointEvery);
    await inMemoryRun(input, checkpointEvery);
    const warmOuts = [`${topic}-out-plain-warm`, `${topic}-out-ss-warm`];
    for (const out of warmOuts) await cluster.createTopic(out, PARTITIONS);
    await plainSinkLoop(cluster, topic, warmOuts[0], RECORDS, -1);
    await streamstateSinkRun(cluster, topic, warmOuts[1], input, checkpointEvery);
    const plain: number[] = [];
    const countOnly: number[] = [];
    const ss: number[] = [];
    const mem: number[] = [];
    const plainSink: number[] = [];
    const ssSink: number[] = [];
    const plainCpu: number[] = [];
    const ssCpu: number[] = [];
    const memCpu: number[] = [];
    const loads: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const p = await plainLoop(cluster, topic, RECORDS, round);
      plain.push(p.rate);
      plainCpu.push(p.cpuUsPerRecord);
      countOnly.push((await plainLoop(cluster, topic, RECORDS, round, true)).rate);
      const t = await streamstateRun(cluster, topic, input, checkpointEvery);
      ss.push(t.rate);
      ssCpu.push(t.cpuUsPerRecord);
      const m = await inMemoryRun(input, checkpointEvery);
      mem.push(m.rate);
      memCpu.push(m.cpuUsPerRecord);
      const outs = [`${topic}-out-plain-${round}`, `${topic}-out-ss-${round}`];
      for (const out of outs) await cluster.createTopic(out, PARTITIONS);
      plainSink.push(await plainSinkLoop(cluster, topic, outs[0], RECORDS, round));
      ssSink.push(await streamstateSinkRun(cluster, topic, outs[1], input, checkpointEvery));
      loads.push(loadavg()[0]);
      console.log(
        `round ${round + 1} (load ${loads[round].toFixed(1)}): plain ${plain[round].toFixed(0)} rec/s (count-only ${countOnly[round].toFixed(0)}), streamstate ${ss[round].toFixed(0)} rec/s (${(ss[round] / plain[round]).toFixed(2)}), runtime on in-memory input ${mem[round].toFixed(0)} rec/s; ` +
          `with a Kafka sink: plain ${plainSink[round].toFixed(0)} rec/s, streamstate ${ssSink[round].toFixed(0)} rec/s (${(ssSink[round] / plainSink[round]).toFixed(2)}); ` +
          `CPU per record: plain ${plainCpu[round].toFixed(2)} us, streamstate ${ssCpu[round].toFixed(2)} us, in-memory input ${memCpu[round].toFixed(2)} us`,
      );
    }
    const restore = await streamstateRun(cluster, topic, input, checkpointEvery, Math.floor(RECORDS / 2));
    const ratio = median(ss) / median(plain);
    console.log(
      JSON.stringify(
        {
          records: RECORDS,
          partitions: PARTITIONS,
          checkpointEvery,
          plainMedian: Math.round(median(plain)),
          countOnlyPlainMedian: Math.round(median(countOnly)),
          streamstateMedian: Math.round(median(ss)),
          ratio: Number(ratio.toFixed(3)),
          ratioToCountOnly: Number((median(ss) / median(countOnly)).toFixed(3)),
          inMemoryInputMedian: Math.round(median(mem)),
          plainCpuUsPerRecordMedian: Number(median(plainCpu).toFixed(3)),
          streamstateCpuUsPerRecordMedian: Number(median(ssCpu).toFixed(3)),
          cpuRatio: Number((median(plainCpu) / median(ssCpu)).toFixed(3)),
          inMemoryCpuUsPerRecordMedian: Number(median(memCpu).toFixed(3)),
          restoreToFirstRecordMs: restore.restoreMs === null ? null : Math.round(restore.restoreMs),
          sinkPlainMedian: Math.round(median(plainSink)),
          sinkStreamstateMedian: Math.round(median(ssSink)),
          sinkRatio: Number((median(ssSink) / median(plainSink)).toFixed(3)),
          loadAverages: loads.map((l) => Number(l.toFixed(1))),
        },
        null,
        2,
      ),
    );
  } finally {
    await cluster.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
