import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import type { LevelDbKeyedStateBackend } from '../../backends/leveldb/backend.js';
import type { SnapshotOptions } from '../../src/backend/contract.js';
import type { KeyedStateHandle } from '../../src/backend/handles.js';
import { keyGroupForKey, keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { mapState } from '../../src/state/descriptors.js';
import type { MapState } from '../../src/state/types.js';
import { MAX_P } from '../heap/support.js';
import { LevelRig, checkCountRows } from './support.js';

/**
 * LevelDB MapState against a model (a plain Map per key and namespace): puts, removes, clears,
 * isEmpty and entries interleaved with flushes, turns of the event loop (layers written in the
 * background), snapshots of every kind (native incremental and full checkpoints, native and
 * canonical savepoints) with writes between their synchronous and asynchronous parts, and
 * restores from any earlier snapshot, also split over two subtasks. A tiny write buffer keeps
 * several layers in flight, so blind puts are counted while their layers are being written.
 */

type Op =
  | { op: 'put'; key: number; ns: number; uk: number; v: number }
  | { op: 'remove'; key: number; ns: number; uk: number }
  | { op: 'clear'; key: number; ns: number }
  | { op: 'read'; key: number; ns: number }
  | { op: 'yield' }
  | { op: 'flush' };
type Cmd =
  | Op
  | { op: 'snapshot'; kind: 'checkpoint' | 'canonical' | 'native-savepoint'; during: Op[] }
  | { op: 'restore'; pick: number; split: boolean; incremental: boolean };

const key = fc.integer({ min: 0, max: 5 });
const ns = fc.integer({ min: 0, max: 1 });
const uk = fc.integer({ min: 0, max: 4 });
const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({ op: fc.constant('put' as const), key, ns, uk, v: fc.integer({ min: 0, max: 99 }) }),
  },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('remove' as const), key, ns, uk }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('clear' as const), key, ns }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('read' as const), key, ns }) },
  { weight: 2, arbitrary: fc.constant({ op: 'yield' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
);
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  { weight: 20, arbitrary: op },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('snapshot' as const),
      kind: fc.constantFrom('checkpoint' as const, 'canonical' as const, 'native-savepoint' as const),
      during: fc.array(op, { maxLength: 8 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('restore' as const),
      pick: fc.nat(),
      split: fc.boolean(),
      incremental: fc.boolean(),
    }),
  },
);

const md = mapState<number, number, string>('m', { keySerializer: int32Serializer, valueSerializer: int32Serializer });
type Model = Map<string, Map<number, number>>;
const idOf = (k: number, n: number): string => `${k}/${n}`;

function copy(model: Model): Model {
  return new Map([...model].map(([id, m]) => [id, new Map(m)]));
}

const rig = new LevelRig({ writeBufferBytes: 200 });
afterAll(() => rig.cleanup());
let snapshotIds = 0;

function snapshotOptions(id: number, kind: 'checkpoint' | 'canonical' | 'native-savepoint'): SnapshotOptions {
  const streams = rig.storage.checkpointStreams('job', id);
  if (kind === 'checkpoint') return { type: 'checkpoint', streams };
  return { type: 'savepoint', format: kind === 'canonical' ? 'canonical' : 'native', streams };
}

/** Applies `o` to the backend and the model, and checks isEmpty (and on reads get and entries) against the model. */
async function apply(kb: LevelDbKeyedStateBackend<string>, map: MapState<number, number, string>, model: Model, o: Op) {
  if (o.op === 'yield') return new Promise<void>((r) => setImmediate(r));
  if (o.op === 'flush') return kb.flush();
  kb.setCurrentKey(`key-${o.key}`);
  map.setCurrentNamespace(`ns-${o.ns}`);
  const id = idOf(o.key, o.ns);
  const m = model.get(id) ?? new Map<number, number>();
  model.set(id, m);
  if (o.op === 'put') {
    map.put(o.uk, o.v);
    m.set(o.uk, o.v);
  } else if (o.op === 'remove') {
    map.remove(o.uk);
    m.delete(o.uk);
  } else if (o.op === 'clear') {
    map.clear();
    m.clear();
  } else {
    for (let u = 0; u <= 4; u++) expect(map.get(u)).toBe(m.get(u) ?? null);
    const got = new Map<number, number>();
    for await (const [k, v] of map.entries()) got.set(k, v);
    expect(got).toEqual(m);
  }
  expect(map.isEmpty()).toBe(m.size === 0);
}

/** Every map of the model (of the keys in `kb`'s key groups) reads back from `kb`: isEmpty, entries. */
async function checkAll(kb: LevelDbKeyedStateBackend<string>, model: Model): Promise<void> {
  const map = kb.getState(md);
  for (let k = 0; k <= 5; k++) {
    if (!kb.keyGroupRange.contains(keyGroupForKey(`key-${k}`, stringSerializer, MAX_P))) continue;
    kb.setCurrentKey(`key-${k}`);
    for (let n = 0; n <= 1; n++) {
      map.setCurrentNamespace(`ns-${n}`);
      const m = model.get(idOf(k, n)) ?? new Map<number, number>();
      expect(map.isEmpty()).toBe(m.size === 0);
      const got = new Map<number, number>();
      for await (const [u, v] of map.entries()) got.set(u, v);
      expect(got).toEqual(m);
    }
  }
}

describe('leveldb MapState against a model', () => {
  it('put/remove/clear/isEmpty/entries agree with a Map across flushes, snapshots and restores', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(cmd, { minLength: 1, maxLength: 60 }), fc.boolean(), async (cmds, incremental) => {
        let kb = await rig.create({}, { incremental });
        let map = kb.getState(md);
        let model: Model = new Map();
        const snapshots: { id: number; handle: KeyedStateHandle | null; model: Model }[] = [];
        try {
          for (const c of cmds) {
            if (c.op === 'snapshot') {
              // The point is fixed once snapshot() resolves (its synchronous part); `during` runs before the asynchronous part is awaited.
              const id = ++snapshotIds;
              const task = await kb.snapshot(id, snapshotOptions(id, c.kind));
              const pointModel = copy(model);
              for (const o of c.during) await apply(kb, map, model, o);
              snapshots.push({ id, handle: await task.done, model: pointModel });
            } else if (c.op === 'restore') {
              if (snapshots.length === 0) continue;
              const s = snapshots[c.pick % snapshots.length];
              await checkCountRows(kb);
              await kb.close();
              if (c.split) {
                for (const sub of [0, 1]) {
                  const range = keyGroupRangeForSubtask(MAX_P, 2, sub);
                  const part = await rig.restore(s.id, [s.handle], {
                    keyGroupRange: range,
                    parallelism: 2,
                    subtaskIndex: sub,
                  });
                  try {
                    await checkAll(part, s.model);
                    await checkCountRows(part);
                  } finally {
                    await part.close();
                  }
                }
              }
              kb = await rig.restore(s.id, [s.handle], {}, { incremental: c.incremental });
              map = kb.getState(md);
              model = copy(s.model);
              await checkAll(kb, model);
            } else {
              await apply(kb, map, model, c);
            }
          }
          await checkAll(kb, model);
          await checkCountRows(kb);
        } finally {
          await kb.close();
        }
      }),
      { numRuns: 40 },
    );
  }, 300_000);
});
