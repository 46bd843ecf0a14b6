import { join } from 'node:path';
import fc from 'fast-check';
import { filesystem } from '../../backends/filesystem/index.js';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { memory } from '../../backends/memory/index.js';
import type { KeyedStateBackend, OperatorStateBackend, StateBackend } from '../../src/backend/contract.js';
import type { KeyGroupsStateHandle } from '../../src/backend/handles.js';
import { changelog } from '../../src/changelog/index.js';
import { assignKeyedState, assignOperatorState } from '../../src/checkpoint/assignment.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { entryKindOf, readKeyGroups } from '../../src/format/key-groups-stream.js';
import { keyGroupForBytes, keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { convertSnapshot, type ConvertOptions } from '../../src/savepoint/convert.js';
import { locateSnapshot } from '../../src/savepoint/locate.js';
import { forEachEntry } from '../../src/savepoint/rehash.js';
import { backendByName, keySerializerOf } from '../../src/cli/backends.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { listState, mapState, valueState } from '../../src/state/descriptors.js';
import { BackendHarness, type BackendFixture } from '../support/backend-harness.js';

/**
 * Max-parallelism tests: random keyed state (value, list, map, TTL value, timers) plus operator
 * state, written by any source backend at maxParallelism 128, converted to other max
 * parallelisms, restored and compared with the model.
 */

export const TTL_MS = 60_000;
export const WRITE_TIME = 1_000;

export const descriptors = {
  count: valueState<number>('count', { serializer: int32Serializer }),
  events: listState<string>('events', { serializer: stringSerializer }),
  attrs: mapState<string, number>('attrs', { keySerializer: stringSerializer, valueSerializer: int32Serializer }),
  session: valueState<string>('session', {
    serializer: stringSerializer,
    ttl: { ttlMs: TTL_MS, cleanupInFullSnapshot: false },
  }),
};

export interface KeyModel {
  readonly key: string;
  readonly count: number;
  readonly events: readonly string[];
  readonly attrs: ReadonlyArray<readonly [string, number]>;
  readonly session: string | null;
  readonly timers: ReadonlyArray<readonly [number, string]>;
}

export const keyModels: fc.Arbitrary<KeyModel[]> = fc.uniqueArray(
  fc.record({
    key: fc.string({ maxLength: 10, unit: 'grapheme' }),
    count: fc.integer({ min: -1000, max: 1000 }),
    events: fc.array(fc.string({ maxLength: 6 }), { maxLength: 3 }),
    attrs: fc.uniqueArray(fc.tuple(fc.string({ maxLength: 4 }), fc.integer({ min: 0, max: 99 })), {
      selector: ([k]) => k,
      maxLength: 3,
    }),
    session: fc.option(fc.string({ maxLength: 8 }), { nil: null }),
    timers: fc.uniqueArray(fc.tuple(fc.integer({ min: 0, max: 50 }), fc.constantFrom('w1', 'w2')), {
      selector: ([t, n]) => `${t}/${n}`,
      maxLength: 2,
    }),
  }),
  { selector: (m) => m.key, minLength: 1, maxLength: 30 },
);

/** Source backends: fixtures whose checkpoint storage is a local directory (convert reads paths). */
export const SOURCE_BACKENDS: Record<string, (root: string) => BackendFixture> = {
  memory: (root) => ({
    backend: memory(),
    storage: localCheckpointStorage(join(root, 'chk'), { inlineThreshold: 0 }),
    cleanup: async () => {},
  }),
  filesystem: (root) => ({
    backend: filesystem({ checkpointDir: join(root, 'chk'), inlineThreshold: 0 }),
    cleanup: async () => {},
  }),
  leveldb: (root) => ({
    backend: leveldb({ workingDir: join(root, 'work'), checkpointDir: join(root, 'chk'), incremental: true }),
    storage: localCheckpointStorage(join(root, 'chk'), { inlineThreshold: 0 }),
    cleanup: async () => {},
  }),
  'changelog(memory)': (root) => ({
    backend: changelog({
      backend: memory(),
      storage: localCheckpointStorage(join(root, 'log')),
      materializationIntervalMs: 0,
    }),
    storage: localCheckpointStorage(join(root, 'chk'), { inlineThreshold: 0 }),
    cleanup: async () => {},
  }),
  'changelog(leveldb)': (root) => ({
    backend: changelog({
      backend: leveldb({ workingDir: join(root, 'work'), checkpointDir: join(root, 'chk'), incremental: true }),
      storage: localCheckpointStorage(join(root, 'log')),
    }),
    storage: localCheckpointStorage(join(root, 'chk'), { inlineThreshold: 0 }),
    cleanup: async () => {},
  }),
};

async function fill(keyed: KeyedStateBackend<string>, model: readonly KeyModel[]): Promise<void> {
  const count = keyed.getState(descriptors.count);
  const events = keyed.getState(descriptors.events);
  const attrs = keyed.getState(descriptors.attrs);
  const session = keyed.getState(descriptors.session);
  const timers = keyed.getTimerQueue<string>('timers');
  for (const m of model) {
    if (!keyed.keyGroupRange.contains(keyGroupRangeIndex(m.key, keyed.maxParallelism))) continue;
    keyed.setCurrentKey(m.key);
    count.update(m.count);
    if (m.events.length > 0) events.addAll([...m.events]);
    for (const [k, v] of m.attrs) attrs.put(k, v);
    if (m.session !== null) session.update(m.session);
    for (const [t, ns] of m.timers) timers.add({ timestamp: t, key: m.key, namespace: ns });
  }
}

function keyGroupRangeIndex(key: string, maxParallelism: number): number {
  return keyGroupForBytes(stringSerializer.serialize(key), maxParallelism);
}

export interface Written {
  readonly path: string;
  /** Split operator state every subtask wrote (to check it comes through unchanged). */
  readonly split: readonly string[];
}

/**
 * Writes `model` with the harness's backend at `parallelism`, maxParallelism 128, as a checkpoint
 * (native: incremental for leveldb, changelog handles for changelog) or a savepoint.
 */
export async function writeSource(
  h: BackendHarness,
  root: string,
  model: readonly KeyModel[],
  opts: {
    parallelism: number;
    maxParallelism?: number;
    type?: 'checkpoint' | 'savepoint';
    format?: 'canonical' | 'native';
  },
): Promise<Written> {
  const maxParallelism = opts.maxParallelism ?? 128;
  const keyed = await h.createKeyedOperator({
    keySerializer: stringSerializer,
    parallelism: opts.parallelism,
    maxParallelism,
    clock: () => WRITE_TIME,
  });
  const ops: OperatorStateBackend[] = [];
  const split: string[] = [];
  for (let i = 0; i < opts.parallelism; i++) {
    await fill(keyed[i], model);
    const op = await h.createOperator({ parallelism: opts.parallelism, subtask: i });
    const items = [`s${i}-a`, `s${i}-b`];
    op.getListState<string>('offsets', stringSerializer).addAll(items);
    split.push(...items);
    ops.push(op);
  }
  const pointer = await h.checkpoint([...keyed, ...ops], {
    type: opts.type ?? 'checkpoint',
    ...(opts.format === undefined ? {} : { format: opts.format }),
  });
  for (const b of [...keyed, ...ops]) await h.close(b);
  return { path: join(root, 'chk', pointer), split: split.sort() };
}

export function convertOptions(root: string, extra: Partial<ConvertOptions> = {}): ConvertOptions {
  return {
    target: 'memory',
    format: 'canonical',
    backendFor: (name, workDir) => backendByName(name, workDir ?? join(root, 'work-convert')),
    keySerializerOf,
    ...extra,
  };
}

/** convertSnapshot of the snapshot at `src` into `dst`. */
export async function convert(src: string, dst: string, opts: ConvertOptions): Promise<void> {
  const located = await locateSnapshot(src);
  try {
    await convertSnapshot(located, dst, opts);
  } finally {
    await located.close();
  }
}

export interface Contents {
  readonly keys: KeyModel[];
  readonly split: string[];
  /** Keys whose TTL value is still there when read after its time to live. */
  readonly sessionsAfterTtl: number;
}

/** The model as restored contents are normalized. */
export function normalizeModel(model: readonly KeyModel[]): KeyModel[] {
  return model
    .map((m) => ({
      ...m,
      attrs: [...m.attrs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
      timers: [...m.timers].sort((a, b) => a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0)),
    }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

/**
 * Restores the savepoint at `path` into a heap backend at its own parallelism and max
 * parallelism (through assignKeyedState, as a job does) and reads every key back.
 */
export async function readContents(
  path: string,
  backend: StateBackend = new HeapStateBackend({ name: 'memory' }),
): Promise<Contents> {
  const located = await locateSnapshot(path);
  try {
    const { metadata, files } = located.snapshot;
    const op = metadata.operators[0];
    const keyedAssigned = assignKeyedState(op, op.parallelism, op.maxParallelism);
    const operatorAssigned = assignOperatorState(op, op.parallelism);
    const byKey = new Map<
      string,
      {
        count?: number;
        events: string[];
        attrs: [string, number][];
        session: string | null;
        timers: [number, string][];
      }
    >();
    const split: string[] = [];
    let sessionsAfterTtl = 0;
    for (let i = 0; i < op.parallelism; i++) {
      let now = WRITE_TIME;
      const params = {
        jobId: 'reader',
        operatorId: op.operatorId,
        subtaskIndex: i,
        parallelism: op.parallelism,
        maxParallelism: op.maxParallelism,
        keyGroupRange: keyGroupRangeForSubtask(op.maxParallelism, op.parallelism, i),
        keySerializer: stringSerializer,
        clock: () => now,
        restore: {
          handles: keyedAssigned[i] ?? [],
          files,
          mode: 'no-claim' as const,
          checkpointId: metadata.checkpointId,
        },
      };
      const keyed = await backend.createKeyedStateBackend(params);
      const operator = await backend.createOperatorStateBackend({
        jobId: 'reader',
        operatorId: op.operatorId,
        subtaskIndex: i,
        parallelism: op.parallelism,
        restore: { handles: operatorAssigned[i] ?? [], files, mode: 'no-claim', checkpointId: metadata.checkpointId },
      });
      try {
        const entry = (key: string) => {
          let e = byKey.get(key);
          if (e === undefined) byKey.set(key, (e = { events: [], attrs: [], session: null, timers: [] }));
          return e;
        };
        const count = keyed.getState(descriptors.count);
        const events = keyed.getState(descriptors.events);
        const attrs = keyed.getState(descriptors.attrs);
        const session = keyed.getState(descriptors.session);
        const keys = new Set<string>();
        for (const name of ['count', 'events', 'attrs', 'session'])
          for await (const [k] of keyed.getKeysAndNamespaces<string>(name)) keys.add(k);
        for (const k of keys) {
          if (!keyed.keyGroupRange.contains(keyGroupRangeIndex(k, op.maxParallelism)))
            throw new Error(`key ${JSON.stringify(k)} restored into the wrong subtask`);
          keyed.setCurrentKey(k);
          const e = entry(k);
          const c = count.value();
          if (c !== null) e.count = c;
          e.events.push(...(events.get() ?? []));
          for await (const [uk, v] of attrs.entries()) e.attrs.push([uk, v]);
          e.session = session.value();
        }
        for (const t of keyed.getTimerQueue<string>('timers')) entry(t.key).timers.push([t.timestamp, t.namespace]);
        // TTL timestamps came along: past the time to live, every session value is gone.
        now = WRITE_TIME + TTL_MS + 1;
        for (const k of keys) {
          keyed.setCurrentKey(k);
          if (session.value() !== null) sessionsAfterTtl++;
        }
        split.push(...operator.getListState<string>('offsets', stringSerializer).get());
      } finally {
        await keyed.close();
        await operator.close();
      }
    }
    const keys = [...byKey].map(([key, e]) => ({
      key,
      count: e.count ?? Number.NaN,
      events: e.events,
      attrs: e.attrs,
      session: e.session,
      timers: e.timers,
    }));
    return { keys: normalizeModel(keys), split: split.sort(), sessionsAfterTtl };
  } finally {
    await located.close();
  }
}

/** Every entry of every canonical stream of the savepoint sits in the key group its key hashes to. */
export async function misplacedEntries(path: string): Promise<number> {
  const located = await locateSnapshot(path);
  let misplaced = 0;
  try {
    const { metadata, files } = located.snapshot;
    for (const op of metadata.operators) {
      for (const s of op.subtasks) {
        for (const h of s.keyed as KeyGroupsStateHandle[]) {
          const kinds = new Map(h.states.map((m) => [m.stateId, entryKindOf(m.kind)]));
          for await (const kg of readKeyGroups(h, files, h.keyGroupRange)) {
            for (const sec of kg.sections) {
              forEachEntry(kinds.get(sec.stateId)!, sec.bytes, sec.entryCount, 'test', (_s, _e, ks, ke) => {
                if (keyGroupForBytes(sec.bytes.subarray(ks, ke), op.maxParallelism) !== kg.keyGroup) misplaced++;
              });
            }
          }
        }
      }
    }
  } finally {
    await located.close();
  }
  return misplaced;
}

export { BackendHarness };
