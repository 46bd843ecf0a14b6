import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StreamStateError } from '../src/errors.js';
import { LocalBlobStore } from '../src/storage/local-blob-store.js';
import { CommittedOutput } from '../src/testing/committed-output.js';
import { countingJob, runPipeline, type CountInput, type CountOutput } from '../src/testing/index.js';
import { isProofBackendKind, makeProofBackend, proofStorage, type ProofBackendKind } from './proof/backends.js';
import { lineChartSvg, slope, type ChartSeries } from './proof/soak-chart.js';

/**
 * Soak test: runs the counting job on one backend for N minutes with a checkpoint about every
 * second and 3 retained checkpoints, sampling the disk usage of the checkpoint directory (+ the
 * LevelDB working directory) and the process memory every few seconds. Writes
 * bench/results/soak-<backend>.json and the chart bench/results/soak.svg (every backend that has
 * a result file). Bounded = no upward trend after warm-up: the slopes are reported.
 *
 *   npm run build && node dist/bench/soak.js --minutes 30                  # all three backends, 30 min each
 *   node dist/bench/soak.js --minutes 3 --backends filesystem,leveldb       # a short validation run
 *   node dist/bench/soak.js --chart-only                                    # redraw soak.svg from the result files
 */

interface Sample {
  /** seconds since the start */
  readonly t: number;
  readonly checkpointBytes: number;
  readonly checkpointFiles: number;
  readonly workingBytes: number;
  readonly rss: number;
  readonly heapUsed: number;
  readonly checkpoints: number;
  readonly records: number;
}

interface SoakResult {
  readonly backend: ProofBackendKind;
  readonly minutes: number;
  readonly seconds: number;
  readonly records: number;
  readonly recordsPerSecond: number;
  readonly checkpointEvery: number;
  readonly checkpointsCompleted: number;
  readonly checkpointsAborted: number;
  readonly numRetained: number;
  readonly keys: number;
  readonly exactlyOnce: {
    readonly ok: boolean;
    readonly transactions: number;
    readonly records: number;
    readonly problems: readonly string[];
  };
  /** Least-squares slopes after the warm-up (first 20% of the run): bytes per minute. */
  readonly slopesPerMinute: { readonly diskBytes: number; readonly rss: number; readonly heapUsed: number };
  readonly bounded: { readonly disk: boolean; readonly memory: boolean };
  readonly samples: readonly Sample[];
  readonly machine: string;
}

const KEYS = 20_000;
const PARTITIONS = 4;
const NUM_RETAINED = 3;

/** The same key (kept in one partition) and value for record i of partition p, computed on demand. */
function recordAt(p: number, i: number): CountInput {
  let h = Math.imul(i ^ 0x9e3779b9, 0x85ebca6b) ^ (p * 0x27d4eb2f);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h ^= h >>> 16;
  const k = p + PARTITIONS * ((h >>> 0) % (KEYS / PARTITIONS));
  return { key: `key-${k}`, value: (i % 7) + 1 };
}

/**
 * Partitions generated on access: hours of input in constant memory. With a deadline the input
 * is live: until then it claims `perPartition` records; from then on each partition ends after
 * the last record read, so the run lasts the requested time whatever the machine's speed.
 */
function lazyInput(perPartition: number, deadline = Number.POSITIVE_INFINITY): CountInput[][] {
  return Array.from({ length: PARTITIONS }, (_, p) => {
    let read = 0;
    let ended: number | null = null;
    const length = (): number => {
      if (ended === null && Date.now() >= deadline) ended = read;
      return ended ?? perPartition;
    };
    return new Proxy([] as CountInput[], {
      get(target, prop, receiver) {
        if (prop === 'length') return length();
        if (typeof prop === 'string') {
          const i = Number(prop);
          if (Number.isInteger(i) && i >= 0 && String(i) === prop) {
            if (i >= length()) return undefined;
            read = Math.max(read, i + 1);
            return recordAt(p, i);
          }
        }
        return Reflect.get(target, prop, receiver);
      },
    });
  });
}

/** The external system for a long run: checks exactly-once per key as transactions arrive, keeps no records. */
class StreamingCountCheck extends CommittedOutput<CountOutput> {
  private readonly last = new Map<string, number>();
  private readonly seen = new Set<string>();
  transactionCount = 0;
  recordCount = 0;
  readonly problems: string[] = [];

