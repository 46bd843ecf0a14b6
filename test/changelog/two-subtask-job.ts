import { expect } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import { referencedFiles, type KeyedStateHandle } from '../../src/backend/handles.js';
import { changelog, type ChangelogOptions, type ChangelogStateBackend } from '../../src/changelog/index.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import type { PendingCheckpoint } from '../../src/checkpoint/coordinator.js';
import { keyGroupForKey } from '../../src/keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';
import { MAX_P, MiniJob, OPERATOR } from './job.js';

/**
 * A changelog(memory) job of two subtasks whose state all lives in subtask 0, for tests that decline
 * a checkpoint after subtask 0 acknowledged it: an abort deletes only files of acknowledged
 * subtasks, so subtask 0 acknowledges the doomed checkpoint and subtask 1 never does.
 */
export const counter = valueState<number>('count', { serializer: int32Serializer });

export interface Fixture {
  readonly id: string;
  readonly storage: BlobCheckpointStorage;
  readonly backend: ChangelogStateBackend;
  job: MiniJob;
  /** Keys owned by subtask 0. */
  readonly keys: readonly string[];
  readonly expected: Map<string, number>;
}

export type Triggered = { pending: PendingCheckpoint; handle: KeyedStateHandle | null };

const open = new Set<MiniJob>();
let n = 0;

/** Closes every job the fixtures started (afterEach). */
export async function closeJobs(): Promise<void> {
  for (const job of open) await job.close().catch(() => undefined);
  open.clear();
}

export async function setup(name: string, options: Omit<ChangelogOptions, 'backend' | 'storage'>): Promise<Fixture> {
  const storage = new BlobCheckpointStorage(new MemoryBlobStore({ maxObjectBytes: 64 * 1024 * 1024 }), {
    inlineThreshold: 0,
  });
  const backend = changelog({ backend: memory(), storage, ...options });
  const id = `job-${name}-${process.pid}-${++n}`;
  const job = await MiniJob.start({ jobId: id, backend, storage, parallelism: 2, numRetained: 2 });
  open.add(job);
  const keys: string[] = [];
  for (let i = 0; keys.length < 30; i++) {
    if (job.backends[0].keyGroupRange.contains(keyGroupForKey(`key-${i}`, stringSerializer, MAX_P)))
      keys.push(`key-${i}`);
  }
  return { id, storage, backend, job, keys, expected: new Map() };
}

/** Adds one to each key's counter in subtask 0 (all keys by default), and to the expected counts. */
export function bump(f: Fixture, keys: readonly string[] = f.keys): void {
  const b = f.job.backends[0];
  for (const key of keys) {
    b.setCurrentKey(key);
    const v = (b.getState(counter).value() ?? 0) + 1;
    b.getState(counter).update(v);
    f.expected.set(key, v);
  }
}

/** Triggers a checkpoint and runs subtask 0's snapshot to its handle (not acknowledged). */
export async function trigger(f: Fixture): Promise<Triggered> {
  const pending = f.job.coordinator.triggerCheckpoint();
  pending.completion.catch(() => undefined);
  const task = await f.job.backends[0].snapshot(pending.checkpointId, pending.snapshotOptions(OPERATOR, 0));
  return { pending, handle: await task.done };
}

export async function ack0(f: Fixture, c: Triggered): Promise<void> {
  const result = await f.job.coordinator.acknowledge(c.pending.checkpointId, OPERATOR, 0, {
    keyed: [c.handle],
    operator: [],
  });
  expect(result.status).toBe('waiting');
}

/** Subtask 1 snapshots and acknowledges: the checkpoint completes; subtasks are told. */
export async function complete(f: Fixture, c: Triggered): Promise<void> {
  const id = c.pending.checkpointId;
  const task = await f.job.backends[1].snapshot(id, c.pending.snapshotOptions(OPERATOR, 1));
  const result = await f.job.coordinator.acknowledge(id, OPERATOR, 1, { keyed: [await task.done], operator: [] });
  expect(result.status === 'completed' && result.checkpoint.checkpointId).toBe(id);
  for (const b of f.job.backends) await b.notifyCheckpointComplete(id);
}

const baseName = (path: string): string => path.slice(path.lastIndexOf('/') + 1);
export const filesOf = (h: KeyedStateHandle | null): string[] => referencedFiles(h).map((file) => baseName(file.path));

export async function stored(f: Fixture): Promise<Set<string>> {
  return new Set((await f.storage.listJobFiles(f.id)).map(baseName));
}

/** The files the aborted checkpoint had alone are gone (else the test proves nothing), and `later` references none of them. */
export async function expectDeletedAndAvoided(
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

/**
 * Ends the job (with `crash`, its backends go away without closing the coordinator, as in a crash),
 * restores the latest completed checkpoint at parallelism 1 and expects these counts (default: f.expected).
 */
export async function expectRestores(
  f: Fixture,
  expected: ReadonlyMap<string, number> = f.expected,
  crash = false,
): Promise<void> {
  if (crash) for (const b of f.job.backends) await b.close();
  else await f.job.close();
  open.delete(f.job);
  const restored = await MiniJob.start({ jobId: f.id, backend: f.backend, storage: f.storage, parallelism: 1 });
  open.add(restored);
  f.job = restored;
  const b = restored.backends[0];
  const got = new Map<string, number>();
  for (const key of f.keys) {
    b.setCurrentKey(key);
    const v = b.getState(counter).value();
    if (v !== null) got.set(key, v);
  }
  expect(got).toEqual(expected);
}
