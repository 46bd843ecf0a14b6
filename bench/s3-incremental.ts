/**
 * LevelDB native incremental checkpoints to S3 (an in-process s3rver on loopback) and to the local
 * filesystem in the same run: per checkpoint the objects and bytes uploaded, the S3 requests, and
 * how many table files were new versus reused, showing that a checkpoint after a small change
 * uploads only the new table files; then a full checkpoint of the same state (every file again),
 * and a restore from the incremental chain. Throughput = bytes / wall time.
 *   node dist/bench/s3-incremental.js [--quick] [stateMB]      (default 64 MB, quick 16 MB)
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import S3rver from 's3rver';
import { leveldb, type LevelDbKeyedStateBackend } from '../backends/leveldb/index.js';
import { isIncrementalHandle } from '../backends/leveldb/incremental-snapshot.js';
import type { KeyedStateBackend, RestoreSource, StateBackend } from '../src/backend/contract.js';
import { referencedFiles, type KeyedStateHandle } from '../src/backend/handles.js';
import { BlobCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import { bytesSerializer } from '../src/serializers/builtins.js';
import { valueState } from '../src/state/descriptors.js';
import type { BlobStore } from '../src/storage/blob-store.js';
import { ForwardingBlobStore } from '../src/storage/forwarding-blob-store.js';
import { LocalBlobStore } from '../src/storage/local-blob-store.js';
import { S3BlobStore } from '../src/storage/s3-blob-store.js';
import { parseBenchArgs, printTable, recordResults } from './lib/bench.js';
import { singleSubtask } from './lib/workload.js';

const { quick, args } = parseBenchArgs();
const stateMb = args.length > 0 ? Number(args[0]) : quick ? 16 : 64;
const VALUE_BYTES = 1000;
const JOB = 'bench';
const MiB = 1024 * 1024;
const numKeys = Math.round((stateMb * MiB) / VALUE_BYTES);
/** A small memtable, so that a 1% change of a few MB becomes a new table file (as in a large job). */
const MEMTABLE_BYTES = 256 * 1024;
const vd = valueState<Uint8Array>('v', { serializer: bytesSerializer });
process.env.AWS_EC2_METADATA_DISABLED = 'true';

/** Counts what goes into a store: objects written and their bytes. */
class CountingStore extends ForwardingBlobStore {
  objects = 0;
  bytes = 0;

  override async put(name: string, data: Uint8Array): Promise<void> {
    await this.inner.put(name, data);
    this.objects++;
    this.bytes += data.byteLength;
  }
  override async putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    const n = await this.inner.putStream(name, data);
    this.objects++;
    this.bytes += n;
    return n;
  }
  override async putAtomic(name: string, data: Uint8Array, opts?: { exclusive?: boolean }): Promise<void> {
    await this.inner.putAtomic(name, data, opts);
    this.objects++;
    this.bytes += data.byteLength;
  }
}

function keyed(backend: StateBackend, restore?: RestoreSource<KeyedStateHandle>): Promise<KeyedStateBackend<string>> {
  return backend.createKeyedStateBackend(singleSubtask(JOB, restore));
}

function fill(kb: KeyedStateBackend<string>, stride: number, round: number): void {
  const v = kb.getState(vd);
  const value = Buffer.alloc(VALUE_BYTES);
  for (let i = round % stride; i < numKeys; i += stride) {
    // Incompressible-ish values so table files are about the state size.
    value.writeUInt32BE(i, 0);
    value.writeUInt32BE(round, 4);
    for (let j = 8; j < VALUE_BYTES; j += 4) value.writeUInt32BE((Math.imul(i + j, 2654435761) ^ round) >>> 0, j);
    kb.setCurrentKey(`key-${i}`);
    v.update(value);
  }
}

interface CheckpointFigures {
  readonly checkpoint: string;
  readonly ms: number;
  readonly objectsUploaded: number;
  readonly bytesUploaded: number;
  /** S3 write requests (PutObject, multipart calls); undefined for local storage. */
  readonly writeRequests?: number;
  readonly requests?: Record<string, number>;
  readonly tableFiles: number;
  readonly newTableFiles: number;
  readonly reusedTableFiles: number;
  readonly stateBytes: number;
}

const READS = new Set(['GetObject', 'HeadObject', 'ListObjectsV2', 'HeadBucket']);

function delta(after: Record<string, number>, before: Record<string, number>): Record<string, number> {
  return Object.fromEntries(
    Object.entries(after)
      .map(([k, v]) => [k, v - (before[k] ?? 0)])
      .filter(([, v]) => (v as number) > 0),
  );
}

