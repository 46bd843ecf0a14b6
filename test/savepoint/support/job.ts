import { join } from 'node:path';
import type { KeyedStateBackend, OperatorStateBackend, StateBackend } from '../../../src/backend/contract.js';
import { localCheckpointStorage } from '../../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator } from '../../../src/checkpoint/coordinator.js';
import { keyGroupForKey, keyGroupRangeForSubtask } from '../../../src/keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../../src/serializers/builtins.js';
import type { Serializer } from '../../../src/serializers/serializer.js';
import { listState, mapState, reducingState, valueState } from '../../../src/state/descriptors.js';

/**
 * A small job for savepoint tests: one keyed operator with value, list (two namespaces), map and
 * reducing state, a timer queue, and split/union/broadcast operator state. `writeJob` fills the
 * backends of every subtask and takes a savepoint through the CheckpointCoordinator; `readJob`
 * restores into any backend at any parallelism and returns the logical contents, normalized so
 * two restores can be compared with toEqual.
 */

export const OPERATOR = 'op-1';
export const MAX_PARALLELISM = 16;

export const descriptors = {
  count: valueState<number>('count', { serializer: int32Serializer }),
  profile: valueState<{ name: string; tags: string[] }>('profile'),
  events: listState<string>('events', { serializer: stringSerializer }),
  attrs: mapState<string, { v: number }>('attrs', { keySerializer: stringSerializer }),
  total: reducingState<number>('total', (a, b) => a + b),
};

export interface JobData {
  readonly keys: number;
}

export interface JobContents {
  keyed: string[];
  timers: string[];
  split: string[];
  union: string[];
  broadcast: string[];
}

function keyOf(i: number): string {
  return `key-${i}`;
}

async function fill(
  keyed: KeyedStateBackend<string>,
  operator: OperatorStateBackend,
  subtask: number,
  parallelism: number,
  data: JobData,
): Promise<void> {
  const count = keyed.getState(descriptors.count);
  const profile = keyed.getState(descriptors.profile);
  const events = keyed.getState(descriptors.events);
  const attrs = keyed.getState(descriptors.attrs);
  const total = keyed.getState(descriptors.total);
  const timers = keyed.getTimerQueue<string>('timers');
  const range = keyed.keyGroupRange;
  for (let i = 0; i < data.keys; i++) {
    const key = keyOf(i);
    if (!range.contains(keyGroupForKey(key, stringSerializer, keyed.maxParallelism))) continue;
    keyed.setCurrentKey(key);
    count.update(i);
    if (i % 3 === 0) profile.update({ name: `n${i}`, tags: [`t${i % 5}`, 'x'] });
    events.setCurrentNamespace('w1');
    events.addAll([`e${i}-c`, `e${i}-a`, `e${i}-b`]);
    events.setCurrentNamespace('w2');
    if (i % 2 === 0) events.add(`late-${i}`);
    events.setCurrentNamespace('');
    for (let j = 0; j < (i % 4) + 1; j++) attrs.put(`z${j}-${i}`, { v: i * 10 + j });
    total.add(i);
    total.add(1);
    timers.add({ timestamp: 1000 + (i % 7), key, namespace: i % 2 === 0 ? 'w1' : 'w2' });
  }
  const split = operator.getListState<string>('offsets', stringSerializer);
  split.addAll([`p${subtask}-a`, `p${subtask}-b`]);
  const union = operator.getUnionListState<number>('sources', int32Serializer);
  union.add(subtask * 100);
  const broadcast = operator.getBroadcastState(mapState<string, number>('rules', { keySerializer: stringSerializer }));
  broadcast.put('threshold', 42);
  broadcast.put('window', parallelism);
}

