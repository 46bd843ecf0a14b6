import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import type { KeyedStateBackend, StateBackend } from '../../src/backend/contract.js';
import { changelog } from '../../src/changelog/backend.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator } from '../../src/checkpoint/coordinator.js';
import { isStreamStateError } from '../../src/errors.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import type { Serializer, SerializerSnapshot } from '../../src/serializers/serializer.js';
import { listState, mapState, valueState } from '../../src/state/descriptors.js';
import { cli, tempDir } from '../cli/support.js';

/**
 * Schema evolution across a savepoint: a state restored and registered with another serializer is
 * compatible as is, migrated (every entry rewritten with the new serializer), or refused.
 */

interface PointV1 {
  x: number;
  y: number;
}
interface PointV2 {
  x: number;
  y: number;
  label: string;
}

/** v1 writes "x,y". */
const pointV1: Serializer<PointV1> = {
  id: 'test.point',
  version: 1,
  mapKey: 'bytes',
  serialize: (p) => Buffer.from(`${p.x},${p.y}`),
  deserialize: (b) => {
    const [x, y] = Buffer.from(b).toString().split(',').map(Number);
    return { x, y };
  },
  copy: (p) => ({ ...p }),
};

const readV1AsV2: Serializer<PointV2> = {
  id: 'test.point',
  version: 1,
  mapKey: 'bytes',
  serialize: () => {
    throw new Error('the v1 reader only reads');
  },
  deserialize: (b) => ({ ...pointV1.deserialize(b), label: 'migrated' }),
  copy: (p) => ({ ...p }),
};

/** v2 writes JSON and can read v1 bytes. */
const pointV2: Serializer<PointV2> = {
  id: 'test.point',
  version: 2,
  mapKey: 'bytes',
  serialize: (p) => Buffer.from(JSON.stringify(p)),
  deserialize: (b) => JSON.parse(Buffer.from(b).toString()) as PointV2,
  copy: (p) => ({ ...p }),
  canMigrateFrom: (prev: SerializerSnapshot) => prev.id === 'test.point' && prev.version === 1,
  restoreReader: () => readV1AsV2 as Serializer<PointV2>,
};

/** Same id, a version it cannot read. */
const pointV3NoMigration: Serializer<PointV2> = { ...pointV2, version: 3, canMigrateFrom: () => false };

const OP = 'op';
const MAXP = 8;
let root: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-schema-'));
});
afterAll(async () => cleanup());

const backends: Array<[string, () => StateBackend]> = [
  ['memory', () => new HeapStateBackend({ name: 'memory' })],
  ['leveldb', () => leveldb({ workingDir: join(root, 'work') })],
  [
    'changelog(memory)',
    () =>
      changelog({
        backend: new HeapStateBackend({ name: 'memory' }),
        storage: localCheckpointStorage(join(root, 'cl')),
        materializationIntervalMs: 0,
      }),
  ],
];

const KEYS = ['a', 'b', 'c', 'd', 'e', 'f'];

async function keyed(
  backend: StateBackend,
  restore?: Awaited<ReturnType<CheckpointCoordinator['restore']>>,
  keySerializer: Serializer<string> = stringSerializer,
): Promise<KeyedStateBackend<string>> {
  return backend.createKeyedStateBackend({
    jobId: 'j',
    operatorId: OP,
    subtaskIndex: 0,
    parallelism: 1,
    maxParallelism: MAXP,
    keyGroupRange: keyGroupRangeForSubtask(MAXP, 1, 0),
    keySerializer,
    ...(restore ? { restore: restore.subtask(OP, 0).keyed } : {}),
  });
}

async function savepoint(
  backend: StateBackend,
  b: KeyedStateBackend<string>,
  format: 'canonical' | 'native',
): Promise<string> {
  const coordinator = new CheckpointCoordinator({
    jobId: 'j',
    storage: localCheckpointStorage(root, { inlineThreshold: 0 }),
    backendName: backend.name,
    operators: [{ operatorId: OP, parallelism: 1, maxParallelism: MAXP }],
  });
  await coordinator.restore();
  const pending = coordinator.triggerSavepoint({ format });
  const task = await b.snapshot(pending.checkpointId, pending.snapshotOptions(OP, 0));
  await coordinator.acknowledge(pending.checkpointId, OP, 0, { keyed: [await task.done], operator: [] });
  const info = await pending.completion;
  await coordinator.shutdown('finish');
  return join(root, info.pointer);
}

async function planFor(dir: string): Promise<NonNullable<Awaited<ReturnType<CheckpointCoordinator['restore']>>>> {
  const coordinator = new CheckpointCoordinator({
    jobId: 'r',
    storage: localCheckpointStorage(root),
    backendName: 'x',
    operators: [{ operatorId: OP, parallelism: 1, maxParallelism: MAXP }],
  });
  const plan = await coordinator.restore(dir);
  await coordinator.shutdown('finish');
  return plan!;
}

