import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  isIncrementalHandle,
  leveldb,
  type LevelDbIncrementalHandle,
  type LevelDbKeyedStateBackend,
  type LevelDbOptions,
} from '../../backends/leveldb/index.js';
import type { KeyedStateBackend, RestoreSource, StateBackend } from '../../src/backend/contract.js';
import { referencedFiles, type KeyedStateHandle } from '../../src/backend/handles.js';
import { localCheckpointStorage, type BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator } from '../../src/checkpoint/coordinator.js';
import { resolveHandlePath } from '../../src/checkpoint/streams.js';
import { KeyGroupRange } from '../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';

const JOB = 'job-leveldb-incremental';
const OP = 'op';
const MAX_P = 128;
const vd = valueState<string>('v', { serializer: stringSerializer });

let root: string;
let storage: BlobCheckpointStorage;
let backend: StateBackend;
const open: KeyedStateBackend<string>[] = [];

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'streamstate-leveldb-inc-'));
  storage = localCheckpointStorage(join(root, 'checkpoints'), { inlineThreshold: 0 });
  // A small memtable so that the test data spreads over many table files and compactions.
  backend = leveldb({ workingDir: join(root, 'work'), writeBufferBytes: 256 * 1024, memtableBytes: 64 * 1024 });
});

afterEach(async () => {
  await Promise.allSettled(open.splice(0).map((b) => b.close()));
  await rm(root, { recursive: true, force: true });
});

async function create(
  restore?: RestoreSource<KeyedStateHandle>,
  b: StateBackend = backend,
): Promise<KeyedStateBackend<string>> {
  const kb = await b.createKeyedStateBackend({
    jobId: JOB,
    operatorId: OP,
    subtaskIndex: 0,
    parallelism: 1,
    maxParallelism: MAX_P,
    keyGroupRange: new KeyGroupRange(0, MAX_P - 1),
    keySerializer: stringSerializer,
    ...(restore ? { restore } : {}),
  });
  open.push(kb);
  return kb;
}

function coordinator(numRetained = 3, fencing?: { minAgeMs: number }): CheckpointCoordinator {
  return new CheckpointCoordinator({
    jobId: JOB,
    storage,
    backendName: 'leveldb',
    operators: [{ operatorId: OP, parallelism: 1, maxParallelism: MAX_P }],
    numRetained,
    ...(fencing ? { fencing } : {}),
  });
}

/** One checkpoint through the coordinator: trigger, snapshot, acknowledge, notify. */
async function checkpoint(
  coord: CheckpointCoordinator,
  kb: KeyedStateBackend<string>,
): Promise<{ id: number; handle: LevelDbIncrementalHandle }> {
  const p = coord.triggerCheckpoint();
  const task = await kb.snapshot(p.checkpointId, p.snapshotOptions(OP, 0));
  const handle = await task.done;
  if (handle === null || !isIncrementalHandle(handle)) throw new Error('expected an incremental handle');
  await coord.acknowledge(p.checkpointId, OP, 0, { keyed: [handle], operator: [] });
  expect(coord.latestCompleted()?.checkpointId).toBe(p.checkpointId);
  await kb.notifyCheckpointComplete(p.checkpointId);
  return { id: p.checkpointId, handle };
}

async function expectedJobFiles(coord: CheckpointCoordinator): Promise<string[]> {
  const out = new Set<string>();
  for (const info of coord.completedCheckpoints()) {
    const { metadata } = await storage.resolve(info.pointer);
    out.add(`${info.pointer}/_metadata`);
    for (const op of metadata.operators)
      for (const s of op.subtasks)
        for (const f of referencedFiles([s.keyed, s.operator])) out.add(resolveHandlePath(info.pointer, f.path));
  }
  return [...out].sort();
}

async function restoreFrom(
  pointer: string,
  mode: 'claim' | 'no-claim' = 'no-claim',
): Promise<KeyedStateBackend<string>> {
  const { metadata, files } = await storage.resolve(pointer);
  const handles = metadata.operators[0].subtasks[0].keyed;
  return create({ handles, files, mode, checkpointId: metadata.checkpointId });
}

