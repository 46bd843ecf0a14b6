import { describe, expect, it } from 'vitest';
import { leveldb } from '../../backends/leveldb/index.js';
import { memory } from '../../backends/memory/index.js';
import type { KeyedStateBackend, RestoreSource } from '../../src/backend/contract.js';
import { referencedFiles, type KeyedStateHandle } from '../../src/backend/handles.js';
import { changelog, isChangelogHandle, type ChangelogStateHandle } from '../../src/changelog/index.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { aggregatingState, listState, mapState, reducingState, valueState } from '../../src/state/descriptors.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';
import { collect } from '../support/backend-harness.js';
import { MAX_P, MiniJob } from './job.js';

const vd = valueState<string>('v', { serializer: stringSerializer });
const ld = listState<number>('l', { serializer: int32Serializer });
const md = mapState<string, number>('m', { keySerializer: stringSerializer, valueSerializer: int32Serializer });
const rd = reducingState<number>('r', (a, b) => a + b, { serializer: int32Serializer });
const ad = aggregatingState<number, { n: number }, number>('a', {
  createAccumulator: () => ({ n: 0 }),
  add: (v, acc) => ({ n: acc.n + v }),
  getResult: (acc) => acc.n,
  merge: (x, y) => ({ n: x.n + y.n }),
});

function newStorage(): BlobCheckpointStorage {
  return new BlobCheckpointStorage(new MemoryBlobStore({ maxObjectBytes: 64 * 1024 * 1024 }), { inlineThreshold: 0 });
}

let jobCounter = 0;
const jobId = () => `job-cl-${process.pid}-${++jobCounter}`;

/** Writes every kind of state for keys k0..k(n-1). */
function writeAll(b: KeyedStateBackend<string>, n: number, round: number): void {
  const timers = b.getTimerQueue('t');
  for (let i = 0; i < n; i++) {
    const key = `k${i}`;
    b.setCurrentKey(key);
    b.getState(vd).update(`v${i}-${round}`);
    b.getState(ld).add(i + round);
    b.getState(md).put(`m${round}`, i);
    b.getState(rd).add(i);
    b.getState(ad).add(1);
    timers.add({ timestamp: 1000 * round + i, key, namespace: '' });
  }
}

async function readAll(b: KeyedStateBackend<string>, n: number): Promise<unknown[]> {
  const out: unknown[] = [];
  for (let i = 0; i < n; i++) {
    b.setCurrentKey(`k${i}`);
    const entries = (await collect(b.getState(md).entries())).sort((x, y) => String(x[0]).localeCompare(String(y[0])));
    out.push([
      b.getState(vd).value(),
      b.getState(ld).get()?.slice() ?? null,
      entries,
      b.getState(rd).get(),
      b.getState(ad).get(),
    ]);
  }
  const timers = [...b.getTimerQueue('t')].map((t) => `${t.timestamp}:${t.key}`).sort();
  out.push(timers);
  return out;
}