/** A savepoint with value, list and map state of v1 points. */
async function v1Savepoint(backend: StateBackend, format: 'canonical' | 'native'): Promise<string> {
  const b = await keyed(backend);
  try {
    const value = b.getState(valueState('pos', { serializer: pointV1 }));
    const list = b.getState(listState('trail', { serializer: pointV1 }));
    const map = b.getState(mapState('named', { keySerializer: stringSerializer, valueSerializer: pointV1 }));
    KEYS.forEach((k, i) => {
      b.setCurrentKey(k);
      value.update({ x: i, y: -i });
      list.addAll([
        { x: i, y: 1 },
        { x: i, y: 2 },
      ]);
      map.put(`m${i}`, { x: 10 * i, y: 0 });
    });
    return await savepoint(backend, b, format);
  } finally {
    await b.close();
  }
}

describe.each(backends)('schema evolution on %s', (_name, make) => {
  const formats = ['canonical', 'native'] as const;

  it.each(formats)('compatible as is (%s savepoint): values restore unchanged', async (format) => {
    const dir = await v1Savepoint(make(), format);
    const b = await keyed(make(), await planFor(dir));
    try {
      const value = b.getState(valueState('pos', { serializer: pointV1 }));
      b.setCurrentKey('c');
      expect(value.value()).toEqual({ x: 2, y: -2 });
    } finally {
      await b.close();
    }
  });

  it.each(formats)(
    'needs migration (%s savepoint): every entry is read with the old reader and rewritten with the new serializer',
    async (format) => {
      const backend = make();
      const dir = await v1Savepoint(backend, format);
      const b = await keyed(make(), await planFor(dir));
      let migrated: string;
      try {
        const value = b.getState(valueState('pos', { serializer: pointV2 }));
        const list = b.getState(listState('trail', { serializer: pointV2 }));
        const map = b.getState(mapState('named', { keySerializer: stringSerializer, valueSerializer: pointV2 }));
        b.setCurrentKey('d');
        expect(value.value()).toEqual({ x: 3, y: -3, label: 'migrated' });
        expect(list.get()).toEqual([
          { x: 3, y: 1, label: 'migrated' },
          { x: 3, y: 2, label: 'migrated' },
        ]);
        expect(map.get('m3')).toEqual({ x: 30, y: 0, label: 'migrated' });
        value.update({ x: 99, y: 99, label: 'new' });
        migrated = await savepoint(make(), b, 'canonical');
      } finally {
        await b.close();
      }
      // The next savepoint records v2 and holds only v2 bytes: a v2-only reader (no migration) reads it all.
      const report = JSON.parse((await cli(['inspect', migrated, '--json'])).stdout);
      const states = report.operators[0].keyedStates as { name: string; valueSerializer: string }[];
      expect(states.map((s) => s.valueSerializer)).toEqual(['test.point@2', 'test.point@2', 'test.point@2']);
      const strictV2: Serializer<PointV2> = { ...pointV2, canMigrateFrom: () => false };
      const again = await keyed(make(), await planFor(migrated));
      try {
        const value = again.getState(valueState('pos', { serializer: strictV2 }));
        const list = again.getState(listState('trail', { serializer: strictV2 }));
        const map = again.getState(mapState('named', { keySerializer: stringSerializer, valueSerializer: strictV2 }));
        again.setCurrentKey('d');
        expect(value.value()).toEqual({ x: 99, y: 99, label: 'new' });
        again.setCurrentKey('b');
        expect(value.value()).toEqual({ x: 1, y: -1, label: 'migrated' });
        expect(list.get()).toEqual([
          { x: 1, y: 1, label: 'migrated' },
          { x: 1, y: 2, label: 'migrated' },
        ]);
        expect(map.get('m1')).toEqual({ x: 10, y: 0, label: 'migrated' });
      } finally {
        await again.close();
      }
    },
  );

  it.each(formats)('incompatible (%s savepoint): registration fails with SERIALIZER_INCOMPATIBLE', async (format) => {
    const dir = await v1Savepoint(make(), format);
    const b = await keyed(make(), await planFor(dir));
    try {
      let err: unknown;
      try {
        b.getState(valueState('pos', { serializer: pointV3NoMigration }));
      } catch (e) {
        err = e;
      }
      expect(isStreamStateError(err, 'SERIALIZER_INCOMPATIBLE')).toBe(true);
      expect((err as Error).name).toBe('StateMigrationError');
      let other: unknown;
      try {
        b.getState(valueState('pos', { serializer: stringSerializer }));
      } catch (e) {
        other = e;
      }
      expect(isStreamStateError(other, 'SERIALIZER_INCOMPATIBLE')).toBe(true);
    } finally {
      await b.close();
    }
  });

  it.each(formats)('a key serializer that would need migration is refused (%s savepoint)', async (format) => {
    const dir = await v1Savepoint(make(), format);
    const migratingKeys: Serializer<string> = { ...stringSerializer, version: 2, canMigrateFrom: () => true };
    let err: unknown;
    try {
      const b = await keyed(make(), await planFor(dir), migratingKeys);
      await b.close();
    } catch (e) {
      err = e;
    }
    expect(isStreamStateError(err, 'KEY_SERIALIZER_MISMATCH')).toBe(true);
  });
});