  override commit(transactionId: string, _checkpointId: number, records: readonly CountOutput[]): boolean {
    if (this.seen.has(transactionId)) return false;
    this.seen.add(transactionId);
    this.transactionCount++;
    for (const r of records) {
      this.recordCount++;
      const prev = this.last.get(r.key) ?? 0;
      if (r.count !== prev + 1 && this.problems.length < 10)
        this.problems.push(`${r.key}: count ${r.count} after ${prev} (${r.count <= prev ? 'duplicate' : 'gap'})`);
      this.last.set(r.key, r.count);
    }
    return true;
  }

  override isCommitted(transactionId: string): boolean {
    return this.seen.has(transactionId);
  }
}

async function du(dir: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return { bytes, files };
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      const sub = await du(p);
      bytes += sub.bytes;
      files += sub.files;
    } else {
      try {
        bytes += (await stat(p)).size;
        files++;
      } catch {
        // deleted meanwhile
      }
    }
  }
  return { bytes, files };
}

async function runOnce(
  backend: ProofBackendKind,
  root: string,
  perPartition: number,
  checkpointEvery: number,
  onEvent?: (records: number, checkpoints: number) => void,
  deadline?: number,
) {
  const checkpointDir = join(root, 'checkpoints');
  const storage = proofStorage(new LocalBlobStore(checkpointDir), 20 * 1024);
  const output = new StreamingCountCheck();
  let checkpoints = 0;
  let aborted = 0;
  let records = 0;
  const input = lazyInput(perPartition, deadline);
  const result = await runPipeline(countingJob(input, { parallelism: 2, jobId: 'soak' }), {
    backend: makeProofBackend(backend, {
      checkpointStorage: storage,
      workingDir: join(root, 'work'),
      materializationIntervalMs: 10_000,
      preemptivePersistBytes: 2 * 1024 * 1024,
    }),
    checkpointStorage: storage,
    checkpointEvery,
    numRetainedCheckpoints: NUM_RETAINED,
    output,
    seed: 1,
    onEvent: (e) => {
      if (e.type === 'checkpoint-completed') {
        checkpoints++;
        onEvent?.(records, checkpoints);
      } else if (e.type === 'checkpoint-aborted') aborted++;
      else if (e.type === 'emit') records++;
    },
  });
  return { result, output, checkpoints, aborted, records };
}