describe('changelog checkpoints', () => {
  it('a checkpoint persists only the new tail of the log and reuses the materialization', async () => {
    const storage = newStorage();
    const backend = changelog({ backend: memory(), storage, materializationIntervalMs: Number.POSITIVE_INFINITY });
    const job = await MiniJob.start({ jobId: jobId(), backend, storage, parallelism: 1 });
    const [b] = job.backends;
    writeAll(b, 500, 1);
    (b as unknown as { requestMaterialization(): void }).requestMaterialization();
    const first = (await job.checkpoint()).handles[0] as unknown as ChangelogStateHandle;
    expect(first.type).toBe('changelog');
    // The checkpoint that materializes references its own materialization (and no log).
    expect(first.materialized.length).toBe(1);
    expect(first.logs).toEqual([]);
    b.setCurrentKey('k1');
    b.getState(vd).update('changed');
    const second = (await job.checkpoint()).handles[0] as unknown as ChangelogStateHandle;
    expect(second.materializationId).toBeGreaterThan(0);
    expect(second.materialized.length).toBe(1);
    // Only the one change (+ its metadata record) is in the log after the materialization.
    expect(second.logs.length).toBe(1);
    expect(second.logs[0].toSeq - second.logs[0].fromSeq + 1).toBe(2);
    const matBytes = referencedFiles(second.materialized).reduce((s, f) => s + f.size, 0);
    const logBytes = referencedFiles(second.logs).reduce((s, f) => s + f.size, 0);
    expect(logBytes).toBeLessThan(matBytes / 50);
    // Nothing changed: the next checkpoint is the same state, no new materialization.
    const third = (await job.checkpoint()).handles[0] as unknown as ChangelogStateHandle;
    expect(third.materializationId).toBe(second.materializationId);
    await job.close();

    const restored = await MiniJob.start({
      jobId: jobId(),
      backend,
      storage,
      parallelism: 1,
      pointer: job.coordinator.latestCompleted()!.pointer,
    });
    const r = restored.backends[0];
    r.setCurrentKey('k1');
    expect(r.getState(vd).value()).toBe('changed');
    r.setCurrentKey('k2');
    expect(r.getState(vd).value()).toBe('v2-1');
    await restored.close();
  });

  it('restores exactly, with and without materialization, and after rescaling 2 → 3 → 1', async () => {
    for (const interval of [0, Number.POSITIVE_INFINITY]) {
      const storage = newStorage();
      const backend = changelog({
        backend: memory(),
        storage,
        materializationIntervalMs: interval,
        preemptivePersistBytes: 2048,
      });
      const id = jobId();
      const job = await MiniJob.start({ jobId: id, backend, storage, parallelism: 2 });
      const n = 200;
      const owner = (k: string) => job.backends.find((b) => b.keyGroupRange.contains(keyGroupOf(k)))!;
      for (let round = 1; round <= 3; round++) {
        for (let i = 0; i < n; i++) {
          const b = owner(`k${i}`);
          writeOne(b, i, round);
        }
        await job.checkpoint();
        for (const b of job.backends)
          await (b as unknown as { awaitMaterialization(): Promise<void> }).awaitMaterialization();
      }
      const expected = await readFrom(job.backends, n);
      await job.close();
      const three = await MiniJob.start({ jobId: id, backend, storage, parallelism: 3 });
      expect(await readFrom(three.backends, n)).toEqual(expected);
      await three.checkpoint();
      await three.close();
      const one = await MiniJob.start({ jobId: id, backend, storage, parallelism: 1 });
      expect(await readFrom(one.backends, n)).toEqual(expected);
      await one.close();
    }
  });

  it('restored state that is never registered survives materializations and restores', async () => {
    const storage = newStorage();
    const backend = changelog({ backend: memory(), storage, materializationIntervalMs: 0 });
    const id = jobId();
    const job = await MiniJob.start({ jobId: id, backend, storage, parallelism: 1 });
    writeAll(job.backends[0], 20, 1);
    await job.checkpoint();
    await job.close();
    const expected = await (async () => {
      const j = await MiniJob.start({ jobId: id, backend, storage, parallelism: 1 });
      const r = await readAll(j.backends[0], 20);
      await j.close();
      return r;
    })();
    // A job that only touches another state, through several materializations.
    const other = valueState<number>('other', { serializer: int32Serializer });
    let j = await MiniJob.start({ jobId: id, backend, storage, parallelism: 1 });
    for (let round = 0; round < 3; round++) {
      const b = j.backends[0];
      expect(b.stateNames().sort()).toEqual(
        ['a', 'l', 'm', 'other', 'r', 'v'].filter((s) => round > 0 || s !== 'other'),
      );
      b.setCurrentKey('k0');
      b.getState(other).update(round);
      await j.checkpoint();
      await (b as unknown as { awaitMaterialization(): Promise<void> }).awaitMaterialization();
      b.setCurrentKey('k1');
      b.getState(other).update(round + 10);
      await j.checkpoint();
      await j.close();
      j = await MiniJob.start({ jobId: id, backend, storage, parallelism: 1 });
    }
    expect(await readAll(j.backends[0], 20)).toEqual(expected);
    await j.close();
  });
});

