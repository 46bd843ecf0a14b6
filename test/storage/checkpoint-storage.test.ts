import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { FileStreamHandle } from '../../src/backend/handles.js';
import {
  BlobCheckpointStorage,
  localCheckpointStorage,
  memoryCheckpointStorage,
} from '../../src/checkpoint/checkpoint-storage.js';
import { readStreamHandle } from '../../src/checkpoint/streams.js';
import { isStreamStateError } from '../../src/errors.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';
import { sampleMetadata } from './sample-metadata.js';

const JOB = 'job-abcdef123';

async function writeCheckpoint(
  storage: BlobCheckpointStorage,
  id: number,
  payload: Buffer,
  opts: { complete?: boolean; timestamp?: number } = {},
) {
  const streams = storage.checkpointStreams(JOB, id);
  const ex = streams.createOutputStream('exclusive');
  await ex.write(payload);
  const exHandle = (await ex.closeAndGetHandle())!;
  const sh = streams.createOutputStream('shared');
  await sh.write(payload);
  const shHandle = (await sh.closeAndGetHandle()) as FileStreamHandle;
  const pointer = storage.checkpointPointer(JOB, id);
  const metadata = sampleMetadata({
    checkpointId: id,
    timestamp: opts.timestamp ?? 1000 + id,
    properties: { ex: JSON.stringify(exHandle), sh: JSON.stringify(shHandle) },
  });
  if (opts.complete !== false) await storage.writeMetadata(pointer, metadata);
  return { pointer, exHandle, shHandle, metadata };
}

