import { createHash } from 'node:crypto';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isIncrementalHandle, LevelDbKeyedStateBackend } from '../../backends/leveldb/index.js';
import type { KeyedStateHandle } from '../../src/backend/handles.js';
import { localCheckpointStorage, type BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { BlobStateFileReader, resolveHandlePath } from '../../src/checkpoint/streams.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import { LocalBlobStore } from '../../src/storage/local-blob-store.js';
import { params } from '../heap/support.js';

/**
 * On local checkpoint storage a LevelDB checkpoint's table files are hard links of the working
 * directory's (LocalBlobStore.putFile with `immutable`): the checkpoint must stay complete when
 * LevelDB compacts those tables away and when the working directory is deleted altogether.
 */

const vd = valueState<string>('v', { serializer: stringSerializer });
let root: string;
let storage: BlobCheckpointStorage;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'streamstate-leveldb-linked-'));
  storage = localCheckpointStorage(join(root, 'checkpoints'), { inlineThreshold: 0 });
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

function expectedValue(key: string, round: number): string {
  return [0, 1, 2].map((n) => createHash('sha256').update(`${round}-${key}-${n}`).digest('hex')).join('');
}

async function open(
  workingDir: string,
  restore?: { handles: KeyedStateHandle[]; id: number },
): Promise<LevelDbKeyedStateBackend<string>> {
  const files = restore
    ? new BlobStateFileReader(storage.store, storage.checkpointPointer('job', restore.id))
    : undefined;
  return LevelDbKeyedStateBackend.create(
    params<string>(restore && files ? { restore: { handles: restore.handles, files, checkpointId: restore.id } } : {}),
    // Small memtable and buffer: the data spreads over many table files.
    { workingDir, writeBufferBytes: 256 * 1024, memtableBytes: 64 * 1024 },
  );
}

function writeAll(kb: LevelDbKeyedStateBackend<string>, round: number, keys: number): void {
  const v = kb.getState(vd);
  for (let i = 0; i < keys; i++) {
    kb.setCurrentKey(`k${i}`);
    v.update(expectedValue(`k${i}`, round));
  }
}

describe('leveldb checkpoints on local storage: linked table files', () => {
  it('are hard links at upload, and restore after LevelDB compacted its copies away and the working directory is gone', async () => {
    const keys = 3000;
    const work = join(root, 'work');
    const kb = await open(work);
    writeAll(kb, 1, keys);
    const streams = storage.checkpointStreams('job', 1);
    const handle = await (await kb.snapshot(1, { type: 'checkpoint', streams })).done;
    if (handle === null || !isIncrementalHandle(handle)) throw new Error('expected an incremental handle');
    expect(handle.sharedFiles.length).toBeGreaterThan(1);
    const pointer = storage.checkpointPointer('job', 1);
    const store = storage.store as LocalBlobStore;
    const stored = handle.sharedFiles.map((f) => store.pathOf(resolveHandlePath(pointer, f.handle.path)));
    // Linked, not copied: the working directory's table file is the same inode (at least 2 links).
    for (const p of stored) expect((await stat(p)).nlink).toBeGreaterThanOrEqual(2);

    // Rewrite everything and compact: LevelDB deletes the tables the checkpoint linked.
    writeAll(kb, 2, keys);
    await kb.flush();
    await kb.db.compactRange(Buffer.alloc(0), Buffer.alloc(64, 0xff), { keyEncoding: 'buffer' });
    const stillShared = await Promise.all(stored.map(async (p) => (await stat(p)).nlink));
    expect(stillShared.some((n) => n === 1)).toBe(true);
    await kb.close();
    await rm(work, { recursive: true, force: true });

    const restored = await open(join(root, 'work2'), { handles: [handle], id: 1 });
    try {
      const v = restored.getState(vd);
      for (let i = 0; i < keys; i++) {
        restored.setCurrentKey(`k${i}`);
        expect(v.value()).toBe(expectedValue(`k${i}`, 1));
      }
    } finally {
      await restored.close();
    }
  });
});
