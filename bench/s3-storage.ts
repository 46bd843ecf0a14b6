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
import { tmpdir } from 'node:os';
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
const rounds = quick ? 2 : 3;
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

async function measure(
  label: string,
  store: BlobStore,
  countRequests?: () => Record<string, number>,
): Promise<Figures & { requests?: Record<string, number> }> {
  const storage = new BlobCheckpointStorage(store);
  const writes: number[] = [];
  const reads: number[] = [];
  const ranges: number[] = [];
  let requests: Record<string, number> | undefined;
  for (let round = 1; round <= rounds; round++) {
    const before = countRequests?.();
    let t = performance.now();
    await writeCheckpoint(storage, round);
    writes.push(performance.now() - t);
    if (countRequests !== undefined && before !== undefined) {
      const after = countRequests();
      requests = Object.fromEntries(
        Object.entries(after)
          .map(([k, v]) => [k, v - (before[k] ?? 0)])
          .filter(([, v]) => (v as number) > 0),
      );
    }
    t = performance.now();
    consume(await restoreWhole(storage, round));
    reads.push(performance.now() - t);
    t = performance.now();
    consume(await restoreRanges(storage, round));
    ranges.push(performance.now() - t);
    await storage.discardCheckpointDirectory('bench-job', round);
  }
  const total = subtasks * bytesPerSubtask;
  const w = median(writes);
  const r = median(reads);
  console.log(`${label}: done`);
  return {
    writeMs: Math.round(w),
    writeMBps: Math.round(total / MiB / (w / 1000)),
    restoreMs: Math.round(r),
    restoreMBps: Math.round(total / MiB / (r / 1000)),
    rangeRestoreMs: Math.round(median(ranges)),
    ...(requests !== undefined ? { requests } : {}),
  };
}

/**
 * Raw baselines over the same bytes (one whole buffer per subtask, all in parallel): PutObject
 * through the same S3 client, and a plain file write + fsync. What the storage layer costs on top.
 */
const whole = Buffer.concat(Array.from({ length: bytesPerSubtask / CHUNK }, () => chunk));
async function rawMBps(put: (i: number, round: number) => Promise<void>): Promise<{ ms: number; MBps: number }> {
  const times: number[] = [];
  for (let round = 1; round <= rounds; round++) {
    const t = performance.now();
    await Promise.all(Array.from({ length: subtasks }, (_, i) => put(i, round)));
    times.push(performance.now() - t);
  }
  const ms = median(times);
  return { ms: Math.round(ms), MBps: Math.round((subtasks * bytesPerSubtask) / MiB / (ms / 1000)) };
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
try {
  const local = await measure('local filesystem', new LocalBlobStore(localDir));
  const remote = await measure('s3rver (loopback)', s3, () => ({ ...s3.requestCounts() }));
  const rawS3 = await rawMBps(async (i, round) => {
    await s3.client.send(
      new PutObjectCommand({ Bucket: 'bench', Key: `raw/${round}/${i}`, Body: whole, ContentLength: whole.length }),
    );
  });
  const rawFile = await rawMBps(async (i, round) => {
    const fh = await open(join(localDir, `raw-${round}-${i}`), 'w');
    try {
      await fh.writeFile(whole);
      await fh.sync();
    } finally {
      await fh.close();
    }
  });
  const rows = [
    {
      storage: 'local filesystem',
      ...withoutRequests(local),
      'raw write MB/s': rawFile.MBps,
      'vs raw': `${Math.round((100 * local.writeMBps) / rawFile.MBps)}%`,
    },
    {
      storage: 's3rver loopback',
      ...withoutRequests(remote),
      'raw write MB/s': rawS3.MBps,
      'vs raw': `${Math.round((100 * remote.writeMBps) / rawS3.MBps)}%`,
    },
  ];
  console.log(`\ncheckpoint = ${subtasks} files x ${bytesPerSubtask / MiB} MiB + _metadata; medians of ${rounds}`);
  printTable(rows);
  const requests = remote.requests ?? {};
  const perCheckpoint = Object.values(requests).reduce((a, b) => a + b, 0);
  console.log(
    `S3 requests per checkpoint: ${perCheckpoint} (${Object.entries(requests)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')})`,
  );
  recordResults('s3-storage', {
    subtasks,
    bytesPerSubtask,
    rounds,
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
