import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import type { KeyedStateBackend, StateBackend } from '../../src/backend/contract.js';
import { changelog } from '../../src/changelog/backend.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator } from '../../src/checkpoint/coordinator.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { listState, reducingState, valueState } from '../../src/state/descriptors.js';
import { cli, errorLine, tempDir } from './support.js';

/**
 * Offline replay of changelog records the CLI has no user code for: TTL states keep their logged
 * write times, and a namespace merge of reducing state (which needs the job's function) is a typed
 * error instead of a wrong result.
 */

let root: string;
let cleanup: () => Promise<void>;
const MAX_P = 8;
const T0 = 1_700_000_000_000;

const ttlValue = valueState<number>('ttl-count', { serializer: int32Serializer, ttl: { ttlMs: 60_000 } });
const sum = reducingState<number>('sum', (a, b) => a + b, { serializer: int32Serializer });
const events = listState<string>('events', { serializer: stringSerializer });

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-cli-clr-'));
  await mkdir(join(root, 'out'));
});
afterAll(async () => cleanup());

/** One subtask at parallelism 1 under a changelog backend that never materializes: every change is in the log. */
async function checkpointOf(
  jobId: string,
  fill: (k: KeyedStateBackend<string>) => void,
  clock: () => number,
): Promise<string> {
  const backend = changelog({ backend: new HeapStateBackend({ name: 'memory' }), materializationIntervalMs: -1 });
  const storage = localCheckpointStorage(join(root, 'ck'), { inlineThreshold: 0 });
  const coordinator = new CheckpointCoordinator({
    jobId,
    storage,
    backendName: backend.name,
    operators: [{ operatorId: 'op', parallelism: 1, maxParallelism: MAX_P }],
  });
  await coordinator.restore();
  const keyed = await backend.createKeyedStateBackend({
    jobId,
    operatorId: 'op',
    subtaskIndex: 0,
    parallelism: 1,
    maxParallelism: MAX_P,
    keyGroupRange: keyGroupRangeForSubtask(MAX_P, 1, 0),
    keySerializer: stringSerializer,
    clock,
  });
  try {
    fill(keyed);
    const pending = coordinator.triggerCheckpoint();
    const task = await keyed.snapshot(pending.checkpointId, pending.snapshotOptions('op', 0));
    await coordinator.acknowledge(pending.checkpointId, 'op', 0, { keyed: [await task.done], operator: [] });
    return join(root, 'ck', (await pending.completion).pointer);
  } finally {
    await keyed.close();
    await coordinator.shutdown('finish');
  }
}

async function restoreInto(
  backend: StateBackend,
  dir: string,
  clock: () => number,
): Promise<KeyedStateBackend<string>> {
  const coordinator = new CheckpointCoordinator({
    jobId: 'reader',
    storage: localCheckpointStorage(join(dir, '..')),
    backendName: backend.name,
    operators: [{ operatorId: 'op', parallelism: 1, maxParallelism: MAX_P }],
  });
  const plan = await coordinator.restore(dir);
  await coordinator.shutdown('finish');
  return backend.createKeyedStateBackend({
    jobId: 'reader',
    operatorId: 'op',
    subtaskIndex: 0,
    parallelism: 1,
    maxParallelism: MAX_P,
    keyGroupRange: keyGroupRangeForSubtask(MAX_P, 1, 0),
    keySerializer: stringSerializer,
    clock,
    restore: plan!.subtask('op', 0).keyed!,
  });
}

describe('convert replays changelog records without user code', () => {
  it('TTL values keep their logged write times: alive before ttl, expired after, in the converted savepoint', async () => {
    let now = T0;
    const chk = await checkpointOf(
      'job-ttl',
      (k) => {
        const s = k.getState(ttlValue);
        k.setCurrentKey('early');
        s.update(1);
        now = T0 + 30_000;
        k.setCurrentKey('late');
        s.update(2);
      },
      () => now,
    );
    const dst = join(root, 'out', 'ttl');
    const r = await cli(['convert', chk, dst, '--to', 'memory']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // At T0 + 70 s the first write (T0) has expired, the second (T0 + 30 s) has not.
    let t = T0 + 70_000;
    const keyed = await restoreInto(new HeapStateBackend({ name: 'memory' }), dst, () => t);
    try {
      const s = keyed.getState(ttlValue);
      keyed.setCurrentKey('late');
      expect(s.value()).toBe(2);
      keyed.setCurrentKey('early');
      expect(s.value()).toBeNull();
      t = T0 + 100_000;
      keyed.setCurrentKey('late');
      expect(s.value()).toBeNull();
    } finally {
      await keyed.close();
    }
  });

  it('reducing sums and list appends replay; a namespace merge of reducing state is RESTORE_FAILED (exit 1), nothing written', async () => {
    const plain = await checkpointOf(
      'job-sum',
      (k) => {
        const s = k.getState(sum);
        const l = k.getState(events);
        k.setCurrentKey('a');
        s.add(3);
        s.add(4);
        l.add('x');
        l.addAll(['y', 'z']);
      },
      Date.now,
    );
    const ok = await cli(['dump', plain, '--operator', 'op']);
    expect(ok.code).toBe(0);
    const lines = ok.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { state: string; value: unknown });
    expect(lines.find((l) => l.state === 'sum')?.value).toBe(7);
    expect(lines.find((l) => l.state === 'events')?.value).toEqual(['x', 'y', 'z']);

    const merged = await checkpointOf(
      'job-merge',
      (k) => {
        const s = k.getState(sum);
        k.setCurrentKey('a');
        s.setCurrentNamespace('w1');
        s.add(1);
        s.setCurrentNamespace('w2');
        s.add(2);
        s.mergeNamespaces('w3', ['w1', 'w2']);
      },
      Date.now,
    );
    const dst = join(root, 'out', 'merged');
    const r = await cli(['convert', merged, dst, '--to', 'memory']);
    expect(r.code).toBe(1);
    expect(errorLine(r.stderr)).toContain('RESTORE_FAILED');
    expect(errorLine(r.stderr)).toContain('reduce function');
    expect((await readdir(join(root, 'out'))).filter((n) => n.includes('merged'))).toEqual([]);
  });
});