/** Writes round `round`: 400 keys updated with ~200 bytes each, a few removed. */
function writeRound(kb: KeyedStateBackend<string>, model: Map<string, string>, round: number): void {
  const v = kb.getState(vd);
  for (let i = 0; i < 400; i++) {
    const key = `k${(round * 131 + i * 7) % 1500}`;
    kb.setCurrentKey(key);
    // Incompressible values, so table files are about as large as the data.
    const value = [0, 1, 2].map((n) => createHash('sha256').update(`${round}-${i}-${n}`).digest('hex')).join('');
    v.update(value);
    model.set(key, value);
  }
  for (let i = 0; i < 10; i++) {
    const key = `k${(round * 17 + i * 101) % 1500}`;
    kb.setCurrentKey(key);
    v.clear();
    model.delete(key);
  }
}

async function readAll(kb: KeyedStateBackend<string>): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const v = kb.getState(vd);
  const keys: string[] = [];
  for await (const [k] of kb.getKeysAndNamespaces<string>('v')) keys.push(k);
  for (const k of keys) {
    kb.setCurrentKey(k);
    out.set(k, v.value() as string);
  }
  return out;
}

describe('leveldb native incremental checkpoints through the CheckpointCoordinator', () => {
  it('a chain of 20 checkpoints with retention 3 keeps exactly the referenced files, and each retained checkpoint restores its own state', async () => {
    const coord = coordinator(3);
    await coord.restore();
    const kb = await create();
    const models = new Map<number, Map<string, string>>();
    const model = new Map<string, string>();
    let uploaded = 0;
    let referenced = 0;
    const seen = new Set<string>();
    for (let round = 1; round <= 20; round++) {
      writeRound(kb, model, round);
      const { id, handle } = await checkpoint(coord, kb);
      models.set(id, new Map(model));
      uploaded += handle.sharedFiles.filter((f) => !seen.has(f.handle.path)).length;
      referenced += handle.sharedFiles.length;
      for (const f of handle.sharedFiles) seen.add(f.handle.path);
    }
    // Later checkpoints reference earlier uploads instead of uploading again.
    expect(uploaded).toBeLessThan(referenced);

    const retained = coord.completedCheckpoints();
    expect(retained.map((c) => c.checkpointId)).toEqual([18, 19, 20]);
    expect((await storage.listJobFiles(JOB)).sort()).toEqual(await expectedJobFiles(coord));

    for (const info of retained) {
      const r = await restoreFrom(info.pointer);
      expect(await readAll(r)).toEqual(models.get(info.checkpointId));
      await r.close();
    }
    await coord.shutdown('finish');
  });

  it('an incremental checkpoint after a small change uploads no table file again, only the small log and MANIFEST', async () => {
    const coord = coordinator(3);
    await coord.restore();
    const kb = await create();
    const model = new Map<string, string>();
    for (let round = 1; round <= 3; round++) writeRound(kb, model, round);
    // Let LevelDB finish compacting the load first: a compaction still running in the background
    // would legitimately add table files between the two checkpoints (the claim is about the change).
    const ldb = kb as LevelDbKeyedStateBackend<string>;
    await ldb.flush();
    await ldb.db.compactRange(Buffer.from([0]), Buffer.from([0xff, 0xff, 0xff]));
    const first = await checkpoint(coord, kb);
    const v = kb.getState(vd);
    kb.setCurrentKey('k1');
    v.update('changed');
    const second = await checkpoint(coord, kb);
    const before = new Set(first.handle.sharedFiles.map((f) => f.handle.path));
    expect(second.handle.sharedFiles.length).toBeGreaterThan(0);
    // The change sits in the memtable: its write-ahead log is a private file; no table is new.
    expect(second.handle.sharedFiles.filter((f) => !before.has(f.handle.path))).toEqual([]);
    expect(second.handle.privateFiles.map((f) => f.localName).some((n) => n.endsWith('.log'))).toBe(true);
    // What it writes is bounded by the memtable (64 KiB here), not by the state size.
    const written = second.handle.privateFiles.reduce((n, f) => n + f.handle.size, 0);
    const all = second.handle.sharedFiles.reduce((n, f) => n + f.handle.size, 0);
    expect(written).toBeLessThan(80 * 1024);
    expect(written).toBeLessThan(all / 2);
    // A savepoint-like full snapshot uploads everything again.
    const p = coord.triggerCheckpoint();
    const full = (await (
      await kb.snapshot(p.checkpointId, { type: 'checkpoint', full: true, streams: p.streamsFor(OP, 0) })
    ).done) as LevelDbIncrementalHandle;
    expect(full.sharedFiles.every((f) => !before.has(f.handle.path))).toBe(true);
    await coord.abort(p.checkpointId, 'test');
    await kb.notifyCheckpointAborted(p.checkpointId);
    await coord.shutdown('finish');
  });

  it('claim-mode restore at the same range continues the chain; no-claim makes the next checkpoint full', async () => {
    const coord = coordinator(5);
    await coord.restore();
    const kb = await create();
    const model = new Map<string, string>();
    writeRound(kb, model, 1);
    const { handle } = await checkpoint(coord, kb);
    const pointer = coord.latestCompleted()?.pointer as string;
    await kb.close();
    const old = new Set(handle.sharedFiles.map((f) => f.handle.path));

    const claimed = await restoreFrom(pointer, 'claim');
    expect(await readAll(claimed)).toEqual(model);
    const next = await checkpoint(coord, claimed);
    expect(next.handle.backendId).toBe(handle.backendId);
    expect(next.handle.sharedFiles.filter((f) => old.has(f.handle.path)).length).toBe(old.size);
    await claimed.close();

    const unclaimed = await restoreFrom(pointer, 'no-claim');
    const after = await checkpoint(coord, unclaimed);
    expect(after.handle.sharedFiles.some((f) => old.has(f.handle.path))).toBe(false);
    await coord.shutdown('finish');
  });

  it('a crash between the uploads and _metadata leaves no completed checkpoint; the next start removes its files', async () => {
    const coord = coordinator(3);
    await coord.restore();
    const kb = await create();
    const model = new Map<string, string>();
    writeRound(kb, model, 1);
    await checkpoint(coord, kb);
    writeRound(kb, model, 2);
    // Checkpoint 2: every file uploaded, but the job dies before the acknowledgement/_metadata.
    const p = coord.triggerCheckpoint();
    const handle = await (await kb.snapshot(p.checkpointId, { type: 'checkpoint', streams: p.streamsFor(OP, 0) })).done;
    expect(handle).not.toBeNull();
    const orphans = referencedFiles(handle).map((f) => resolveHandlePath(p.pointer, f.path));
    const listed = await storage.listJobFiles(JOB);
    expect(orphans.filter((o) => listed.includes(o)).length).toBeGreaterThan(0);
    await kb.close();

    // The crashed instance never released its lease: start-up cleanup spares young files unless told they are not (minAgeMs 0).
    const restarted = coordinator(3, { minAgeMs: 0 });
    await restarted.restore();
    expect(restarted.completedCheckpoints().map((c) => c.checkpointId)).toEqual([1]);
    const after = (await storage.listJobFiles(JOB)).sort();
    expect(after).toEqual(await expectedJobFiles(restarted));
    const shared = orphans.filter((o) => o.includes('/shared/'));
    for (const o of shared) if (!(await expectedJobFiles(restarted)).includes(o)) expect(after).not.toContain(o);
    await restarted.shutdown('finish');
  });
});

