import { afterEach, describe, expect, it } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import { referencedFiles, type KeyedStateHandle } from '../../src/backend/handles.js';
import { changelog, type ChangelogKeyedStateBackend, type ChangelogStateBackend } from '../../src/changelog/index.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import type { PendingCheckpoint } from '../../src/checkpoint/coordinator.js';
import { keyGroupForKey } from '../../src/keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';
import { MAX_P, MiniJob, OPERATOR } from './job.js';

/**
 * Past maxLogMemoryBytes (0 here) the log drops the bytes of chunks a preemptive upload holds, so
 * a long materialization no longer piles up GBs of log in memory. The upload (the chunk's spare)
 * is then all the log has of those records: when the checkpoint that took it is declined (the
 * coordinator deletes it), the next checkpoint must materialize afresh, never reference the
 * deleted file, and restore everything; a crash in between restores the last completed checkpoint.
 *
 * The job has two subtasks and all state lives in subtask 0: an abort deletes only files of
 * acknowledged subtasks, so subtask 0 acknowledges the doomed checkpoint and subtask 1 never does.
 */
const counter = valueState<number>('count', { serializer: int32Serializer });

let n = 0;
const jobId = () => `job-log-memory-${process.pid}-${++n}`;

interface Fixture {
  readonly id: string;
  readonly storage: BlobCheckpointStorage;
  readonly backend: ChangelogStateBackend;
  readonly job: MiniJob;
  readonly keys: readonly string[];
  readonly expected: Map<string, number>;
}

const open: MiniJob[] = [];
afterEach(async () => {
  while (open.length > 0)
    await open
      .pop()!
      .close()
      .catch(() => undefined);
});

async function setup(): Promise<Fixture> {
  const storage = new BlobCheckpointStorage(new MemoryBlobStore({ maxObjectBytes: 64 * 1024 * 1024 }), {
    inlineThreshold: 0,
  });
  const backend = changelog({
    backend: memory(),
    storage,
    materializationIntervalMs: Number.POSITIVE_INFINITY,
    preemptivePersistBytes: 200,
    maxLogMemoryBytes: 0,
  });
  const id = jobId();
  const job = await MiniJob.start({ jobId: id, backend, storage, parallelism: 2, numRetained: 2 });
  open.push(job);
  const keys: string[] = [];
  for (let i = 0; keys.length < 30; i++) {
    if (job.backends[0].keyGroupRange.contains(keyGroupForKey(`key-${i}`, stringSerializer, MAX_P)))
      keys.push(`key-${i}`);
  }
  return { id, storage, backend, job, keys, expected: new Map() };
}

function bump(f: Fixture): void {
  const b = f.job.backends[0];
  for (const key of f.keys) {
    b.setCurrentKey(key);
    const v = (b.getState(counter).value() ?? 0) + 1;
    b.getState(counter).update(v);
    f.expected.set(key, v);
  }
}

type Triggered = { pending: PendingCheckpoint; handle: KeyedStateHandle | null };

/** Triggers a checkpoint and runs subtask 0's snapshot to its handle (not acknowledged). */
async function trigger(f: Fixture): Promise<Triggered> {
  const pending = f.job.coordinator.triggerCheckpoint();
  pending.completion.catch(() => undefined);
  const task = await f.job.backends[0].snapshot(pending.checkpointId, pending.snapshotOptions(OPERATOR, 0));
  return { pending, handle: await task.done };
}

async function ack0(f: Fixture, c: Triggered): Promise<void> {
  const result = await f.job.coordinator.acknowledge(c.pending.checkpointId, OPERATOR, 0, {
    keyed: [c.handle],
    operator: [],
  });
  expect(result.status).toBe('waiting');
}

/** Subtask 1 snapshots and acknowledges: the checkpoint completes; subtasks are told. */
async function complete(f: Fixture, c: Triggered): Promise<void> {
  const id = c.pending.checkpointId;
  const task = await f.job.backends[1].snapshot(id, c.pending.snapshotOptions(OPERATOR, 1));
  const result = await f.job.coordinator.acknowledge(id, OPERATOR, 1, { keyed: [await task.done], operator: [] });
  expect(result.status === 'completed' && result.checkpoint.checkpointId).toBe(id);
  for (const b of f.job.backends) await b.notifyCheckpointComplete(id);
}

const baseName = (path: string): string => path.slice(path.lastIndexOf('/') + 1);
const filesOf = (h: KeyedStateHandle | null): string[] => referencedFiles(h).map((file) => baseName(file.path));