describe.each([
  ['memory', () => memory(), 'key-groups'],
  ['leveldb', () => leveldb(), 'leveldb-incremental'],
] as const)('changelog on and off across a restore (%s)', (_name, plainBackend, nativeHandleType) => {
  it('a changelog checkpoint restores into a plain backend, which then takes plain checkpoints', async () => {
    const storage = newStorage();
    const id = jobId();
    const cl = changelog({ backend: plainBackend(), storage, materializationIntervalMs: Number.POSITIVE_INFINITY });
    const job = await MiniJob.start({ jobId: id, backend: cl, storage, parallelism: 2 });
    for (const b of job.backends) writeAll(b, 0, 1);
    const n = 100;
    for (let i = 0; i < n; i++)
      writeOne(job.backends.find((b) => b.keyGroupRange.contains(keyGroupOf(`k${i}`)))!, i, 1);
    // The first checkpoint materializes, the second adds a log to it.
    for (const b of job.backends) (b as unknown as { requestMaterialization(): void }).requestMaterialization();
    await job.checkpoint();
    for (let i = 0; i < n; i += 3)
      writeOne(job.backends.find((b) => b.keyGroupRange.contains(keyGroupOf(`k${i}`)))!, i, 2);
    const { handles } = await job.checkpoint();
    expect(
      handles.every((h) => h !== null && isChangelogHandle(h) && h.materialized.length === 1 && h.logs.length === 1),
    ).toBe(true);
    const expected = await readFrom(job.backends, n);
    await job.close();

    const plain = plainBackend(); // plain backends accept changelog handles themselves (changelog off)
    const off = await MiniJob.start({ jobId: id, backend: plain, storage, parallelism: 1 });
    expect(await readFrom(off.backends, n)).toEqual(expected);
    const after = await off.checkpoint();
    expect(after.handles[0]?.type).toBe(nativeHandleType);
    await off.close();
    const again = await MiniJob.start({ jobId: id, backend: plainBackend(), storage, parallelism: 1 });
    expect(await readFrom(again.backends, n)).toEqual(expected);
    await again.close();
  });

  it('a plain checkpoint restores into a changelog backend, whose first checkpoint is self-contained', async () => {
    const storage = newStorage();
    const id = jobId();
    const job = await MiniJob.start({ jobId: id, backend: plainBackend(), storage, parallelism: 1 });
    const n = 50;
    for (let i = 0; i < n; i++) writeOne(job.backends[0], i, 1);
    await job.checkpoint();
    const expected = await readFrom(job.backends, n);
    await job.close();

    const cl = changelog({ backend: plainBackend(), storage });
    const on = await MiniJob.start({ jobId: id, backend: cl, storage, parallelism: 1 });
    expect(await readFrom(on.backends, n)).toEqual(expected);
    writeOne(on.backends[0], 0, 9);
    const expected2 = await readFrom(on.backends, n);
    const { handles } = await on.checkpoint();
    const h = handles[0] as unknown as ChangelogStateHandle;
    expect(h.type).toBe('changelog');
    // Everything it references is in shared/ (the plain checkpoint's chk dir is gone after subsumption).
    expect(referencedFiles(h).every((f) => f.path.startsWith('../shared/'))).toBe(true);
    await on.checkpoint();
    await on.close();
    const back = await MiniJob.start({ jobId: id, backend: cl, storage, parallelism: 1 });
    expect(await readFrom(back.backends, n)).toEqual(expected2);
    await back.close();
  });
});

