import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { KeyedStateBackend, StateBackend } from '../../src/backend/contract.js';
import { CheckpointCoordinator, type PendingCheckpoint, type RestorePlan } from '../../src/checkpoint/coordinator.js';
import type { CompletedCheckpointInfo } from '../../src/checkpoint/metadata.js';
import type { SavepointLocationOptions } from '../../src/checkpoint/savepoint-location.js';
import type { RestoreMode } from '../../src/checkpoint/shared-registry.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import type { BlobStore } from '../../src/storage/blob-store.js';

/**
 * A one-operator job driven the way a runtime drives it (coordinator + real keyed backends):
 * restore, write keyed state, checkpoint or savepoint every subtask, acknowledge, notify.
 */
export const OP = 'counter';
const MAX_P = 128;
const value = valueState<string>('v', { serializer: stringSerializer });

export interface JobSpec {
  readonly jobId: string;
  readonly storage: CheckpointStorage;
  readonly backend: StateBackend;
  readonly parallelism: number;
  readonly restoreFrom?: string;
  readonly restoreMode?: RestoreMode;
  readonly numRetained?: number;
  readonly savepoints?: SavepointLocationOptions;
  readonly onCancel?: 'retain' | 'delete';
}

export interface TestJob {
  readonly coordinator: CheckpointCoordinator;
  readonly plan: RestorePlan | null;
  readonly subtasks: KeyedStateBackend<string>[];
  /** Failures of best-effort deletions, including refused deletions of files the job does not own. */
  readonly cleanupErrors: unknown[];
  close(how?: 'finish' | 'cancel'): Promise<void>;
}

export async function startJob(spec: JobSpec): Promise<TestJob> {
  const cleanupErrors: unknown[] = [];
  const coordinator = new CheckpointCoordinator({
    jobId: spec.jobId,
    storage: spec.storage,
    backendName: spec.backend.name,
    operators: [{ operatorId: OP, parallelism: spec.parallelism, maxParallelism: MAX_P }],
    numRetained: spec.numRetained ?? 1,
    ...(spec.restoreMode ? { restoreMode: spec.restoreMode } : {}),
    ...(spec.savepoints ? { savepoints: spec.savepoints } : {}),
    ...(spec.onCancel ? { onCancel: spec.onCancel } : {}),
    onCleanupError: (err) => cleanupErrors.push(err),
  });
  let plan: RestorePlan | null;
  try {
    plan = await coordinator.restore(spec.restoreFrom);
  } catch (err) {
    await coordinator.shutdown('cancel');
    throw err;
  }
  const subtasks: KeyedStateBackend<string>[] = [];
  for (let i = 0; i < spec.parallelism; i++) {
    subtasks.push(
      await spec.backend.createKeyedStateBackend<string>({
        jobId: spec.jobId,
        operatorId: OP,
        subtaskIndex: i,
        parallelism: spec.parallelism,
        maxParallelism: MAX_P,
        keyGroupRange: keyGroupRangeForSubtask(MAX_P, spec.parallelism, i),
        keySerializer: stringSerializer,
        ...(plan ? { restore: plan.subtask(OP, i).keyed } : {}),
      }),
    );
  }
  return {
    coordinator,
    plan,
    subtasks,
    cleanupErrors,
    async close(how = 'finish') {
      await coordinator.shutdown(how);
      await Promise.allSettled(subtasks.map((s) => s.close()));
    },
  };
}

function owner(job: TestJob, key: string): KeyedStateBackend<string> {
  for (const s of job.subtasks) {
    try {
      s.setCurrentKey(key);
      return s;
    } catch {
      // another subtask's key group
    }
  }
  throw new Error(`no subtask owns ${key}`);
}

/** Keys 0..keys-1 get `<key>@<version>` (a long value, so snapshots are files, not inline). */
export function fill(job: TestJob, keys: number, version: number): void {
  for (let k = 0; k < keys; k++) owner(job, `key-${k}`).getState(value).update(`key-${k}@${version}`.padEnd(200, '.'));
}

/** The values of keys 0..keys-1 (null where a key has none). */
export function readAll(job: TestJob, keys: number): (string | null)[] {
  const out: (string | null)[] = [];
  for (let k = 0; k < keys; k++) out.push(owner(job, `key-${k}`).getState(value).value()?.replace(/\.+$/, '') ?? null);
  return out;
}

/** Snapshots every subtask for `pending` (with its options, as they are) and acknowledges. */
export async function snapshotAndAcknowledge(job: TestJob, pending: PendingCheckpoint) {
  let last = null;
  for (let i = 0; i < job.subtasks.length; i++) {
    const task = await job.subtasks[i].snapshot(pending.checkpointId, pending.snapshotOptions(OP, i));
    last = await job.coordinator.acknowledge(pending.checkpointId, OP, i, { keyed: [await task.done], operator: [] });
  }
  return last;
}

/** A checkpoint of every subtask; on completion the backends are notified. */
export async function checkpoint(job: TestJob): Promise<CompletedCheckpointInfo> {
  const pending = job.coordinator.triggerCheckpoint();
  const result = await snapshotAndAcknowledge(job, pending);
  if (result?.status !== 'completed')
    throw new Error(`checkpoint ${pending.checkpointId} did not complete: ${JSON.stringify(result)}`);
  await Promise.all(job.subtasks.map((s) => s.notifyCheckpointComplete(pending.checkpointId)));
  return result.checkpoint;
}

/** Every file under a local directory: relative path -> sha256 of its content. */
export async function localTree(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string): Promise<void> => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else
        out.set(
          relative(dir, p),
          createHash('sha256')
            .update(await readFile(p))
            .digest('hex'),
        );
    }
  };
  await walk(dir);
  return new Map([...out].sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** Every object under `prefix` in a store: name -> sha256 of its content. */
export async function storeTree(store: BlobStore, prefix: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const b of await store.list(prefix))
    out.set(
      b.name,
      createHash('sha256')
        .update(await store.get(b.name))
        .digest('hex'),
    );
  return out;
}
