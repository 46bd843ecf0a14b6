/**
 * Checkpoint write and restore throughput through BlobCheckpointStorage, to S3 (an in-process
 * s3rver on loopback) and to the local filesystem in the same run, plus S3 requests per checkpoint.
 * A "checkpoint" here is what a job with P subtasks writes: one state stream of S bytes per
 * subtask (written in 64 KiB chunks, as backends do), then _metadata. A restore resolves
 * _metadata and reads every file whole; a "key-group restore" reads 1/8 of each file by ranges.
 *   node dist/bench/s3-storage.js [--quick]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import S3rver from 's3rver';
import type { FileStreamHandle, StreamHandle } from '../src/backend/handles.js';
import { BlobCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import type { CheckpointMetadata } from '../src/checkpoint/metadata.js';
import type { BlobStore } from '../src/storage/blob-store.js';
import { LocalBlobStore } from '../src/storage/local-blob-store.js';
import { S3BlobStore } from '../src/storage/s3-blob-store.js';
import { consume, median, parseBenchArgs, printTable, recordResults, sink } from './lib/bench.js';

const { quick } = parseBenchArgs();
const MiB = 1024 * 1024;
const subtasks = quick ? 4 : 8;
const bytesPerSubtask = (quick ? 4 : 16) * MiB;
const rounds = quick ? 3 : 7;
const CHUNK = 64 * 1024;

process.env.AWS_EC2_METADATA_DISABLED = 'true';
const chunk = Buffer.alloc(CHUNK);
for (let i = 0; i < CHUNK; i++) chunk[i] = (i * 31 + (i >> 7)) & 0xff;

async function writeCheckpoint(storage: BlobCheckpointStorage, id: number): Promise<void> {
  const streams = storage.checkpointStreams('bench-job', id);
  const handles = await Promise.all(
    Array.from({ length: subtasks }, async () => {
      const out = streams.createOutputStream('exclusive');
      for (let written = 0; written < bytesPerSubtask; written += CHUNK) await out.write(chunk);
      return out.closeAndGetHandle();
    }),
  );
  const metadata: CheckpointMetadata = {
    checkpointId: id,
    jobId: 'bench-job',
    kind: 'checkpoint',
    format: 'native',
    backend: 'bench',
    timestamp: Date.now(),
    operators: [
      {
        operatorId: 'op',
        parallelism: subtasks,
        maxParallelism: 128,
        subtasks: handles.map((h, i) => ({
          subtaskIndex: i,
          keyed: [],
          operator: [{ type: 'operator', states: [], stream: h as StreamHandle }],
        })),
      },
    ],
  };
  await storage.writeMetadata(storage.checkpointPointer('bench-job', id), metadata);
}

function filesOf(metadata: CheckpointMetadata): FileStreamHandle[] {
  return metadata.operators
    .flatMap((o) => o.subtasks.flatMap((s) => s.operator.map((h) => h.stream)))
    .filter((h): h is FileStreamHandle => h.type === 'file');
}

async function restoreWhole(storage: BlobCheckpointStorage, id: number): Promise<number> {
  const { metadata, files } = await storage.resolve(storage.checkpointPointer('bench-job', id));
  const read = await Promise.all(filesOf(metadata).map((f) => files.read(f)));
  return read.reduce((n, b) => n + b.length, 0);
}

async function restoreRanges(storage: BlobCheckpointStorage, id: number): Promise<number> {
  const { metadata, files } = await storage.resolve(storage.checkpointPointer('bench-job', id));
  let bytes = 0;
  await Promise.all(
    filesOf(metadata).map(async (f) => {
      // 1/8 of the file as 4 ranges: the blocks of the key groups one subtask would own after rescaling.
      const part = Math.floor(f.size / 32);
      for (let r = 0; r < 4; r++) bytes += (await files.readRange(f, r * 8 * part, part)).length;
    }),
  );
  return bytes;
}

interface Figures {
  writeMBps: number;
  restoreMBps: number;
  rangeRestoreMs: number;
  writeMs: number;
  restoreMs: number;
}

/** One round's write of a checkpoint against its raw baseline, wall and CPU time (ms). */
interface WritePair {
  ours: number;
  raw: number;
  oursCpu: number;
  rawCpu: number;
}