describe('changelog TTL replay', () => {
  it('replays write times and refresh-on-read exactly', async () => {
    let now = 1000;
    const clock = () => now;
    const storage = newStorage();
    const cl = changelog({ backend: memory(), storage, materializationIntervalMs: Number.POSITIVE_INFINITY });
    const ttlWrite = valueState<string>('w', { serializer: stringSerializer, ttl: { ttlMs: 100 } });
    const ttlRead = valueState<string>('rr', {
      serializer: stringSerializer,
      ttl: { ttlMs: 100, update: 'onReadAndWrite' },
    });
    const params = (restore?: RestoreSource<KeyedStateHandle>) => ({
      jobId: 'ttl-job',
      operatorId: 'op',
      subtaskIndex: 0,
      parallelism: 1,
      maxParallelism: MAX_P,
      keyGroupRange: { start: 0, end: MAX_P - 1 } as never,
      keySerializer: stringSerializer,
      clock,
      ...(restore ? { restore } : {}),
    });
    const { KeyGroupRange } = await import('../../src/keygroups/key-groups.js');
    const p0 = { ...params(), keyGroupRange: new KeyGroupRange(0, MAX_P - 1) };
    const b = await cl.createKeyedStateBackend(p0);
    b.setCurrentKey('x');
    b.getState(ttlWrite).update('a');
    b.getState(ttlRead).update('b');
    now = 1080;
    expect(b.getState(ttlRead).value()).toBe('b'); // refreshed to 1080
    const streams = storage.checkpointStreams('ttl-job', 1);
    const task = await b.snapshot(1, { type: 'checkpoint', streams });
    const handle = await task.done;
    await storage.writeMetadata(storage.checkpointPointer('ttl-job', 1), {
      checkpointId: 1,
      jobId: 'ttl-job',
      kind: 'checkpoint',
      format: 'native',
      backend: cl.name,
      timestamp: 0,
      operators: [
        {
          operatorId: 'op',
          parallelism: 1,
          maxParallelism: MAX_P,
          subtasks: [{ subtaskIndex: 0, keyed: handle ? [handle] : [], operator: [] }],
        },
      ],
    });
    await b.close();
    const resolved = await storage.resolve(storage.checkpointPointer('ttl-job', 1));
    now = 1150;
    const r = await cl.createKeyedStateBackend({
      ...p0,
      restore: { handles: handle ? [handle] : [], files: resolved.files, mode: 'claim', checkpointId: 1 },
    });
    r.setCurrentKey('x');
    expect(r.getState(ttlWrite).value()).toBeNull(); // written at 1000, expired at 1100
    expect(r.getState(ttlRead).value()).toBe('b'); // read at 1080, alive until 1180
    now = 1300;
    expect(r.getState(ttlRead).value()).toBeNull();
    await r.close();
  });
});

// ------------------------------------------------------------------ helpers

import { keyGroupForKey } from '../../src/keygroups/key-groups.js';

function keyGroupOf(key: string): number {
  return keyGroupForKey(key, stringSerializer, MAX_P);
}

function writeOne(b: KeyedStateBackend<string>, i: number, round: number): void {
  const key = `k${i}`;
  b.setCurrentKey(key);
  b.getState(vd).update(`v${i}-${round}`);
  b.getState(ld).add(i * 10 + round);
  b.getState(md).put(`m${round % 2}`, i + round);
  if (round % 3 === 0) b.getState(md).remove('m0');
  b.getState(rd).add(round);
  b.getState(ad).add(i);
  const timers = b.getTimerQueue('t');
  timers.add({ timestamp: 1000 * round + i, key, namespace: '' });
  if (round > 1) timers.remove({ timestamp: 1000 * (round - 1) + i, key, namespace: '' });
}

async function readFrom(backends: readonly KeyedStateBackend<string>[], n: number): Promise<unknown[]> {
  const out: unknown[] = [];
  for (let i = 0; i < n; i++) {
    const key = `k${i}`;
    const b = backends.find((x) => x.keyGroupRange.contains(keyGroupOf(key)))!;
    b.setCurrentKey(key);
    const entries = (await collect(b.getState(md).entries())).sort((x, y) => String(x[0]).localeCompare(String(y[0])));
    out.push([
      key,
      b.getState(vd).value(),
      b.getState(ld).get()?.slice() ?? null,
      entries,
      b.getState(rd).get(),
      b.getState(ad).get(),
    ]);
  }
  const timers = backends.flatMap((b) => [...b.getTimerQueue('t')].map((t) => `${t.timestamp}:${t.key}`)).sort();
  out.push(timers);
  return out;
}
