import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { readTransactionLog } from '../../bench/proof/durable-output.js';
import { SeededRandom } from '../../src/testing/rng.js';
import { checkCounts, countingInput, type CountOutput } from '../../src/testing/index.js';
import { ensureCrashChild } from '../support/proof/crash-child-build.js';
import { describeOnMockCluster } from './support/describe-on-mock-cluster.js';
import { dedupeByHeaders, producePartitions, readTopic, uniqueTopic } from './support/produce.js';

const CHILD = fileURLToPath(new URL('./support/kafka-crash-child.mjs', import.meta.url));
const RECORDS = 4000;
const CHECKPOINT_EVERY = 100;
/** Parallelism of each run: the first two are killed with SIGKILL, the last runs to the end of the topic. */
const RUNS = [2, 3, 2];

interface ChildMessage {
  readonly type: 'restored' | 'killed' | 'finished' | 'error';
  readonly records?: number;
  readonly checkpointId?: number | null;
  readonly message?: string;
}

interface ChildRun {
  /** Killed itself with SIGKILL, or ran to the end. */
  readonly killed: boolean;
  /** Records the run took from Kafka before the kill or the end. */
  readonly records: number;
  /** The checkpoint the run restored (null: none found; undefined: a fresh start). */
  readonly restoredFrom: number | null | undefined;
}

/**
 * Runs the child (kafka-crash-child.mjs) until it kills itself: from record `kill.after` on, once a
 * checkpoint of the run has completed, and at the latest at record `kill.by`; with `kill` null, until it finishes.
 */
function runChild(config: Record<string, unknown>, kill: { after: number; by: number } | null): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [CHILD, JSON.stringify({ ...config, killAfter: kill?.after ?? null, killBy: kill?.by ?? null })],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    let last: ChildMessage | null = null;
    let restoredFrom: number | null | undefined;
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      const m = JSON.parse(line) as ChildMessage;
      if (m.type === 'restored') restoredFrom = m.checkpointId;
      else last = m;
    });
    child.once('error', reject);
    // Both the exit status and every line of output (the streams may close before or after the exit).
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((res) =>
      child.once('exit', (code, signal) => res([code, signal])),
    );
    const closed = new Promise<void>((res) => lines.once('close', () => res()));
    void Promise.all([exited, closed]).then(([[code, signal]]) => {
      const m = last as ChildMessage | null;
      if (signal === 'SIGKILL' && m?.type === 'killed') resolve({ killed: true, records: m.records!, restoredFrom });
      else if (code === 0 && m?.type === 'finished') resolve({ killed: false, records: m.records!, restoredFrom });
      else reject(new Error(`kafka crash child exited (${code ?? signal}): ${m?.message ?? ''} ${stderr.trim()}`));
    });
  });
}

/**
 * SIGKILL mid-stream against a real Kafka-protocol broker: a child process runs the counting job through
 * streamstate/kafka (8 partitions, checkpoints on disk, output to a durable transaction log); it is killed
 * at a random point, restarted at another parallelism (resume: true restores its latest checkpoint and
 * seeks the partitions to its offsets), killed again, and restarted to the end. The killed processes'
 * consumers stay in the group until their sessions expire. Every key's counts must be committed exactly
 * once. KAFKA_CRASH_SEED replays another seed.
 */