async function soak(backend: ProofBackendKind, minutes: number, sampleSeconds: number): Promise<SoakResult> {
  const root = await mkdtemp(join(tmpdir(), `streamstate-soak-${backend}-`));
  try {
    // Calibrate: records per second of this backend on this machine, so that a checkpoint comes about every second.
    const warm = Date.now();
    await runOnce(backend, join(root, 'calibrate'), 50_000, 10_000);
    const rate = Math.max(1000, Math.round((4 * 50_000) / ((Date.now() - warm) / 1000)));
    await rm(join(root, 'calibrate'), { recursive: true, force: true });
    // The calibration only sets the checkpoint interval; the run itself ends at the deadline (the
    // input claims far more records than it can reach and ends then).
    const perPartition = Math.ceil((rate * minutes * 60 * 100) / PARTITIONS);
    const checkpointEvery = rate;
    console.log(`${backend}: ~${rate} records/s; ${minutes} min, a checkpoint every ${checkpointEvery} records`);

    const samples: Sample[] = [];
    const started = Date.now();
    let progress = { records: 0, checkpoints: 0 };
    const take = async (): Promise<void> => {
      const chk = await du(join(root, 'checkpoints'));
      const work = await du(join(root, 'work'));
      const mem = process.memoryUsage();
      samples.push({
        t: (Date.now() - started) / 1000,
        checkpointBytes: chk.bytes,
        checkpointFiles: chk.files,
        workingBytes: work.bytes,
        rss: mem.rss,
        heapUsed: mem.heapUsed,
        checkpoints: progress.checkpoints,
        records: progress.records,
      });
      const s = samples[samples.length - 1];
      if (samples.length % 6 === 1)
        console.log(
          `  t=${s.t.toFixed(0)}s checkpoints=${s.checkpoints} disk=${((s.checkpointBytes + s.workingBytes) / 1e6).toFixed(1)}MB rss=${(s.rss / 1e6).toFixed(0)}MB heap=${(s.heapUsed / 1e6).toFixed(0)}MB`,
        );
    };
    let sampling = false;
    const timer = setInterval(() => {
      if (sampling) return;
      sampling = true;
      void take().finally(() => (sampling = false));
    }, sampleSeconds * 1000);
    const run = await runOnce(
      backend,
      root,
      perPartition,
      checkpointEvery,
      (records, checkpoints) => (progress = { records, checkpoints }),
      started + minutes * 60_000,
    );
    clearInterval(timer);
    await take();
    const seconds = (Date.now() - started) / 1000;
    const after = samples.filter((s) => s.t >= seconds * 0.2);
    const perMinute = (f: (s: Sample) => number) => slope(after.map((s) => [s.t, f(s)] as const)) * 60;
    const mean = (f: (s: Sample) => number) => after.reduce((a, s) => a + f(s), 0) / Math.max(1, after.length);
    const diskOf = (s: Sample) => s.checkpointBytes + s.workingBytes;
    const slopes = {
      diskBytes: perMinute(diskOf),
      rss: perMinute((s) => s.rss),
      heapUsed: perMinute((s) => s.heapUsed),
    };
    const windowMin = (seconds * 0.8) / 60;
    // Bounded: the trend after warm-up adds less than 25% of the mean over the window.
    const bounded = {
      disk: slopes.diskBytes * windowMin < 0.25 * mean(diskOf),
      memory: slopes.rss * windowMin < 0.25 * mean((s) => s.rss),
    };
    return {
      backend,
      minutes,
      seconds,
      records: run.records,
      recordsPerSecond: Math.round(run.records / seconds),
      checkpointEvery,
      checkpointsCompleted: run.checkpoints,
      checkpointsAborted: run.aborted,
      numRetained: NUM_RETAINED,
      keys: KEYS,
      exactlyOnce: {
        ok: run.output.problems.length === 0 && run.output.recordCount === run.records,
        transactions: run.output.transactionCount,
        records: run.output.recordCount,
        problems: run.output.problems,
      },
      slopesPerMinute: slopes,
      bounded,
      samples,
      machine: `${process.platform} ${process.arch}, node ${process.version}`,
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

function writeChart(outDir: string): void {
  const results: SoakResult[] = [];
  for (const b of ['filesystem', 'leveldb', 'changelog-filesystem', 'memory']) {
    const f = join(outDir, `soak-${b}.json`);
    if (existsSync(f)) results.push(JSON.parse(readFileSync(f, 'utf8')) as SoakResult);
  }
  const series = (f: (s: Sample) => number): ChartSeries[] =>
    results.map((r) => ({ name: r.backend, points: r.samples.map((s) => [s.t / 60, f(s) / 1e6] as const) }));
  const svg = lineChartSvg(
    'Soak: checkpoint every ~1 s, 3 retained',
    [
      {
        title: 'Disk: checkpoint directory + LevelDB working directory',
        xLabel: 'minutes',
        yLabel: 'MB',
        series: series((s) => s.checkpointBytes + s.workingBytes),
      },
      { title: 'Process memory (RSS)', xLabel: 'minutes', yLabel: 'MB', series: series((s) => s.rss) },
      { title: 'JS heap used', xLabel: 'minutes', yLabel: 'MB', series: series((s) => s.heapUsed) },
    ],
    results
      .map((r) => `${r.backend}: ${(r.seconds / 60).toFixed(1)} min, ${r.checkpointsCompleted} checkpoints`)
      .join('; '),
  );
  writeFileSync(join(outDir, 'soak.svg'), svg);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string): string | undefined => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const minutes = Number(opt('minutes') ?? 30);
  const sampleSeconds = Number(opt('sample-seconds') ?? 5);
  const outDir = opt('out') ?? join('bench', 'results');
  const backends = (opt('backends') ?? 'filesystem,leveldb,changelog-filesystem').split(',');
  if (!(minutes > 0) || !(sampleSeconds > 0))
    throw new StreamStateError('INVALID_ARGUMENT', '--minutes and --sample-seconds must be positive numbers.');
  for (const b of backends)
    if (!isProofBackendKind(b))
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `unknown backend ${b}; use filesystem, leveldb, changelog-filesystem or memory.`,
      );
  mkdirSync(outDir, { recursive: true });
  if (args.includes('--chart-only')) return writeChart(outDir);
  for (const b of backends as ProofBackendKind[]) {
    const r = await soak(b, minutes, sampleSeconds);
    writeFileSync(join(outDir, `soak-${b}.json`), `${JSON.stringify(r, null, 1)}\n`);
    console.log(
      `${b}: ${r.seconds.toFixed(0)} s, ${r.checkpointsCompleted} checkpoints (${r.checkpointsAborted} aborted), exactly once ${r.exactlyOnce.ok}, ` +
        `slopes/min disk ${(r.slopesPerMinute.diskBytes / 1e6).toFixed(2)} MB rss ${(r.slopesPerMinute.rss / 1e6).toFixed(2)} MB heap ${(r.slopesPerMinute.heapUsed / 1e6).toFixed(2)} MB, ` +
        `bounded disk ${r.bounded.disk} memory ${r.bounded.memory}`,
    );
    writeChart(outDir);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