describe('BlobCheckpointStorage (local)', () => {
  let dir: string;
  let storage: BlobCheckpointStorage;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ss-cps-'));
    storage = localCheckpointStorage(join(dir, 'checkpoints'), { inlineThreshold: 16 });
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('lays out chk-<n>, shared/ and _metadata; resolve reads files back', async () => {
    const payload = Buffer.from('x'.repeat(100));
    const { pointer, exHandle, shHandle } = await writeCheckpoint(storage, 3, payload);
    expect(pointer).toBe(`${JOB}/chk-3`);
    expect(shHandle.path.startsWith('../shared/')).toBe(true);
    const files = await storage.listJobFiles(JOB);
    expect(files).toContain(`${JOB}/chk-3/_metadata`);
    expect(files.filter((f) => f.startsWith(`${JOB}/shared/`))).toHaveLength(1);
    const resolved = await storage.resolve(pointer);
    expect(resolved.pointer).toBe(pointer);
    expect(resolved.metadata.checkpointId).toBe(3);
    expect((await readStreamHandle(exHandle, resolved.files)).toString()).toBe(payload.toString());
    expect((await resolved.files.read(shHandle)).toString()).toBe(payload.toString());
  });

  it('resolve accepts the dir, <dir>/_metadata, trailing slashes and absolute paths under the location', async () => {
    const { pointer } = await writeCheckpoint(storage, 1, Buffer.from('abc'));
    for (const p of [
      pointer,
      `${pointer}/`,
      `${pointer}/_metadata`,
      `${storage.location}/${pointer}`,
      `${storage.location}/${pointer}/_metadata`,
      `file://${storage.location}/${pointer}`,
    ]) {
      expect((await storage.resolve(p)).pointer).toBe(pointer);
    }
  });

  it('resolve errors: NOT_FOUND, METADATA_MISSING, outside the storage, garbage _metadata', async () => {
    await expect(storage.resolve(`${JOB}/chk-99`)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await writeCheckpoint(storage, 2, Buffer.from('y'.repeat(100)), { complete: false });
    const err = await storage.resolve(`${JOB}/chk-2`).catch((e: unknown) => e);
    expect(isStreamStateError(err, 'METADATA_MISSING')).toBe(true);
    expect((err as Error).message).toMatch(/never completed.*streamstate list/);
    await expect(storage.resolve('/somewhere/else/chk-1')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(storage.resolve('s3://bucket/chk-1')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(storage.resolve(`${JOB}/../../etc`)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await storage.store.put('junk/_metadata', Buffer.from('PK\x03\x04 this is a zip'));
    await expect(storage.resolve('junk')).rejects.toMatchObject({ code: 'BAD_MAGIC' });
  });

  it('writeMetadata refuses to overwrite a completed checkpoint', async () => {
    const { pointer, metadata } = await writeCheckpoint(storage, 4, Buffer.from('z'));
    await expect(storage.writeMetadata(pointer, { ...metadata, timestamp: 1 })).rejects.toMatchObject({
      code: 'ALREADY_EXISTS',
    });
    expect((await storage.resolve(pointer)).metadata.timestamp).toBe(metadata.timestamp);
  });

  it('lists only completed checkpoints, oldest first, with size and timestamp; crash leftovers are not complete', async () => {
    await writeCheckpoint(storage, 10, Buffer.from('a'.repeat(100)), { timestamp: 5000 });
    await writeCheckpoint(storage, 2, Buffer.from('b'.repeat(100)), { timestamp: 4000 });
    await writeCheckpoint(storage, 11, Buffer.from('c'.repeat(100)), { complete: false });
    // a crash during the atomic write leaves a temp file but no _metadata
    const chk12 = join(storage.location, JOB, 'chk-12');
    await mkdir(chk12, { recursive: true });
    await writeFile(join(chk12, '._metadata.tmp-abcdef'), 'partial');
    // a damaged _metadata is not a completed checkpoint either
    await storage.store.put(`${JOB}/chk-13/_metadata`, Buffer.from('SSMD\x00\x01'));
    await storage.store.put(`${JOB}/chk-x/_metadata`, Buffer.from('not a checkpoint dir name'));
    const list = await storage.listCompletedCheckpoints(JOB);
    expect(list.map((c) => c.checkpointId)).toEqual([2, 10]);
    expect(list[0].timestamp).toBe(4000);
    expect(list[1].pointer).toBe(`${JOB}/chk-10`);
    const files = await storage.store.list(`${JOB}/chk-10/`);
    expect(list[1].size).toBe(files.reduce((n, f) => n + f.size, 0));
    expect(await storage.listCompletedCheckpoints('other-job')).toEqual([]);
  });

  it('discardCheckpointDirectory removes the chk dir (and _metadata) but leaves shared files', async () => {
    await writeCheckpoint(storage, 5, Buffer.from('q'.repeat(100)));
    await storage.discardCheckpointDirectory(JOB, 5);
    const left = await storage.listJobFiles(JOB);
    expect(left.some((f) => f.includes('chk-5'))).toBe(false);
    expect(left.filter((f) => f.startsWith(`${JOB}/shared/`))).toHaveLength(1);
    await expect(storage.resolve(`${JOB}/chk-5`)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await storage.discardCheckpointDirectory(JOB, 5); // idempotent
  });

  it('discard deletes _metadata before anything else (a half-deleted checkpoint is never complete)', async () => {
    await writeCheckpoint(storage, 8, Buffer.from('r'.repeat(100)));
    const calls: string[][] = [];
    const realDelete = storage.store.delete.bind(storage.store);
    storage.store.delete = async (names) => {
      calls.push([...names]);
      return realDelete(names);
    };
    await storage.discardCheckpointDirectory(JOB, 8);
    expect(calls[0]).toEqual([`${JOB}/chk-8/_metadata`]);
    expect(calls.flat().length).toBeGreaterThan(1);
  });

  it('deleteFiles resolves handle paths against the pointer', async () => {
    const { pointer, shHandle } = await writeCheckpoint(storage, 6, Buffer.from('w'.repeat(100)));
    await storage.deleteFiles(pointer, [shHandle]);
    expect((await storage.listJobFiles(JOB)).some((f) => f.startsWith(`${JOB}/shared/`))).toBe(false);
    await expect(storage.deleteFiles(pointer, [{ ...shHandle, path: '../../../../x' }])).rejects.toMatchObject({
      code: 'CORRUPT',
    });
  });

  it('savepoints are self-contained and relocatable: move the directory and resolve it there', async () => {
    const { pointer, streams } = storage.createSavepointLocation(JOB, 'savepoints');
    expect(pointer).toMatch(/^savepoints\/savepoint-job-ab-[0-9a-f]{12}$/);
    const s = streams.createOutputStream('shared');
    await s.write(Buffer.from('savepoint state '.repeat(10)));
    const h = (await s.closeAndGetHandle()) as FileStreamHandle;
    expect(h.path).not.toContain('/');
    await storage.writeMetadata(
      pointer,
      sampleMetadata({ kind: 'savepoint', format: 'canonical', properties: { h: JSON.stringify(h) } }),
    );
    const moved = join(dir, 'moved');
    await cp(join(storage.location, pointer), join(moved, 'my-savepoint'), { recursive: true });
    const elsewhere = localCheckpointStorage(moved);
    const resolved = await elsewhere.resolve(join(moved, 'my-savepoint'));
    expect(resolved.metadata.kind).toBe('savepoint');
    expect((await resolved.files.read(h)).toString()).toBe('savepoint state '.repeat(10));
  });

  it('rejects bad job ids and checkpoint ids', () => {
    expect(() => storage.checkpointPointer('a/b', 1)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => storage.checkpointPointer('..', 1)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => storage.checkpointPointer(JOB, -1)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    expect(() => localCheckpointStorage(dir, { inlineThreshold: -1 })).toThrow(
      expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
    );
  });
});

describe('memoryCheckpointStorage', () => {
  it('each call without a name gets a fresh store; a name reuses the process-wide one', async () => {
    const a = memoryCheckpointStorage();
    const b = memoryCheckpointStorage();
    expect(a.location).not.toBe(b.location);
    const named = memoryCheckpointStorage({ name: 'cps-test-restore' });
    try {
      const { pointer } = await writeCheckpoint(named, 1, Buffer.from('m'.repeat(50)));
      const again = memoryCheckpointStorage({ name: 'cps-test-restore' });
      expect((await again.resolve(pointer)).metadata.checkpointId).toBe(1);
      expect((await again.resolve(`memory://cps-test-restore/${pointer}`)).pointer).toBe(pointer);
      await expect(again.resolve(`memory://other/${pointer}`)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    } finally {
      (named.store as MemoryBlobStore).destroy();
      (a.store as MemoryBlobStore).destroy();
      (b.store as MemoryBlobStore).destroy();
    }
  });

  it('maxSnapshotBytes limits each state file (SNAPSHOT_TOO_LARGE), default 5 MiB', async () => {
    const small = memoryCheckpointStorage({ maxSnapshotBytes: 1024, inlineThreshold: 0 });
    const s = small.checkpointStreams('j', 1).createOutputStream('exclusive');
    const err = await (async () => {
      await s.write(Buffer.alloc(2000));
      await s.closeAndGetHandle();
    })().catch((e: unknown) => e);
    expect(isStreamStateError(err, 'SNAPSHOT_TOO_LARGE')).toBe(true);
    expect((memoryCheckpointStorage().store as MemoryBlobStore).maxObjectBytes).toBe(5 * 1024 * 1024);
    expect(memoryCheckpointStorage().inlineThreshold).toBe(20 * 1024);
  });
});
