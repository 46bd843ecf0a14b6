import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import {
  CheckpointCoordinator,
  KeyGroupRange,
  float64Serializer,
  listState,
  stringSerializer,
  valueState,
} from '../../src/index.js';

/**
 * The README's "Checkpoints, restore and rescaling" snippet works as written: the region between
 * the README markers below is the snippet itself (checked against README.md, import line aside),
 * run after the "Using the state API" snippet (with a temporary directory for ./checkpoints).
 */
const dirs: string[] = [];
afterEach(async () => {
  while (dirs.length > 0) await rm(dirs.pop()!, { recursive: true, force: true });
});

it('the README checkpoint snippet completes a checkpoint that restores', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'streamstate-readme-'));
  dirs.push(dir);
  // "Using the state API", as in the README but in a temporary directory.
  const backend = filesystem({ checkpointDir: dir });
  const keyed = await backend.createKeyedStateBackend({
    jobId: 'job-1',
    operatorId: 'counter',
    subtaskIndex: 0,
    parallelism: 1,
    maxParallelism: 128,
    keyGroupRange: new KeyGroupRange(0, 127),
    keySerializer: stringSerializer,
  });
  const count = keyed.getState(valueState<number>('count', { serializer: float64Serializer, defaultValue: 0 }));
  const seen = keyed.getState(listState<string>('seen'));
  keyed.setCurrentKey('user-42');
  count.update((count.value() ?? 0) + 1);
  seen.add('page-7');

  // README:begin
  // The job's stateful operators as they run: `keyed` above is subtask 0 of parallelism 1 (key groups 0-127).
  const coordinator = new CheckpointCoordinator({
    jobId: 'job-1',
    storage: backend.checkpointStorage!,
    backendName: backend.name,
    numRetained: 3,
    operators: [{ operatorId: 'counter', parallelism: 1, maxParallelism: 128 }],
  });
  const plan = await coordinator.restore(); // first, before creating backends; null on a fresh start
  // subtask i of parallelism p: createKeyedStateBackend({ ..., subtaskIndex: i, parallelism: p,
  //   keyGroupRange: keyGroupRangeForSubtask(128, p, i), restore: plan?.subtask('counter', i).keyed })

  const pending = coordinator.triggerCheckpoint();
  const task = await keyed.snapshot(pending.checkpointId, pending.snapshotOptions('counter', 0));
  // processing may continue here; the asynchronous part runs in the background
  const result = await coordinator.acknowledge(pending.checkpointId, 'counter', 0, {
    keyed: [await task.done],
    operator: [],
  });
  // every subtask acknowledges once: 'waiting' until the last one, then 'completed' (or 'rejected')
  if (result.status === 'completed') await keyed.notifyCheckpointComplete(pending.checkpointId);
  if (result.status === 'rejected') await keyed.notifyCheckpointAborted(pending.checkpointId);
  // README:end

  expect(plan).toBeNull();
  expect(result).toMatchObject({ status: 'completed', checkpoint: { checkpointId: 1, pointer: 'job-1/chk-1' } });
  await keyed.close();
  await coordinator.shutdown('finish');

  // A restart restores what the snippet checkpointed.
  const again = new CheckpointCoordinator({
    jobId: 'job-1',
    storage: backend.checkpointStorage!,
    backendName: backend.name,
    operators: [{ operatorId: 'counter', parallelism: 1, maxParallelism: 128 }],
  });
  const restoredPlan = await again.restore();
  expect(restoredPlan?.checkpointId).toBe(1);
  const restored = await backend.createKeyedStateBackend({
    jobId: 'job-1',
    operatorId: 'counter',
    subtaskIndex: 0,
    parallelism: 1,
    maxParallelism: 128,
    keyGroupRange: new KeyGroupRange(0, 127),
    keySerializer: stringSerializer,
    restore: restoredPlan!.subtask('counter', 0).keyed,
  });
  restored.setCurrentKey('user-42');
  expect(
    restored.getState(valueState<number>('count', { serializer: float64Serializer, defaultValue: 0 })).value(),
  ).toBe(1);
  expect(restored.getState(listState<string>('seen')).get()).toEqual(['page-7']);
  await restored.close();
  await again.shutdown('finish');
});

it('the region run above is the README snippet', async () => {
  const readme = await readFile(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');
  const section = readme.slice(readme.indexOf('## Checkpoints, restore and rescaling'));
  const block = /```ts\n([\s\S]*?)```/.exec(section)![1];
  const self = await readFile(fileURLToPath(import.meta.url), 'utf8');
  const region = self.slice(
    self.indexOf('  // README:begin\n') + '  // README:begin\n'.length,
    self.indexOf('  // README:end'),
  );
  const lines = (text: string) =>
    text
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '');
  expect(lines(block)[0]).toBe("import { CheckpointCoordinator } from 'streamstate';");
  expect(lines(region)).toEqual(lines(block).slice(1));
});