/** The doomed checkpoint's own files are gone (else the test proves nothing); every file `later` references exists. */
async function expectDeletedAndAvoided(f: Fixture, doomed: Triggered, first: Triggered, later: Triggered) {
  const kept = new Set(filesOf(first.handle));
  const own = filesOf(doomed.handle).filter((file) => !kept.has(file));
  expect(own.length).toBeGreaterThan(0);
  const now = new Set((await f.storage.listJobFiles(f.id)).map(baseName));
  for (const file of own) expect(now.has(file), `${file} of the declined checkpoint`).toBe(false);
  for (const file of filesOf(later.handle)) expect(now.has(file), `${file} referenced later`).toBe(true);
}

async function expectRestores(f: Fixture, expected: ReadonlyMap<string, number>): Promise<void> {
  await f.job.close();
  open.splice(open.indexOf(f.job), 1);
  const restored = await MiniJob.start({ jobId: f.id, backend: f.backend, storage: f.storage, parallelism: 1 });
  open.push(restored);
  const b = restored.backends[0];
  const got = new Map<string, number>();
  for (const key of f.keys) {
    b.setCurrentKey(key);
    const v = b.getState(counter).value();
    if (v !== null) got.set(key, v);
  }
  expect(got).toEqual(expected);
}

/** A completed first checkpoint, then changes uploaded early whose bytes the log let go, taken by a checkpoint acknowledged by subtask 0. */
async function declineSetup(): Promise<{ f: Fixture; first: Triggered; doomed: Triggered }> {
  const f = await setup();
  bump(f);
  const first = await trigger(f);
  await ack0(f, first);
  await complete(f, first);
  bump(f); // past 200 bytes: uploaded in the background; past the memory bound: bytes dropped
  const doomed = await trigger(f);
  await ack0(f, doomed);
  return { f, first, doomed };
}

describe('changelog: log memory bounded by maxLogMemoryBytes', () => {
  it('a declined checkpoint took the only copy of the changes: the next one materializes, completes and restores everything', async () => {
    const { f, first, doomed } = await declineSetup();
    await f.job.coordinator.abort(doomed.pending.checkpointId, 'test: declined', 'DECLINED');
    for (const b of f.job.backends) await b.notifyCheckpointAborted(doomed.pending.checkpointId);
    bump(f);
    const later = await trigger(f);
    await ack0(f, later);
    await complete(f, later);
    // The changes' bytes were gone and their only copy deleted: the later checkpoint materialized.
    expect((f.job.backends[0] as ChangelogKeyedStateBackend<string>).materializationId).toBe(
      later.pending.checkpointId,
    );
    await expectDeletedAndAvoided(f, doomed, first, later);
    await expectRestores(f, f.expected);
  });

  it('the abort notice comes late (after a later checkpoint was snapshotted) or never: the later one still completes and restores', async () => {
    const { f, first, doomed } = await declineSetup();
    bump(f);
    const later = await trigger(f); // 3 while 2 is pending, backend not told of any abort
    await f.job.coordinator.abort(doomed.pending.checkpointId, 'test: declined while 3 was in flight', 'DECLINED');
    await ack0(f, later);
    await complete(f, later);
    for (const b of f.job.backends) await b.notifyCheckpointAborted(doomed.pending.checkpointId); // late
    await expectDeletedAndAvoided(f, doomed, first, later);
    bump(f);
    const last = await trigger(f);
    await ack0(f, last);
    await complete(f, last);
    await expectRestores(f, f.expected);
  });

  it('a crash after the checkpoint took the spare (neither completed nor aborted) restores the last completed checkpoint', async () => {
    const f = await setup();
    bump(f);
    const first = await trigger(f);
    await ack0(f, first);
    await complete(f, first);
    const atFirst = new Map(f.expected);
    bump(f);
    const doomed = await trigger(f);
    await ack0(f, doomed);
    // The crash: the backends and the coordinator go away without a notice or an abort.
    for (const b of f.job.backends) await b.close();
    open.splice(open.indexOf(f.job), 1);
    const restored = await MiniJob.start({ jobId: f.id, backend: f.backend, storage: f.storage, parallelism: 1 });
    open.push(restored);
    const b = restored.backends[0];
    const got = new Map<string, number>();
    for (const key of f.keys) {
      b.setCurrentKey(key);
      const v = b.getState(counter).value();
      if (v !== null) got.set(key, v);
    }
    expect(got).toEqual(atFirst);
  });
});
