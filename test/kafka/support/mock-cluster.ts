import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * A librdkafka mock cluster (real Kafka-protocol brokers on 127.0.0.1) in a child process, for the
 * Kafka tests and bench/kafka.ts. The helper (mock-cluster.c) is compiled with `cc` against the
 * system's librdkafka (Debian: `apt-get install -y librdkafka-dev`) on first use, into
 * node_modules/.cache/streamstate-kafka-mock/.
 *
 * Set STREAMSTATE_SKIP_KAFKA_TESTS=1 to skip the Kafka tests on a machine without librdkafka; without
 * it a missing compiler or library fails the tests (CI installs both, see .ci/run).
 */
export const SKIP_KAFKA_REASON = process.env.STREAMSTATE_SKIP_KAFKA_TESTS
  ? `STREAMSTATE_SKIP_KAFKA_TESTS=${process.env.STREAMSTATE_SKIP_KAFKA_TESTS}: Kafka tests skipped (they need librdkafka-dev and cc)`
  : null;

function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('mock-cluster: no package.json above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  return dir;
}

/** Compiles the helper once per source version; returns the binary's path. */
export function mockClusterBinary(): string {
  const root = projectRoot();
  const source = join(root, 'test', 'kafka', 'support', 'mock-cluster.c');
  const hash = createHash('sha256').update(readFileSync(source)).digest('hex').slice(0, 12);
  const dir = join(root, 'node_modules', '.cache', 'streamstate-kafka-mock');
  const binary = join(dir, `mock-cluster-${hash}`);
  if (existsSync(binary)) return binary;
  mkdirSync(dir, { recursive: true });
  const tmp = `${binary}.${process.pid}.tmp`;
  const cc = process.env.CC ?? 'cc';
  const r = spawnSync(cc, ['-O2', '-o', tmp, source, '-lrdkafka'], { encoding: 'utf8' });
  if (r.status !== 0) {
    throw new Error(
      `could not compile the Kafka mock cluster helper with '${cc}' (${r.error?.message ?? r.stderr.trim()}). ` +
        'It needs a C compiler and librdkafka with its mock cluster: `apt-get install -y gcc librdkafka-dev`. ' +
        'To skip the Kafka tests instead, set STREAMSTATE_SKIP_KAFKA_TESTS=1.',
    );
  }
  renameSync(tmp, binary); // atomic: parallel test files may compile at the same time
  return binary;
}

export interface MockCluster {
  /** host:port of every broker. */
  readonly brokers: readonly string[];
  createTopic(topic: string, partitions: number): Promise<void>;
  /** Brokers answer requests for `topic` with Kafka error `code` (3: UNKNOWN_TOPIC_OR_PARTITION). */
  setTopicError(topic: string, code: number): Promise<void>;
  /** The next `count` requests of API `apiKey`, from any client, are answered with Kafka error `code` (at most 64). */
  pushRequestErrors(apiKey: number, count: number, code: number): Promise<void>;
  stop(): Promise<void>;
}

/** Starts a mock cluster of `brokers` brokers (three or more: one-broker clusters were seen to hang). */
export async function startMockCluster(brokers = 3): Promise<MockCluster> {
  const child: ChildProcessWithoutNullStreams = spawn(mockClusterBinary(), [String(brokers)], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines: Interface = createInterface({ input: child.stdout });
  const it = lines[Symbol.asyncIterator]();
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code, signal) =>
      reject(new Error(`mock cluster exited (${code ?? signal}): ${stderr.trim()}`)),
    ),
  );
  exited.catch(() => undefined);
  const nextLine = async (): Promise<string> => {
    const r = await Promise.race([it.next(), exited]);
    if (r.done) throw new Error(`mock cluster closed its output: ${stderr.trim()}`);
    return r.value;
  };
  const first = await nextLine();
  if (!first.startsWith('BOOTSTRAP ')) throw new Error(`mock cluster said '${first}'`);
  const list = first.slice('BOOTSTRAP '.length).split(',');
  // One command at a time: answers come back in order.
  let queue: Promise<unknown> = Promise.resolve();
  const command = (line: string): Promise<void> => {
    const run = queue.then(async () => {
      child.stdin.write(`${line}\n`);
      const answer = await nextLine();
      if (answer !== 'OK') throw new Error(`mock cluster: '${line}' -> ${answer}`);
    });
    queue = run.catch(() => undefined);
    return run;
  };
  return {
    brokers: list,
    createTopic: (topic, partitions) => command(`create ${topic} ${partitions}`),
    setTopicError: (topic, code) => command(`error ${topic} ${code}`),
    pushRequestErrors: (apiKey, count, code) => command(`request-errors ${apiKey} ${count} ${code}`),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.stdin.end();
      await gone;
    },
  };
}
