import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ensureBuilt } from '../support/proof/crash-child-build.js';
import { describeOnMockCluster } from './support/describe-on-mock-cluster.js';
import { dedupeByHeaders, produceMessages, readTopic, uniqueTopic } from './support/produce.js';

/**
 * examples/kafka-wordcount.ts as a user runs it (compiled, in its own process, configured by its
 * environment) against the mock cluster: the "the example runs", checked rather than said.
 */

interface ExampleRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

function runExample(script: string, env: Record<string, string>): Promise<ExampleRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script], {
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * stderr without KafkaJS 2.2.4's warning on Node 24 (tulios/kafkajs#1751: its request queue passes
 * `throttledUntil - Date.now()` to setTimeout, a negative number Node clamps to 1 ms, as meant):
 * harmless and not ours; anything else the example writes to stderr fails the test.
 */
function stderrBesidesKnownWarnings(stderr: string): string {
  return stderr.replace(
    /^\(node:\d+\) TimeoutNegativeWarning: -\d+ is a negative number\.\nTimeout duration was set to 1\.\n(\(Use `node --trace-warnings \.\.\.` to show where the warning was created\)\n)?/gm,
    '',
  );
}

/** The example's table of top words ("   count  word" lines) as word -> count. */
function topWords(stdout: string): Record<string, number> {
  const words: Record<string, number> = {};
  for (const m of stdout.matchAll(/^ *(\d+) {2}(\S+)$/gm)) words[m[2]] = Number(m[1]);
  return words;
}

/** One message per word, no key: spread over the partitions. */
const produceWords = (brokers: readonly string[], topic: string, words: readonly string[]): Promise<void> =>
  produceMessages(
    brokers,
    topic,
    words.map((w) => ({ value: w })),
  );

const repeat = (words: readonly string[], times: number): string[] => Array.from({ length: times }, () => words).flat();

describeOnMockCluster('examples/kafka-wordcount.ts against a Kafka-protocol broker', (cluster) => {
  let script = '';
  let dir = '';
  beforeAll(async () => {
    script = await ensureBuilt(join('dist', 'examples', 'kafka-wordcount.js'), [
      join('examples', 'kafka-wordcount.ts'),
    ]);
    dir = await mkdtemp(join(tmpdir(), 'ss-kafka-example-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('counts every word of the topic, and a second run resumes from its checkpoint: only what was produced since, counts going on', async () => {
    const topic = uniqueTopic('words');
    await cluster.createTopic(topic, 4);
    // Mixed case and padding: the example trims and lower-cases.
    await produceWords(cluster.brokers, topic, repeat(['apple', 'Banana', ' apple', 'cherry', 'APPLE', 'banana'], 100));
    const env = {
      KAFKA_BROKERS: cluster.brokers.join(','),
      KAFKA_TOPIC: topic,
      CHECKPOINT_DIR: join(dir, 'checkpoints'),
      JOB_ID: 'wordcount-test',
      PARALLELISM: '2',
      CHECKPOINT_EVERY: '50',
    };
    const first = await runExample(script, env);
    expect(stderrBesidesKnownWarnings(first.stderr)).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toMatch(new RegExp(`^read 600 records from ${topic}; \\d+ checkpoints in `, 'm'));
    expect(topWords(first.stdout)).toEqual({ apple: 300, banana: 200, cherry: 100 });

    await produceWords(cluster.brokers, topic, repeat(['apple', 'date'], 10));
    const second = await runExample(script, env);
    expect(stderrBesidesKnownWarnings(second.stderr)).toBe('');
    expect(second.code).toBe(0);
    expect(second.stdout).toMatch(new RegExp(`^read 20 records from ${topic}; `, 'm'));
    // The words read in this run, their counts continued from the checkpoint; any other word printed
    // comes from the restored checkpoint's pre-committed output, committed again, and has its current count.
    const totals: Record<string, number> = { apple: 310, banana: 200, cherry: 100, date: 10 };
    const printed = topWords(second.stdout);
    expect(printed).toMatchObject({ apple: 310, date: 10 });
    for (const [word, n] of Object.entries(printed)) expect(n, word).toBe(totals[word]);
  });

  it('with KAFKA_OUTPUT_TOPIC (at least once) writes every count update to that topic instead of printing the table', async () => {
    const topic = uniqueTopic('words');
    const out = uniqueTopic('counts');
    await cluster.createTopic(topic, 4);
    await cluster.createTopic(out, 4);
    await produceWords(cluster.brokers, topic, repeat(['kiwi', 'lime', 'kiwi'], 40));
    const run = await runExample(script, {
      KAFKA_BROKERS: cluster.brokers.join(','),
      KAFKA_TOPIC: topic,
      KAFKA_OUTPUT_TOPIC: out,
      KAFKA_SINK_GUARANTEE: 'at-least-once',
      CHECKPOINT_DIR: join(dir, 'checkpoints-sink'),
      JOB_ID: 'wordcount-sink-test',
      CHECKPOINT_EVERY: '25',
    });
    expect(stderrBesidesKnownWarnings(run.stderr)).toBe('');
    expect(run.code).toBe(0);
    expect(run.stdout).toContain(`counts went to ${out} (at-least-once)`);
    expect(topWords(run.stdout)).toEqual({});
    // One output per record read, deduplicated by the sink's headers: per word, the counts 1..n.
    const { kept } = dedupeByHeaders(await readTopic(cluster.brokers, out));
    const counts = new Map<string, number[]>();
    for (const r of kept) {
      const o = JSON.parse(r.value) as { word: string; count: number };
      counts.set(o.word, [...(counts.get(o.word) ?? []), o.count]);
    }
    const sorted = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1);
    expect([...counts.keys()].sort()).toEqual(['kiwi', 'lime']);
    expect(counts.get('kiwi')!.sort((a, b) => a - b)).toEqual(sorted(80));
    expect(counts.get('lime')!.sort((a, b) => a - b)).toEqual(sorted(40));
  });

  it('says what to set, and exits 2, without KAFKA_BROKERS', async () => {
    const run = await runExample(script, {});
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('set KAFKA_BROKERS');
  });
});
