import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { FileStreamHandle, KeyedStateHandle } from '../src/backend/handles.js';
import { BlobCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator } from '../src/checkpoint/coordinator.js';
import { keyGroupRangeForSubtask } from '../src/keygroups/key-groups.js';
import { LocalBlobStore } from '../src/storage/local-blob-store.js';
import { median, parseBenchArgs, printTable, recordResults } from './lib/bench.js';

/**
 * The cost of "durable before complete" on local disk: whole checkpoints (P subtasks writing files
 * through the coordinator's streams, then _metadata) with and without the data-file fsync
 * (LocalBlobStore syncData), in alternating rounds so both see the same machine state; medians.
 * Directory fsyncs and the _metadata fsync happen in both modes (they existed before).
 *
 *   node dist/bench/durability.js [--quick] [--dir <path on the disk to measure>]
 *
 * Part of `npm run bench` (suite `durability`); its rows are the report's "Durable before complete" section.
 */
const opts = parseBenchArgs();
const dirArg = process.argv.indexOf('--dir');
const baseDir = dirArg > 0 ? process.argv[dirArg + 1] : tmpdir();
const ROUNDS = opts.quick ? 3 : 9;
const PARALLELISM = 4;
const CHUNK = 64 * 1024;

interface Shape {
  readonly name: string;
  readonly filesPerSubtask: number;
  readonly fileBytes: number;
}
const SHAPES: readonly Shape[] = [
  { name: 'small (4 x 1 x 64 KiB)', filesPerSubtask: 1, fileBytes: 64 * 1024 },
  { name: 'medium (4 x 4 x 1 MiB)', filesPerSubtask: 4, fileBytes: 1024 * 1024 },
  { name: 'large (4 x 2 x 16 MiB)', filesPerSubtask: 2, fileBytes: 16 * 1024 * 1024 },
];

const payload = Buffer.alloc(CHUNK, 0x5a);

async function writeFileThrough(
  streams: ReturnType<ReturnType<CheckpointCoordinator['triggerCheckpoint']>['streamsFor']>,
  bytes: number,
): Promise<FileStreamHandle> {
  const out = streams.createOutputStream('exclusive');
  for (let done = 0; done < bytes; done += CHUNK) await out.write(payload.subarray(0, Math.min(CHUNK, bytes - done)));
  const handle = await out.closeAndGetHandle();
  if (handle?.type !== 'file') throw new Error('expected a file handle');
  return handle;
}

/** One checkpoint, trigger to completion; returns ms. */
async function oneCheckpoint(coord: CheckpointCoordinator, shape: Shape): Promise<number> {
  const start = performance.now();
  const p = coord.triggerCheckpoint();
  await Promise.all(
    Array.from({ length: PARALLELISM }, async (_, i) => {
      const streams = p.streamsFor('op', i);
      const files: FileStreamHandle[] = [];
      for (let f = 0; f < shape.filesPerSubtask; f++) files.push(await writeFileThrough(streams, shape.fileBytes));
      const handle: KeyedStateHandle = {
        type: 'bench-files',
        keyGroupRange: keyGroupRangeForSubtask(128, PARALLELISM, i).toJSON(),
        maxParallelism: 128,
        files,
      } as KeyedStateHandle;
      return coord.acknowledge(p.checkpointId, 'op', i, { keyed: [handle], operator: [] });
    }),
  );
  await p.completion;
  return performance.now() - start;
}

async function main(): Promise<void> {
  const rows: Record<string, string | number>[] = [];
  const results: Record<string, unknown>[] = [];
  for (const shape of SHAPES) {
    const bytes = PARALLELISM * shape.filesPerSubtask * shape.fileBytes;
    const times: Record<'fsync' | 'no fsync', number[]> = { fsync: [], 'no fsync': [] };
    const dir = await mkdtemp(join(baseDir, 'streamstate-durability-'));
    try {
      const coords = new Map<boolean, CheckpointCoordinator>();
      for (const syncData of [true, false]) {
        const storage = new BlobCheckpointStorage(
          new LocalBlobStore(join(dir, syncData ? 'sync' : 'nosync'), { syncData }),
          { inlineThreshold: 0 },
        );
        const coord = new CheckpointCoordinator({
          jobId: 'bench',
          storage,
          backendName: 'bench',
          numRetained: 1,
          operators: [{ operatorId: 'op', parallelism: PARALLELISM, maxParallelism: 128 }],
        });
        await coord.restore();
        await oneCheckpoint(coord, shape); // warm-up
        coords.set(syncData, coord);
      }
      for (let round = 0; round < ROUNDS; round++) {
        // Alternate which mode goes first, so neither always follows the other's writeback.
        const order = round % 2 === 0 ? [true, false] : [false, true];
        for (const syncData of order)
          times[syncData ? 'fsync' : 'no fsync'].push(await oneCheckpoint(coords.get(syncData)!, shape));
      }
      for (const c of coords.values()) await c.shutdown('cancel');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    for (const mode of ['fsync', 'no fsync'] as const) {
      const ms = median(times[mode]);
      const mbps = bytes / (1024 * 1024) / (ms / 1000);
      rows.push({
        checkpoint: shape.name,
        mode,
        'median ms': ms.toFixed(1),
        'MB/s': mbps.toFixed(1),
        rounds: times[mode].length,
      });
      results.push({ shape: shape.name, bytes, mode, medianMs: ms, mbPerSec: mbps, samplesMs: times[mode] });
    }
  }
  printTable(rows);
  recordResults('durability', {
    quick: opts.quick,
    dir: baseDir,
    parallelism: PARALLELISM,
    rounds: ROUNDS,
    rows,
    results,
  });
}

await main();