async function runOn(
  label: string,
  inner: BlobStore,
  s3?: S3BlobStore,
): Promise<{
  checkpoints: CheckpointFigures[];
  restore: { ms: number; bytes: number; MBps: number };
  fullMBps: number;
}> {
  const root = mkdtempSync(join(tmpdir(), 'ss-bench-s3inc-'));
  const store = new CountingStore(inner);
  const storage = new BlobCheckpointStorage(store, { inlineThreshold: 0 });
  const backend = leveldb({ workingDir: join(root, 'work'), incremental: true, memtableBytes: MEMTABLE_BYTES });
  const kb = await keyed(backend);
  try {
    fill(kb, 1, 0);
    const ldb = kb as LevelDbKeyedStateBackend<string>;
    await ldb.flush();
    // Steady state: let LevelDB finish compacting the bulk load before measuring (not timed).
    await ldb.db.compactRange(Buffer.from([0]), Buffer.from([0xff, 0xff, 0xff]));

    const out: CheckpointFigures[] = [];
    let previous: KeyedStateHandle | null = null;
    const checkpoint = async (id: number, name: string, full: boolean): Promise<KeyedStateHandle> => {
      const before = { objects: store.objects, bytes: store.bytes, requests: { ...(s3?.requestCounts() ?? {}) } };
      const t0 = performance.now();
      const task = await kb.snapshot(id, {
        type: 'checkpoint',
        format: 'native',
        full,
        streams: storage.checkpointStreams(JOB, id),
      });
      const handle = await task.done;
      if (handle === null) throw new Error('empty snapshot');
      await storage.writeMetadata(storage.checkpointPointer(JOB, id), {
        checkpointId: id,
        jobId: JOB,
        kind: 'checkpoint',
        format: 'native',
        backend: 'leveldb',
        timestamp: Date.now(),
        operators: [
          {
            operatorId: 'op',
            parallelism: 1,
            maxParallelism: 128,
            subtasks: [{ subtaskIndex: 0, keyed: [handle], operator: [] }],
          },
        ],
      });
      const ms = performance.now() - t0;
      await kb.notifyCheckpointComplete(id);
      const tables = isIncrementalHandle(handle) ? handle.sharedFiles.map((f) => f.handle.path) : [];
      const before2 = new Set(
        previous !== null && isIncrementalHandle(previous) ? previous.sharedFiles.map((f) => f.handle.path) : [],
      );
      const reused = tables.filter((p) => before2.has(p)).length;
      const requests = s3 === undefined ? undefined : delta(s3.requestCounts(), before.requests);
      out.push({
        checkpoint: name,
        ms: Math.round(ms),
        objectsUploaded: store.objects - before.objects,
        bytesUploaded: store.bytes - before.bytes,
        ...(requests === undefined
          ? {}
          : {
              requests,
              writeRequests: Object.entries(requests)
                .filter(([k]) => !READS.has(k))
                .reduce((n, [, v]) => n + v, 0),
            }),
        tableFiles: tables.length,
        newTableFiles: tables.length - reused,
        reusedTableFiles: reused,
        stateBytes: referencedFiles(handle).reduce((n, f) => n + f.size, 0),
      });
      previous = handle;
      return handle;
    };

    await checkpoint(1, 'first (all tables)', false);
    fill(kb, 100, 1); // 1% of the keys change
    await checkpoint(2, 'after 1% change', false);
    fill(kb, 100, 2);
    const chain = await checkpoint(3, 'after another 1%', false);
    await checkpoint(4, 'full (same state)', true);
    console.log(`${label}: checkpoints done`);

    // Restore from the incremental checkpoint 3 (its tables come from checkpoints 1-3).
    const resolved = await storage.resolve(storage.checkpointPointer(JOB, 3));
    const t = performance.now();
    const restored = await keyed(leveldb({ workingDir: join(root, 'restore'), incremental: true }), {
      handles: [chain],
      files: resolved.files,
      mode: 'no-claim',
      checkpointId: 3,
    });
    const restoreMs = performance.now() - t;
    restored.setCurrentKey('key-100');
    if (restored.getState(vd).value() === null) throw new Error('restore lost key-100');
    await restored.close();
    const restoreBytes = referencedFiles(chain).reduce((n, f) => n + f.size, 0);
    const full = out[out.length - 1];
    return {
      checkpoints: out,
      restore: {
        ms: Math.round(restoreMs),
        bytes: restoreBytes,
        MBps: Math.round(restoreBytes / MiB / (restoreMs / 1000)),
      },
      fullMBps: Math.round(full.bytesUploaded / MiB / (full.ms / 1000)),
    };
  } finally {
    await kb.close();
    rmSync(root, { recursive: true, force: true });
  }
}

const localDir = mkdtempSync(join(tmpdir(), 'ss-bench-s3inc-local-'));
const s3Dir = mkdtempSync(join(tmpdir(), 'ss-bench-s3inc-s3rver-'));
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
  const local = await runOn('local filesystem', new LocalBlobStore(localDir));
  const remote = await runOn('s3rver (loopback)', s3, s3);
  const mb = (n: number): string => (n / MiB).toFixed(2);
  const rows: Record<string, string | number>[] = [];
  for (const [storageName, r] of [
    ['local', local],
    ['s3rver', remote],
  ] as const) {
    for (const c of r.checkpoints) {
      rows.push({
        storage: storageName,
        checkpoint: c.checkpoint,
        'tables new/reused': `${c.newTableFiles}/${c.reusedTableFiles}`,
        'objects up': c.objectsUploaded,
        'MB up': mb(c.bytesUploaded),
        'S3 write reqs': c.writeRequests ?? '-',
        'state MB': mb(c.stateBytes),
        ms: c.ms,
      });
    }
  }
  console.log(
    `\nleveldb incremental, ${stateMb} MB state (${numKeys} keys x ${VALUE_BYTES} B), memtable ${MEMTABLE_BYTES / 1024} KiB, 1 subtask`,
  );
  printTable(rows);
  printTable([
    {
      storage: 'local filesystem',
      'full checkpoint MB/s': local.fullMBps,
      'restore ms': local.restore.ms,
      'restore MB/s': local.restore.MBps,
    },
    {
      storage: 's3rver loopback',
      'full checkpoint MB/s': remote.fullMBps,
      'restore ms': remote.restore.ms,
      'restore MB/s': remote.restore.MBps,
    },
  ]);
  for (const c of remote.checkpoints)
    console.log(
      `S3 requests, ${c.checkpoint}: ${Object.entries(c.requests ?? {})
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')}`,
    );
  recordResults('s3Incremental', {
    quick,
    stateMb,
    numKeys,
    valueBytes: VALUE_BYTES,
    memtableBytes: MEMTABLE_BYTES,
    local,
    s3: remote,
  });
} finally {
  await s3.close();
  await server.close();
  rmSync(localDir, { recursive: true, force: true });
  rmSync(s3Dir, { recursive: true, force: true });
}