/** Fills a job at `parallelism` with `backend` and takes a savepoint; resolves with its absolute directory. */
export async function writeJob(
  backend: StateBackend,
  opts: {
    root: string;
    parallelism: number;
    format: 'canonical' | 'native';
    data?: JobData;
    jobId?: string;
    inlineThreshold?: number;
    clock?: () => number;
  },
): Promise<string> {
  const data = opts.data ?? { keys: 60 };
  const jobId = opts.jobId ?? 'job-a';
  const storage = localCheckpointStorage(opts.root, { inlineThreshold: opts.inlineThreshold ?? 0 });
  const coordinator = new CheckpointCoordinator({
    jobId,
    storage,
    backendName: backend.name,
    operators: [{ operatorId: OPERATOR, parallelism: opts.parallelism, maxParallelism: MAX_PARALLELISM }],
    ...(opts.clock === undefined ? {} : { clock: opts.clock }),
  });
  await coordinator.restore();
  const subtasks: { keyed: KeyedStateBackend<string>; operator: OperatorStateBackend }[] = [];
  try {
    for (let i = 0; i < opts.parallelism; i++) {
      const info = { jobId, operatorId: OPERATOR, subtaskIndex: i, parallelism: opts.parallelism };
      const keyed = await backend.createKeyedStateBackend({
        ...info,
        maxParallelism: MAX_PARALLELISM,
        keyGroupRange: keyGroupRangeForSubtask(MAX_PARALLELISM, opts.parallelism, i),
        keySerializer: stringSerializer,
      });
      const operator = await backend.createOperatorStateBackend(info);
      subtasks.push({ keyed, operator });
      await fill(keyed, operator, i, opts.parallelism, data);
    }
    const pending = coordinator.triggerSavepoint({ format: opts.format });
    for (let i = 0; i < subtasks.length; i++) {
      const options = pending.snapshotOptions(OPERATOR, i);
      const k = await subtasks[i].keyed.snapshot(pending.checkpointId, options);
      const o = await subtasks[i].operator.snapshot(pending.checkpointId, options);
      await coordinator.acknowledge(pending.checkpointId, OPERATOR, i, {
        keyed: [await k.done],
        operator: [await o.done],
      });
    }
    const info = await pending.completion;
    return join(opts.root, info.pointer);
  } finally {
    for (const s of subtasks) {
      await s.keyed.close();
      await s.operator.close();
    }
    await coordinator.shutdown('finish');
  }
}

function stable(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (x instanceof Map ? [...x].sort() : x));
}

async function collect<N>(keyed: KeyedStateBackend<string>, name: string): Promise<[string, N][]> {
  const out: [string, N][] = [];
  for await (const kn of keyed.getKeysAndNamespaces<N>(name)) out.push(kn);
  return out;
}

async function readSubtask(
  keyed: KeyedStateBackend<string>,
  operator: OperatorStateBackend,
  into: JobContents,
): Promise<void> {
  const count = keyed.getState(descriptors.count);
  const profile = keyed.getState(descriptors.profile);
  const events = keyed.getState(descriptors.events);
  const attrs = keyed.getState(descriptors.attrs);
  const total = keyed.getState(descriptors.total);
  for (const [key, ns] of await collect<string>(keyed, 'count')) {
    keyed.setCurrentKey(key);
    count.setCurrentNamespace(ns);
    into.keyed.push(stable(['count', key, ns, count.value()]));
  }
  for (const [key, ns] of await collect<string>(keyed, 'profile')) {
    keyed.setCurrentKey(key);
    profile.setCurrentNamespace(ns);
    into.keyed.push(stable(['profile', key, ns, profile.value()]));
  }
  for (const [key, ns] of await collect<string>(keyed, 'events')) {
    keyed.setCurrentKey(key);
    events.setCurrentNamespace(ns);
    into.keyed.push(stable(['events', key, ns, events.get()]));
  }
  for (const [key, ns] of await collect<string>(keyed, 'attrs')) {
    keyed.setCurrentKey(key);
    attrs.setCurrentNamespace(ns);
    const entries: [string, unknown][] = [];
    for await (const e of attrs.entries()) entries.push(e);
    entries.sort(([a], [b]) => (a < b ? -1 : 1));
    into.keyed.push(stable(['attrs', key, ns, entries]));
  }
  for (const [key, ns] of await collect<string>(keyed, 'total')) {
    keyed.setCurrentKey(key);
    total.setCurrentNamespace(ns);
    into.keyed.push(stable(['total', key, ns, total.get()]));
  }
  const timers = keyed.getTimerQueue<string>('timers');
  for (const t of timers) into.timers.push(stable([t.timestamp, t.key, t.namespace]));
  into.split.push(...operator.getListState<string>('offsets', stringSerializer).get());
  into.union.push(...operator.getUnionListState<number>('sources', int32Serializer).get().map(String));
  const broadcast = operator.getBroadcastState(mapState<string, number>('rules', { keySerializer: stringSerializer }));
  into.broadcast.push(stable([...broadcast.entries()].sort()));
}