describe('leveldb working directory and restore failures', () => {
  it('a locked working directory gives LOCKED naming the directory, and the first backend keeps working', async () => {
    const dir = join(root, 'pinned');
    const pinned = leveldb({ instanceDir: () => dir, memtableBytes: 64 * 1024 } satisfies LevelDbOptions);
    const a = await create(undefined, pinned);
    a.setCurrentKey('x');
    a.getState(vd).update('kept');
    await expect(create(undefined, pinned)).rejects.toMatchObject({
      code: 'LOCKED',
      message: expect.stringContaining(dir),
    });
    expect(a.getState(vd).value()).toBe('kept');
  });

  it('a missing shared file, a crc mismatch and a corrupt database each fail with a typed error naming the file, leaving nothing open', async () => {
    const coord = coordinator(3);
    await coord.restore();
    const kb = await create();
    for (let round = 1; round <= 3; round++) writeRound(kb, new Map(), round);
    // Force table files into existence (under load LevelDB may not have flushed one yet): write the
    // buffer to LevelDB, then a manual compaction, which first writes the memtable to a table file.
    const ldb = kb as LevelDbKeyedStateBackend<string>;
    await ldb.flush();
    await ldb.db.compactRange(Buffer.from([0]), Buffer.from([0xff, 0xff, 0xff]));
    const { handle: taken } = await checkpoint(coord, kb);
    expect(taken.sharedFiles.length).toBeGreaterThan(0);
    const pointer = coord.latestCompleted()?.pointer as string;
    const { metadata, files } = await storage.resolve(pointer);
    const handle = metadata.operators[0].subtasks[0].keyed[0] as unknown as LevelDbIncrementalHandle;
    const table = handle.sharedFiles[0];
    const tableName = resolveHandlePath(pointer, table.handle.path);
    const original = await storage.store.get(tableName);

    // crc mismatch: same size, one byte flipped
    const flipped = Buffer.from(original);
    flipped[10] ^= 0xff;
    await storage.store.put(tableName, flipped);
    const dir1 = join(root, 'r1');
    await expect(
      create(
        { handles: [handle as unknown as KeyedStateHandle], files },
        leveldb({ instanceDir: () => dir1, memtableBytes: 64 * 1024 }),
      ),
    ).rejects.toMatchObject({
      code: 'CHECKSUM_MISMATCH',
      message: expect.stringContaining(table.localName),
    });

    // missing shared file
    await storage.store.delete([tableName]);
    await expect(
      create(
        { handles: [handle as unknown as KeyedStateHandle], files },
        leveldb({ instanceDir: () => dir1, memtableBytes: 64 * 1024 }),
      ),
    ).rejects.toMatchObject({
      code: 'NOT_FOUND',
      message: expect.stringContaining(table.localName),
    });
    await storage.store.put(tableName, original);

    // corrupt database: the files arrive intact but the MANIFEST on disk is damaged
    const { writeFile } = await import('node:fs/promises');
    const corrupting = {
      ...files,
      read: files.read.bind(files),
      readRange: files.readRange.bind(files),
      describe: files.describe.bind(files),
      async download(f: Parameters<typeof files.download>[0], localPath: string): Promise<void> {
        await files.download(f, localPath);
        if (localPath.includes('MANIFEST')) await writeFile(localPath, Buffer.alloc(200, 7));
      },
    };
    const dir2 = join(root, 'r2');
    await expect(
      create(
        { handles: [handle as unknown as KeyedStateHandle], files: corrupting },
        leveldb({ instanceDir: () => dir2, memtableBytes: 64 * 1024 }),
      ),
    ).rejects.toMatchObject({
      code: 'CORRUPT',
      message: expect.stringContaining(dir2),
    });
    // Nothing half-open: the directory is gone and can be used again.
    const again = await create(
      { handles: [handle as unknown as KeyedStateHandle], files },
      leveldb({ instanceDir: () => dir2, memtableBytes: 64 * 1024 }),
    );
    expect((await readAll(again)).size).toBeGreaterThan(0);
    await coord.shutdown('finish');
  });
});
