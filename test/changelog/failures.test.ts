import { posix } from 'node:path';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import type { KeyedStateBackend } from '../../src/backend/contract.js';
import { referencedFiles, type FileStreamHandle, type KeyedStateHandle } from '../../src/backend/handles.js';
import { changelog, type ChangelogStateHandle } from '../../src/changelog/index.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import { FormatError, isStreamStateError, StorageError } from '../../src/errors.js';
import { keyGroupForKey, KeyGroupRange } from '../../src/keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { listState, valueState } from '../../src/state/descriptors.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';
import { crashingStorage, MAX_P, MiniJob, OPERATOR } from './job.js';

const vd = valueState<string>('v', { serializer: stringSerializer });
const ld = listState<number>('l', { serializer: int32Serializer });

let n = 0;
const jobId = () => `job-clf-${process.pid}-${++n}`;

/** A deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function ownerOf(backends: readonly KeyedStateBackend<string>[], key: string): KeyedStateBackend<string> {
  const kg = keyGroupForKey(key, stringSerializer, MAX_P);
  return backends.find((b) => b.keyGroupRange.contains(kg))!;
}

function randomWrites(backends: readonly KeyedStateBackend<string>[], next: () => number, count: number): void {
  for (let i = 0; i < count; i++) {
    const key = `k${Math.floor(next() * 60)}`;
    const b = ownerOf(backends, key);
    b.setCurrentKey(key);
    const r = next();
    if (r < 0.4) b.getState(vd).update(`v${Math.floor(next() * 1e6)}`);
    else if (r < 0.5) b.getState(vd).clear();
    else if (r < 0.9) b.getState(ld).add(Math.floor(next() * 1000));
    else b.getState(ld).clear();
  }
}

async function contents(backends: readonly KeyedStateBackend<string>[]): Promise<unknown[]> {
  const out: unknown[] = [];
  for (let i = 0; i < 60; i++) {
    const key = `k${i}`;
    const b = ownerOf(backends, key);
    b.setCurrentKey(key);
    out.push([key, b.getState(vd).value(), b.getState(ld).get()?.slice() ?? null]); // copies: stored arrays are live
  }
  return out;
}

async function checkpointOrCrash(job: MiniJob): Promise<boolean> {
  // Like MiniJob.checkpoint, but a failure is a crash: no abort, no cleanup.
  const pending = job.coordinator.triggerCheckpoint();
  pending.completion.catch(() => undefined);
  try {
    const tasks = [];
    for (const [i, b] of job.backends.entries()) {
      const t = await b.snapshot(pending.checkpointId, pending.snapshotOptions(OPERATOR, i));
      t.done.catch(() => undefined);
      tasks.push(t);
    }
    let done = false;
    for (const [i, t] of tasks.entries()) {
      const h = await t.done;
      done =
        (await job.coordinator.acknowledge(pending.checkpointId, OPERATOR, i, { keyed: [h], operator: [] })).status ===
          'completed' || done;
    }
    if (!done) return false;
    for (const b of job.backends) await b.notifyCheckpointComplete(pending.checkpointId);
    return true;
  } catch {
    return false;
  }
}

describe('changelog crash recovery', () => {
  it('a crash at a random write (segment, materialization or _metadata) restores exactly the last completed checkpoint', async () => {
    for (let seed = 1; seed <= 16; seed++) {
      const next = rng(seed);
      const { store, storage } = crashingStorage(0);
      const backend = changelog({
        backend: memory(),
        storage,
        materializationIntervalMs: seed % 2 === 0 ? 0 : 30 * 1000,
        preemptivePersistBytes: 600,
      });
      const id = jobId();
      let job = await MiniJob.start({ jobId: id, backend, storage, parallelism: 2 });
      let expected = await contents(job.backends);
      const crashRound = 1 + Math.floor(next() * 5);
      let crashed = false;
      for (let round = 0; round < 6 && !crashed; round++) {
        if (round === crashRound) store.failAfter = store.writes + Math.floor(next() * 12);
        try {
          randomWrites(job.backends, next, 40);
        } catch {
          crashed = true;
          break;
        }
        if (await checkpointOrCrash(job)) expected = await contents(job.backends);
        else crashed = true;
        if (seed % 2 === 0)
          for (const b of job.backends)
            await (b as unknown as { awaitMaterialization(): Promise<void> }).awaitMaterialization();
      }
      // Restart: the storage works again; the job restores its latest completed checkpoint.
      store.failAfter = Number.POSITIVE_INFINITY;
      job = await MiniJob.start({ jobId: id, backend, storage, parallelism: 2 });
      expect(await contents(job.backends), `seed ${seed}`).toEqual(expected);
      // And it keeps working.
      randomWrites(job.backends, next, 30);
      expect(await checkpointOrCrash(job)).toBe(true);
      const after = await contents(job.backends);
      await job.close();
      const again = await MiniJob.start({ jobId: id, backend, storage, parallelism: 1 });
      expect(await contents(again.backends), `seed ${seed} after restart`).toEqual(after);
      await again.close();
    }
  });
});

describe('changelog truncation', () => {
  it('after a newer materialization is checkpointed and older checkpoints are subsumed, only referenced files remain', async () => {
    const storage = new BlobCheckpointStorage(new MemoryBlobStore({ maxObjectBytes: 64 * 1024 * 1024 }), {
      inlineThreshold: 0,
    });
    const backend = changelog({
      backend: memory(),
      storage,
      materializationIntervalMs: 0,
      preemptivePersistBytes: 1024,
    });
    const id = jobId();
    const job = await MiniJob.start({ jobId: id, backend, storage, parallelism: 2, numRetained: 1 });
    const next = rng(7);
    const seen = new Set<string>();
    for (let round = 0; round < 5; round++) {
      randomWrites(job.backends, next, 80);
      await job.checkpoint();
      for (const f of await storage.listJobFiles(id)) seen.add(f);
      for (const b of job.backends)
        await (b as unknown as { awaitMaterialization(): Promise<void> }).awaitMaterialization();
    }
    // Nothing changes now: the next checkpoint builds on the last materialization alone.
    const { info, handles } = await job.checkpoint();
    for (const h of handles) {
      const c = h as unknown as ChangelogStateHandle;
      expect(c.materialized.length).toBe(1);
      expect(c.logs).toEqual([]);
    }
    const referenced = new Set(referencedFiles(handles).map((f) => posix.normalize(posix.join(info.pointer, f.path))));
    const files = (await storage.listJobFiles(id)).filter((f) => !f.endsWith('/_metadata'));
    expect(new Set(files)).toEqual(referenced);
    // Files of earlier materializations and segments existed and are gone.
    expect([...seen].filter((f) => f.includes('/shared/') && !referenced.has(f)).length).toBeGreaterThan(5);
    await job.close();
    const restored = await MiniJob.start({ jobId: id, backend, storage, parallelism: 2 });
    await restored.close();
  });
});

// ------------------------------------------------------------------ bad input

interface Fixture {
  storage: CheckpointStorage;
  store: MemoryBlobStore;
  handle: ChangelogStateHandle;
  pointer: string;
  restoreWith(h: ChangelogStateHandle): Promise<unknown>;
}

async function fixture(): Promise<Fixture> {
  const store = new MemoryBlobStore({ maxObjectBytes: 64 * 1024 * 1024 });
  const storage = new BlobCheckpointStorage(store, { inlineThreshold: 0 });
  const backend = changelog({ backend: memory(), storage, preemptivePersistBytes: 300 });
  const id = jobId();
  const job = await MiniJob.start({ jobId: id, backend, storage, parallelism: 1 });
  randomWrites(job.backends, rng(3), 200);
  const { info, handles } = await job.checkpoint();
  await job.close();
  const handle = handles[0] as unknown as ChangelogStateHandle;
  const files = (await storage.resolve(info.pointer)).files;
  return {
    storage,
    store,
    handle,
    pointer: info.pointer,
    restoreWith: (h) =>
      backend.createKeyedStateBackend({
        jobId: id,
        operatorId: OPERATOR,
        subtaskIndex: 0,
        parallelism: 1,
        maxParallelism: MAX_P,
        keyGroupRange: new KeyGroupRange(0, MAX_P - 1),
        keySerializer: stringSerializer,
        restore: { handles: [h as unknown as KeyedStateHandle], files, mode: 'claim', checkpointId: info.checkpointId },
      }),
  };
}

function segments(h: ChangelogStateHandle) {
  return h.logs[0].segments;
}

function withSegments(
  h: ChangelogStateHandle,
  segs: ChangelogStateHandle['logs'][number]['segments'],
): ChangelogStateHandle {
  return { ...h, logs: [{ ...h.logs[0], segments: segs }] };
}

async function expectFormatError(p: Promise<unknown>, code: string, mentions: string): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FormatError);
  expect(isStreamStateError(err, code as never), String(err)).toBe(true);
  expect(String((err as Error).message)).toContain(mentions);
}

describe('changelog bad input', () => {
  it('the fixture has several file segments and restores fine', async () => {
    const f = await fixture();
    expect(segments(f.handle).length).toBeGreaterThan(3);
    expect(segments(f.handle).every((s) => s.file.type === 'file')).toBe(true);
    const b = (await f.restoreWith(f.handle)) as KeyedStateBackend<string>;
    await b.close();
  });

  it('a missing segment file is NOT_FOUND naming the file', async () => {
    const f = await fixture();
    const seg = segments(f.handle)[1].file as FileStreamHandle;
    await f.store.delete([posix.normalize(posix.join(f.pointer, seg.path))]);
    // NOT_FOUND is a StorageError (docs/ERRORS.md).
    const err = await f.restoreWith(f.handle).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(StorageError);
    expect(isStreamStateError(err, 'NOT_FOUND'), String(err)).toBe(true);
    expect(String((err as Error).message)).toContain(seg.path.replace('../', ''));
  });

  it('a corrupt segment is CHECKSUM_MISMATCH naming the file (storage crc and the segment crc)', async () => {
    const f = await fixture();
    const seg = segments(f.handle)[2].file as FileStreamHandle;
    const name = posix.normalize(posix.join(f.pointer, seg.path));
    const bytes = Buffer.from(await f.store.get(name));
    bytes[bytes.length - 20] ^= 0xff;
    await f.store.put(name, bytes);
    await expectFormatError(f.restoreWith(f.handle), 'CHECKSUM_MISMATCH', seg.path.replace('../', ''));
    // With the handle "fixed" to the new bytes, the segment's own crc still catches it.
    const patched = segments(f.handle).map((s, i) => (i === 2 ? { ...s, file: { ...seg, crc32: crc32(bytes) } } : s));
    await expectFormatError(
      f.restoreWith(withSegments(f.handle, patched)),
      'CHECKSUM_MISMATCH',
      seg.path.replace('../', ''),
    );
  });

  it('a segment of another job or backend is refused', async () => {
    const f = await fixture();
    const other = await fixture(); // another job, same sequence numbers
    const foreign = segments(other.handle)[0];
    const bytes = await other.store.get(
      posix.normalize(posix.join(other.pointer, (foreign.file as FileStreamHandle).path)),
    );
    const target = segments(f.handle)[0].file as FileStreamHandle;
    await f.store.put(posix.normalize(posix.join(f.pointer, target.path)), bytes);
    const patched = segments(f.handle).map((s, i) =>
      i === 0 ? { ...s, file: { ...target, size: bytes.length, crc32: crc32(bytes) } } : s,
    );
    await expectFormatError(f.restoreWith(withSegments(f.handle, patched)), 'CORRUPT', 'belongs to');
  });

  it('out-of-order and missing segments in the handle are refused before anything is replayed', async () => {
    const f = await fixture();
    const segs = segments(f.handle);
    await expectFormatError(
      f.restoreWith(withSegments(f.handle, [segs[1], segs[0], ...segs.slice(2)])),
      'CORRUPT',
      'out of order',
    );
    await expectFormatError(f.restoreWith(withSegments(f.handle, [segs[0], ...segs.slice(2)])), 'CORRUPT', 'missing');
    await expectFormatError(f.restoreWith(withSegments(f.handle, segs.slice(0, -1))), 'CORRUPT', 'missing');
    // A segment file swapped for another segment of the same log (sequence mismatch inside the file).
    const swapped = segs.map((s, i) => (i === 0 ? { ...s, file: segs[1].file } : s));
    await expectFormatError(f.restoreWith(withSegments(f.handle, swapped)), 'CORRUPT', 'expects');
  });
});
