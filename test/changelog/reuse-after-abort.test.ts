import { afterEach, describe, expect, it } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import { referencedFiles, type KeyedStateHandle } from '../../src/backend/handles.js';
import { changelog, type ChangelogStateBackend } from '../../src/changelog/index.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import type { PendingCheckpoint } from '../../src/checkpoint/coordinator.js';
import { keyGroupForKey } from '../../src/keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';
import { MAX_P, MiniJob, OPERATOR } from './job.js';

/**
 * Regression (docs/PROOF.md, crash suite item 2): a segment or materialization uploaded for
 * checkpoint N was handed to later checkpoints before N was confirmed. When N was aborted the
 * coordinator deleted its files, and a later checkpoint completed referencing a missing file. The
 * backend here learns of the abort late or never (as with a subsumed checkpoint): it must stay
 * correct without that notification.
 *
 * The job has two subtasks and all state lives in subtask 0: an abort deletes only files of
 * acknowledged subtasks, so subtask 0 acknowledges the doomed checkpoint and subtask 1 never does.
 */
const counter = valueState<number>('count', { serializer: int32Serializer });

let n = 0;
const jobId = () => `job-reuse-${process.pid}-${++n}`;

interface Fixture {
  readonly id: string;
  readonly storage: BlobCheckpointStorage;
  readonly backend: ChangelogStateBackend;
  readonly job: MiniJob;
  /** Keys owned by subtask 0. */
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

/** By default no preemptive uploads: every segment is uploaded by a checkpoint. */
async function setup(
  materializationIntervalMs: number,
  preemptivePersistBytes = Number.MAX_SAFE_INTEGER,
): Promise<Fixture> {
  const storage = new BlobCheckpointStorage(new MemoryBlobStore({ maxObjectBytes: 64 * 1024 * 1024 }), {
    inlineThreshold: 0,
  });
  const backend = changelog({ backend: memory(), storage, materializationIntervalMs, preemptivePersistBytes });
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

function bump(f: Fixture, keys: readonly string[]): void {
  const b = f.job.backends[0];
  for (const key of keys) {
    b.setCurrentKey(key);
    const v = (b.getState(counter).value() ?? 0) + 1;
    b.getState(counter).update(v);
    f.expected.set(key, v);
  }
}

/** Triggers a checkpoint and runs subtask 0's snapshot to its handle (not acknowledged). */
async function trigger(f: Fixture): Promise<{ pending: PendingCheckpoint; handle: KeyedStateHandle | null }> {
  const pending = f.job.coordinator.triggerCheckpoint();
  pending.completion.catch(() => undefined);
  const task = await f.job.backends[0].snapshot(pending.checkpointId, pending.snapshotOptions(OPERATOR, 0));
  return { pending, handle: await task.done };
}

async function ack0(f: Fixture, c: { pending: PendingCheckpoint; handle: KeyedStateHandle | null }): Promise<void> {
  expect(
    (await f.job.coordinator.acknowledge(c.pending.checkpointId, OPERATOR, 0, { keyed: [c.handle], operator: [] }))
      .status,
  ).toBe('waiting');
}

/** Subtask 1 snapshots and acknowledges: the checkpoint completes; subtasks are told. */
async function complete(f: Fixture, c: { pending: PendingCheckpoint; handle: KeyedStateHandle | null }): Promise<void> {
  const id = c.pending.checkpointId;
  const task = await f.job.backends[1].snapshot(id, c.pending.snapshotOptions(OPERATOR, 1));
  const result = await f.job.coordinator.acknowledge(id, OPERATOR, 1, { keyed: [await task.done], operator: [] });
  expect(result.status === 'completed' && result.checkpoint.checkpointId).toBe(id);
  for (const b of f.job.backends) await b.notifyCheckpointComplete(id);
}

const baseName = (path: string): string => path.slice(path.lastIndexOf('/') + 1);
const filesOf = (h: KeyedStateHandle | null): string[] => referencedFiles(h).map((file) => baseName(file.path));

async function stored(f: Fixture): Promise<Set<string>> {
  return new Set((await f.storage.listJobFiles(f.id)).map(baseName));
}

/** The files the aborted checkpoint had alone are gone (else the test proves nothing), and `later` references none of them. */
async function expectDeletedAndAvoided(
  f: Fixture,
  aborted: KeyedStateHandle | null,
  kept: readonly (KeyedStateHandle | null)[],
  later: KeyedStateHandle | null,
): Promise<void> {
  const keptFiles = new Set(kept.flatMap(filesOf));
  const onlyAborted = filesOf(aborted).filter((file) => !keptFiles.has(file));
  expect(onlyAborted.length).toBeGreaterThan(0);
  const now = await stored(f);
  for (const file of onlyAborted) expect(now.has(file), `${file} of the aborted checkpoint`).toBe(false);
  for (const file of filesOf(later)) expect(now.has(file), `${file} referenced by the later checkpoint`).toBe(true);
}

async function expectRestores(f: Fixture): Promise<void> {
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
  expect(got).toEqual(f.expected);
}

describe('changelog: uploads of an aborted checkpoint are never reused', () => {
  it('a checkpoint aborted after its segment upload (backend never told): the next one re-uploads, completes and restores', async () => {
    const f = await setup(Number.POSITIVE_INFINITY);
    bump(f, f.keys);
    const first = await trigger(f);
    await ack0(f, first);
    await complete(f, first); // 1: confirmed

    bump(f, f.keys.slice(0, 10));
    const doomed = await trigger(f); // 2: uploads a segment of the new records
    await ack0(f, doomed);
    await f.job.coordinator.abort(doomed.pending.checkpointId, 'test: aborted after the upload'); // deletes that segment

    bump(f, f.keys.slice(10, 20));
    const later = await trigger(f); // 3: must not reference 2's segment
    await ack0(f, later);
    await complete(f, later);
    await expectDeletedAndAvoided(f, doomed.handle, [first.handle], later.handle);
    await expectRestores(f);
  });

  it('a later checkpoint snapshotted before the abort (the notification comes too late) references its own copy', async () => {
    const f = await setup(Number.POSITIVE_INFINITY);
    bump(f, f.keys);
    const first = await trigger(f);
    await ack0(f, first);
    await complete(f, first);

    bump(f, f.keys.slice(0, 10));
    const doomed = await trigger(f); // 2
    bump(f, f.keys.slice(5, 15));
    const later = await trigger(f); // 3, snapshotted while 2 is pending
    await ack0(f, doomed);
    await f.job.coordinator.abort(doomed.pending.checkpointId, 'test: aborted while 3 was in flight'); // 3 not acknowledged yet
    await ack0(f, later);
    await complete(f, later);
    await f.job.backends[0].notifyCheckpointAborted(doomed.pending.checkpointId); // late: no harm either
    await expectDeletedAndAvoided(f, doomed.handle, [first.handle], later.handle);

    // And the chain goes on: the next checkpoint shares 3's confirmed copies.
    bump(f, f.keys.slice(20, 25));
    const next = await trigger(f);
    await ack0(f, next);
    await complete(f, next);
    const laterFiles = new Set(filesOf(later.handle));
    expect(filesOf(next.handle).filter((file) => laterFiles.has(file)).length).toBeGreaterThan(0);
    await expectRestores(f);
  });

  it('a materialization written by an aborted checkpoint is not referenced again (backend never told); a new one is taken', async () => {
    const f = await setup(Number.POSITIVE_INFINITY);
    const b0 = f.job.backends[0] as unknown as {
      requestMaterialization(): void;
      awaitMaterialization(): Promise<void>;
      materializationId: number;
    };
    bump(f, f.keys);
    const first = await trigger(f);
    await ack0(f, first);
    await complete(f, first);

    bump(f, f.keys.slice(0, 10));
    b0.requestMaterialization();
    const doomed = await trigger(f); // 2 materializes and references its materialization
    const materialization = (doomed.handle as unknown as { materializationId: number }).materializationId;
    expect(materialization).toBe(doomed.pending.checkpointId);
    await ack0(f, doomed);
    await f.job.coordinator.abort(doomed.pending.checkpointId, 'test: aborted after writing the materialization');

    bump(f, f.keys.slice(20, 30));
    const later = await trigger(f); // 3: must not reference it (the coordinator no longer vouches for its files)
    expect((later.handle as unknown as { materializationId: number }).materializationId).not.toBe(materialization);
    await ack0(f, later);
    await complete(f, later);
    await expectDeletedAndAvoided(f, doomed.handle, [first.handle], later.handle);

    bump(f, f.keys.slice(0, 5));
    b0.requestMaterialization();
    const next = await trigger(f);
    await ack0(f, next);
    await complete(f, next);
    expect(b0.materializationId).toBe(next.pending.checkpointId);
    await expectRestores(f);
  });

  it('a preemptive upload is taken by one checkpoint only; when that one is aborted, the next re-uploads', async () => {
    const f = await setup(Number.POSITIVE_INFINITY, 200);
    bump(f, f.keys);
    const first = await trigger(f);
    await ack0(f, first);
    await complete(f, first);

    bump(f, f.keys); // past 200 bytes: uploaded in the background, referenced by no checkpoint yet
    const doomed = await trigger(f); // 2 takes the preemptive copies
    const later = await trigger(f); // 3 while 2 is pending: copies of its own
    const confirmed = new Set(filesOf(first.handle));
    const doomedOwn = new Set(filesOf(doomed.handle).filter((file) => !confirmed.has(file)));
    expect(doomedOwn.size).toBeGreaterThan(0);
    expect(filesOf(later.handle).filter((file) => doomedOwn.has(file))).toEqual([]);
    await ack0(f, doomed);
    await f.job.coordinator.abort(doomed.pending.checkpointId, 'test: aborted after taking the preemptive upload');
    await ack0(f, later);
    await complete(f, later);
    await expectDeletedAndAvoided(f, doomed.handle, [first.handle], later.handle);
    await expectRestores(f);
  });
});