describeOnMockCluster('streamstate/kafka SIGKILL', (cluster) => {
  let scratch = '';
  beforeAll(async () => {
    await ensureCrashChild(); // builds dist/ (the child runs the compiled streamstate/kafka) when it is stale
    scratch = await mkdtemp(join(tmpdir(), 'streamstate-kafka-crash-'));
  }, 240_000);
  afterAll(async () => {
    if (scratch !== '') await rm(scratch, { recursive: true, force: true });
  });

  it('killed twice at random points, restarted at parallelism 3 then 2: every record counted exactly once', async () => {
    const seed = process.env.KAFKA_CRASH_SEED === undefined ? 19 : Number(process.env.KAFKA_CRASH_SEED);
    const rng = new SeededRandom(seed);
    const topic = uniqueTopic('sigkill');
    await cluster.createTopic(topic, 8);
    const input = countingInput({ records: RECORDS, keys: 60, partitions: 8, seed: 23 });
    await producePartitions(cluster.brokers, topic, input);
    const config = {
      brokers: cluster.brokers,
      topic,
      jobId: `kafka-sigkill-${process.pid}`,
      checkpointDir: join(scratch, 'checkpoints'),
      outputFile: join(scratch, 'output.log'),
      checkpointEvery: CHECKPOINT_EVERY,
    };
    const runs: ChildRun[] = [];
    // A lower bound of what is left to read: a run restores a checkpoint taken no later than where the previous run was killed.
    let left = RECORDS;
    for (let i = 0; i < RUNS.length; i++) {
      const last = i === RUNS.length - 1;
      // Kill somewhere in the first 60% of what is surely left, and before 80% of it in any case, so that the run
      // cannot end before the kill, and the next run still has at least a fifth of it to read.
      const kill = last ? null : { after: 1 + rng.int(Math.floor(left * 0.6)), by: Math.floor(left * 0.8) };
      const run = await runChild({ ...config, parallelism: RUNS[i], processNo: i + 1 }, kill);
      runs.push(run);
      left -= run.records;
    }
    const context = `seed ${seed}: ${JSON.stringify(runs)}`;
    expect(
      runs.map((r) => r.killed),
      context,
    ).toEqual([true, true, false]);
    // The restarts restored checkpoints of the killed runs (a run killed at killBy before any of its checkpoints
    // completed leaves the previous one: the last restart restores a checkpoint in any case).
    expect(runs[0].restoredFrom, context).toBeUndefined();
    expect(runs[2].restoredFrom, context).toEqual(expect.any(Number));

    const log = readTransactionLog<CountOutput>(config.outputFile);
    expect(log.duplicateIds, context).toEqual([]);
    const committed = log.transactions.flatMap((t) => t.records);
    expect(checkCounts(committed, input), context).toMatchObject({
      ok: true,
      committedRecords: RECORDS,
      problems: [],
    });
  }, 120_000);

  it('Kafka in and out (kafkaSink at least once): killed once at a random point, restarted at parallelism 3: the output topic, de-duplicated by header, counts every record exactly once', async () => {
    const seed = process.env.KAFKA_CRASH_SEED === undefined ? 29 : Number(process.env.KAFKA_CRASH_SEED);
    const rng = new SeededRandom(seed);
    const topic = uniqueTopic('sigkill-sink-in');
    const sinkTopic = uniqueTopic('sigkill-sink-out');
    await cluster.createTopic(topic, 8);
    await cluster.createTopic(sinkTopic, 4);
    const input = countingInput({ records: RECORDS, keys: 60, partitions: 8, seed: 31 });
    await producePartitions(cluster.brokers, topic, input);
    const config = {
      brokers: cluster.brokers,
      topic,
      sinkTopic,
      jobId: `kafka-sigkill-sink-${process.pid}`,
      checkpointDir: join(scratch, 'checkpoints-sink'),
      checkpointEvery: CHECKPOINT_EVERY,
    };
    const killed = await runChild(
      { ...config, parallelism: 2, processNo: 1 },
      { after: 1 + rng.int(Math.floor(RECORDS * 0.6)), by: Math.floor(RECORDS * 0.8) },
    );
    const finished = await runChild({ ...config, parallelism: 3, processNo: 2 }, null);
    const context = `seed ${seed}: ${JSON.stringify([killed, finished])}`;
    expect([killed.killed, finished.killed], context).toEqual([true, false]);
    expect(finished.restoredFrom, context).toEqual(expect.any(Number));

    const read = await readTopic(cluster.brokers, sinkTopic);
    const { kept, duplicates } = dedupeByHeaders(read);
    const counts = kept.map((r) => JSON.parse(r.value) as CountOutput);
    expect(checkCounts(counts, input), `${context}, ${duplicates} duplicates dropped`).toMatchObject({
      ok: true,
      committedRecords: RECORDS,
      problems: [],
    });
  }, 120_000);
});