/** Restores the savepoint at `dir` into `backend` at `parallelism` and returns its logical contents. */
export async function readJob(
  backend: StateBackend,
  dir: string,
  opts: { parallelism: number; keySerializer?: Serializer<string> },
): Promise<JobContents> {
  const root = join(dir, '..');
  const storage = localCheckpointStorage(root);
  const jobId = 'reader';
  const coordinator = new CheckpointCoordinator({
    jobId,
    storage,
    backendName: backend.name,
    operators: [{ operatorId: OPERATOR, parallelism: opts.parallelism, maxParallelism: MAX_PARALLELISM }],
  });
  const plan = await coordinator.restore(dir);
  if (plan === null) throw new Error('nothing to restore');
  const contents: JobContents = { keyed: [], timers: [], split: [], union: [], broadcast: [] };
  try {
    for (let i = 0; i < opts.parallelism; i++) {
      const info = { jobId, operatorId: OPERATOR, subtaskIndex: i, parallelism: opts.parallelism };
      const sub = plan.subtask(OPERATOR, i);
      const keyed = await backend.createKeyedStateBackend({
        ...info,
        maxParallelism: MAX_PARALLELISM,
        keyGroupRange: keyGroupRangeForSubtask(MAX_PARALLELISM, opts.parallelism, i),
        keySerializer: opts.keySerializer ?? stringSerializer,
        restore: sub.keyed,
      });
      const operator = await backend.createOperatorStateBackend({ ...info, restore: sub.operator });
      try {
        await readSubtask(keyed, operator, contents);
      } finally {
        await keyed.close();
        await operator.close();
      }
    }
  } finally {
    await coordinator.shutdown('finish');
  }
  contents.keyed.sort();
  contents.timers.sort();
  contents.split.sort();
  // Union and broadcast state: every subtask gets all of it; the logical content is one copy.
  contents.union = [...new Set(contents.union)].sort();
  contents.broadcast = [...new Set(contents.broadcast)];
  return contents;
}

/** What a fresh job with `keys` keys holds, independent of parallelism (for sanity checks). */
export function expectedKeyedEntries(keys: number): number {
  return keys * 4 + Math.ceil(keys / 3) + Math.ceil(keys / 2);
}

/** Takes `count` checkpoints of a filled job (state changes a little between them); resolves with the job's directory. */
export async function writeCheckpoints(
  backend: StateBackend,
  opts: { root: string; jobId: string; count: number; numRetained?: number; parallelism?: number },
): Promise<string> {
  const parallelism = opts.parallelism ?? 2;
  const storage = localCheckpointStorage(opts.root, { inlineThreshold: 0 });
  const coordinator = new CheckpointCoordinator({
    jobId: opts.jobId,
    storage,
    backendName: backend.name,
    numRetained: opts.numRetained ?? 2,
    operators: [{ operatorId: OPERATOR, parallelism, maxParallelism: MAX_PARALLELISM }],
  });
  await coordinator.restore();
  const subtasks: { keyed: KeyedStateBackend<string>; operator: OperatorStateBackend }[] = [];
  try {
    for (let i = 0; i < parallelism; i++) {
      const info = { jobId: opts.jobId, operatorId: OPERATOR, subtaskIndex: i, parallelism };
      const keyed = await backend.createKeyedStateBackend({
        ...info,
        maxParallelism: MAX_PARALLELISM,
        keyGroupRange: keyGroupRangeForSubtask(MAX_PARALLELISM, parallelism, i),
        keySerializer: stringSerializer,
      });
      const operator = await backend.createOperatorStateBackend(info);
      subtasks.push({ keyed, operator });
      await fill(keyed, operator, i, parallelism, { keys: 30 });
    }
    for (let n = 0; n < opts.count; n++) {
      for (const s of subtasks) {
        const count = s.keyed.getState(descriptors.count);
        for (let i = 0; i < 30; i++) {
          const key = keyOf(i);
          if (!s.keyed.keyGroupRange.contains(keyGroupForKey(key, stringSerializer, MAX_PARALLELISM))) continue;
          s.keyed.setCurrentKey(key);
          count.update(i + n);
        }
      }
      const pending = coordinator.triggerCheckpoint();
      for (let i = 0; i < subtasks.length; i++) {
        const options = pending.snapshotOptions(OPERATOR, i);
        const k = await subtasks[i].keyed.snapshot(pending.checkpointId, options);
        const o = await subtasks[i].operator.snapshot(pending.checkpointId, options);
        await coordinator.acknowledge(pending.checkpointId, OPERATOR, i, {
          keyed: [await k.done],
          operator: [await o.done],
        });
      }
      await pending.completion;
      for (const s of subtasks) await s.keyed.notifyCheckpointComplete(pending.checkpointId);
    }
    return join(opts.root, opts.jobId);
  } finally {
    for (const s of subtasks) {
      await s.keyed.close();
      await s.operator.close();
    }
    await coordinator.shutdown('finish');
  }
}