/** Wall and process CPU time (all threads; s3rver runs in this process too) of `run`, ms. */
async function timed(run: () => Promise<unknown>): Promise<{ ms: number; cpuMs: number }> {
  const c0 = process.cpuUsage();
  const t = performance.now();
  await run();
  const ms = performance.now() - t;
  const c = process.cpuUsage(c0);
  return { ms, cpuMs: (c.user + c.system) / 1000 };
}

/**
 * Every round writes a checkpoint and the raw baseline over the same bytes, in alternating order
 * (ours first in odd rounds), so that load on the machine hits both alike; then restores it.
 */
async function measure(
  label: string,
  store: BlobStore,
  raw: (i: number, round: number) => Promise<void>,
  countRequests?: () => Record<string, number>,
): Promise<Figures & { pairs: WritePair[]; requests?: Record<string, number> }> {
  const storage = new BlobCheckpointStorage(store);
  const pairs: WritePair[] = [];
  const reads: number[] = [];
  const ranges: number[] = [];
  let requests: Record<string, number> | undefined;
  for (let round = 1; round <= rounds; round++) {
    const ours = async (): Promise<{ ms: number; cpuMs: number }> => {
      const before = countRequests?.();
      const t = await timed(() => writeCheckpoint(storage, round));
      if (countRequests !== undefined && before !== undefined) {
        const after = countRequests();
        requests = Object.fromEntries(
          Object.entries(after)
            .map(([k, v]) => [k, v - (before[k] ?? 0)])
            .filter(([, v]) => (v as number) > 0),
        );
      }
      return t;
    };
    const baseline = (): Promise<{ ms: number; cpuMs: number }> =>
      timed(() => Promise.all(Array.from({ length: subtasks }, (_, i) => raw(i, round))));
    let o: { ms: number; cpuMs: number };
    let r: { ms: number; cpuMs: number };
    if (round % 2 === 1) {
      o = await ours();
      r = await baseline();
    } else {
      r = await baseline();
      o = await ours();
    }
    pairs.push({ ours: o.ms, raw: r.ms, oursCpu: o.cpuMs, rawCpu: r.cpuMs });
    let t = performance.now();
    consume(await restoreWhole(storage, round));
    reads.push(performance.now() - t);
    t = performance.now();
    consume(await restoreRanges(storage, round));
    ranges.push(performance.now() - t);
    await storage.discardCheckpointDirectory('bench-job', round);
  }
  const total = subtasks * bytesPerSubtask;
  const w = median(pairs.map((p) => p.ours));
  const r = median(reads);
  console.log(`${label}: done (load ${loadavg()[0].toFixed(1)})`);
  return {
    writeMs: Math.round(w),
    writeMBps: Math.round(total / MiB / (w / 1000)),
    restoreMs: Math.round(r),
    restoreMBps: Math.round(total / MiB / (r / 1000)),
    rangeRestoreMs: Math.round(median(ranges)),
    pairs,
    ...(requests !== undefined ? { requests } : {}),
  };
}

/** Raw baselines write the same bytes: one whole buffer per subtask, all in parallel. */
const whole = Buffer.concat(Array.from({ length: bytesPerSubtask / CHUNK }, () => chunk));

/** Medians of the raw side, and the median of the per-round ratios (wall and CPU time). */
function versusRaw(pairs: readonly WritePair[]): { MBps: number; ms: number; ratio: number; cpuRatio: number } {
  const total = subtasks * bytesPerSubtask;
  const ms = median(pairs.map((p) => p.raw));
  return {
    ms: Math.round(ms),
    MBps: Math.round(total / MiB / (median(pairs.map((p) => p.raw)) / 1000)),
    ratio: median(pairs.map((p) => p.raw / p.ours)),
    cpuRatio: median(pairs.map((p) => p.rawCpu / p.oursCpu)),
  };
}

const localDir = mkdtempSync(join(tmpdir(), 'ss-bench-s3-local-'));
const s3Dir = mkdtempSync(join(tmpdir(), 'ss-bench-s3rver-'));
const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  silent: true,
  directory: s3Dir,
  configureBuckets: [{ name: 'bench' }],
});
const { port } = await server.run();
const s3 = new S3BlobStore({
  bucket: 'bench',
  prefix: 'checkpoints',
  endpoint: `http://127.0.0.1:${port}`,
  region: 'us-east-1',
  credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
  forcePathStyle: true,
});
const loadAtStart = loadavg()[0];
try {
  const local = await measure('local filesystem', new LocalBlobStore(localDir), async (i, round) => {
    const fh = await open(join(localDir, `raw-${round}-${i}`), 'w');
    try {
      await fh.writeFile(whole);
      await fh.sync();
    } finally {
      await fh.close();
    }
  });
  const remote = await measure(
    's3rver (loopback)',
    s3,
    async (i, round) => {
      await s3.client.send(
        new PutObjectCommand({ Bucket: 'bench', Key: `raw/${round}/${i}`, Body: whole, ContentLength: whole.length }),
      );
    },
    () => ({ ...s3.requestCounts() }),
  );
  const rawFile = versusRaw(local.pairs);
  const rawS3 = versusRaw(remote.pairs);
  const pct = (x: number): string => `${Math.round(100 * x)}%`;
  const rows = [
    {
      storage: 'local filesystem',
      ...withoutRequests(local),
      'raw write MB/s': rawFile.MBps,
      'vs raw': pct(rawFile.ratio),
      'vs raw, CPU time': pct(rawFile.cpuRatio),
    },
    {
      storage: 's3rver loopback',
      ...withoutRequests(remote),
      'raw write MB/s': rawS3.MBps,
      'vs raw': pct(rawS3.ratio),
      'vs raw, CPU time': pct(rawS3.cpuRatio),
    },
  ];
  const loadAtEnd = loadavg()[0];
  console.log(
    `\ncheckpoint = ${subtasks} files x ${bytesPerSubtask / MiB} MiB + _metadata; medians of ${rounds} rounds, each ` +
      `writing ours and the raw baseline in alternating order (ratio: median of per-round ratios); load ${loadAtStart.toFixed(1)} -> ${loadAtEnd.toFixed(1)}`,
  );
  printTable(rows);
  const requests = remote.requests ?? {};
  const perCheckpoint = Object.values(requests).reduce((a, b) => a + b, 0);
  console.log(
    `S3 requests per checkpoint: ${perCheckpoint} (${Object.entries(requests)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}); raw: ${subtasks} PutObject`,
  );
  recordResults('s3-storage', {
    subtasks,
    bytesPerSubtask,
    rounds,
    load: [loadAtStart, loadAtEnd],
    local,
    s3: remote,
    s3RequestsPerCheckpoint: perCheckpoint,
    rawS3Put: rawS3,
    rawFileWrite: rawFile,
  });
  console.log(`(sink ${sink.value})`);
} finally {
  await s3.close();
  await server.close();
  rmSync(localDir, { recursive: true, force: true });
  rmSync(s3Dir, { recursive: true, force: true });
}

function withoutRequests(f: Figures & { requests?: unknown }): Record<string, number> {
  return {
    writeMs: f.writeMs,
    writeMBps: f.writeMBps,
    restoreMs: f.restoreMs,
    restoreMBps: f.restoreMBps,
    rangeRestoreMs: f.rangeRestoreMs,
  };
}
