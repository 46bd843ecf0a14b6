import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LevelDbKeyedStateBackend } from '../../backends/leveldb/backend.js';
import { countRowStateId, encodeRowKey } from '../../backends/leveldb/row-keys.js';
import type { KeyedStateHandle } from '../../src/backend/handles.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { keyGroupForKey } from '../../src/keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import type { RestoreSource } from '../../src/backend/contract.js';
import { mapState, valueState } from '../../src/state/descriptors.js';
import { MAX_P, params } from '../heap/support.js';
import { checkCountRows } from './support.js';

/**
 * The write buffer with a tiny size limit, so that layers are sealed every few operations and
 * several wait for LevelDB at once: reads, map counts (blind puts resolved later) and range
 * deletions must stay exact while layers are written in the background.
 */

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'streamstate-leveldb-buffer-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function create(
  writeBufferBytes: number,
  clock?: () => number,
  restore?: RestoreSource<KeyedStateHandle>,
): Promise<LevelDbKeyedStateBackend<string>> {
  return LevelDbKeyedStateBackend.create(params({ ...(clock ? { clock } : {}), ...(restore ? { restore } : {}) }), {
    workingDir: root,
    writeBufferBytes,
  });
}

type Cmd =
  | { op: 'put'; key: number; ns: number; uk: number; v: number }
  | { op: 'remove'; key: number; ns: number; uk: number }
  | { op: 'clear'; key: number; ns: number }
  | { op: 'check'; key: number; ns: number; uk: number }
  | { op: 'value'; key: number; v: number | null }
  | { op: 'yield' }
  | { op: 'flush' };

const key = fc.integer({ min: 0, max: 5 });
const ns = fc.integer({ min: 0, max: 1 });
const uk = fc.integer({ min: 0, max: 4 });
const cmd: fc.Arbitrary<Cmd> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({ op: fc.constant('put' as const), key, ns, uk, v: fc.integer({ min: 0, max: 99 }) }),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('remove' as const), key, ns, uk }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('clear' as const), key, ns }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('check' as const), key, ns, uk }) },
  {
    weight: 2,
    arbitrary: fc.record({ op: fc.constant('value' as const), key, v: fc.option(fc.integer({ min: 0, max: 99 })) }),
  },
  { weight: 2, arbitrary: fc.constant({ op: 'yield' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
);

const md = mapState<number, number, string>('m', { keySerializer: int32Serializer, valueSerializer: int32Serializer });
const vd = valueState<number>('v', { serializer: int32Serializer });

describe('leveldb write buffer with layers in flight', () => {
  it('map entries, counts (isEmpty), clears and values match a model, and LevelDB count rows are exact at a snapshot point', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(cmd, { minLength: 1, maxLength: 120 }),
        fc.integer({ min: 60, max: 600 }),
        async (cmds, limit) => {
          const kb = await create(limit);
          try {
            const map = kb.getState(md);
            const value = kb.getState(vd);
            const model = new Map<string, Map<number, number>>();
            const values = new Map<number, number>();
            const at = (k: number, n: number): Map<number, number> => {
              const id = `${k}/${n}`;
              let m = model.get(id);
              if (m === undefined) model.set(id, (m = new Map()));
              return m;
            };
            for (const c of cmds) {
              if (c.op === 'yield') {
                await new Promise((r) => setImmediate(r));
                continue;
              }
              if (c.op === 'flush') {
                await kb.flush();
                continue;
              }
              kb.setCurrentKey(`key-${c.key}`);
              if (c.op === 'value') {
                value.update(c.v);
                if (c.v === null) values.delete(c.key);
                else values.set(c.key, c.v);
                expect(value.value()).toBe(c.v);
                continue;
              }
              map.setCurrentNamespace(`ns-${c.ns}`);
              const m = at(c.key, c.ns);
              if (c.op === 'put') {
                map.put(c.uk, c.v);
                m.set(c.uk, c.v);
              } else if (c.op === 'remove') {
                map.remove(c.uk);
                m.delete(c.uk);
              } else if (c.op === 'clear') {
                map.clear();
                m.clear();
              }
              expect(map.isEmpty()).toBe(m.size === 0);
              if (c.op === 'check') {
                expect(map.get(c.uk)).toBe(m.get(c.uk) ?? null);
                expect(map.contains(c.uk)).toBe(m.has(c.uk));
              }
            }
            // Everything, read back while layers may still be in flight.
            for (const [id, m] of model) {
              const [k, n] = id.split('/');
              kb.setCurrentKey(`key-${k}`);
              map.setCurrentNamespace(`ns-${n}`);
              expect(map.isEmpty()).toBe(m.size === 0);
              const got = new Map<number, number>();
              for await (const [uk2, v] of map.entries()) got.set(uk2, v);
              expect(got).toEqual(m);
            }
            for (let k = 0; k <= 5; k++) {
              kb.setCurrentKey(`key-${k}`);
              expect(value.value()).toBe(values.get(k) ?? null);
            }
            await kb.flush();
            await checkCountRows(kb);
          } finally {
            await kb.close();
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('a TTL map is empty once its newest entry expired, across sealed layers', async () => {
    let now = 1000;
    const kb = await create(80, () => now);
    try {
      const map = kb.getState(
        mapState<number, number>('t', {
          keySerializer: int32Serializer,
          valueSerializer: int32Serializer,
          ttl: { ttlMs: 100 },
        }),
      );
      kb.setCurrentKey('a');
      expect(map.isEmpty()).toBe(true);
      map.put(1, 1);
      now = 1050;
      map.put(2, 2);
      for (let i = 0; i < 20; i++) {
        kb.setCurrentKey(`filler-${i}`);
        map.put(0, i); // seals layers around the entries of 'a'
      }
      kb.setCurrentKey('a');
      now = 1120;
      expect(map.isEmpty()).toBe(false); // entry 2 lives until 1150
      await kb.flush();
      expect(map.isEmpty()).toBe(false);
      now = 1150;
      expect(map.isEmpty()).toBe(true);
      await checkCountRows(kb);
    } finally {
      await kb.close();
    }
  });

  it('a layer written from its ready batch and one written from its Map (hot keys, deletes, map clears) leave the same rows in LevelDB', async () => {
    type Step =
      | { op: 'burst'; keys: number; n: number }
      | { op: 'delete'; key: number }
      | { op: 'mapPut'; key: number; uk: number }
      | { op: 'mapClear'; key: number }
      | { op: 'flush' };
    const step: fc.Arbitrary<Step> = fc.oneof(
      // Hot keys: n updates over a few keys overwrite rows of the same layer (a quarter of them drops the batch).
      {
        weight: 3,
        arbitrary: fc.record({
          op: fc.constant('burst' as const),
          keys: fc.integer({ min: 1, max: 400 }),
          n: fc.integer({ min: 1, max: 1500 }),
        }),
      },
      {
        weight: 2,
        arbitrary: fc.record({ op: fc.constant('delete' as const), key: fc.integer({ min: 0, max: 399 }) }),
      },
      {
        weight: 2,
        arbitrary: fc.record({
          op: fc.constant('mapPut' as const),
          key: fc.integer({ min: 0, max: 5 }),
          uk: fc.integer({ min: 0, max: 9 }),
        }),
      },
      {
        weight: 1,
        arbitrary: fc.record({ op: fc.constant('mapClear' as const), key: fc.integer({ min: 0, max: 5 }) }),
      },
      { weight: 1, arbitrary: fc.constant({ op: 'flush' as const }) },
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 12 }), async (steps) => {
        const kb = await create(64 << 20); // one layer until a flush: every step lands in the same layer
        try {
          const value = kb.getState(vd);
          const map = kb.getState(md);
          const values = new Map<number, number>();
          const maps = new Map<number, Map<number, number>>();
          let seq = 0;
          for (const s of steps) {
            if (s.op === 'flush') {
              await kb.flush();
            } else if (s.op === 'burst') {
              for (let i = 0; i < s.n; i++) {
                const k = i % s.keys;
                kb.setCurrentKey(`key-${k}`);
                value.update(++seq);
                values.set(k, seq);
              }
            } else if (s.op === 'delete') {
              kb.setCurrentKey(`key-${s.key}`);
              value.clear();
              values.delete(s.key);
            } else {
              kb.setCurrentKey(`key-${s.key}`);
              const m = maps.get(s.key) ?? new Map<number, number>();
              maps.set(s.key, m);
              if (s.op === 'mapPut') {
                map.put(s.uk, ++seq);
                m.set(s.uk, seq);
              } else {
                map.clear();
                m.clear();
              }
            }
          }
          await kb.flush();
          // The buffer is empty now: every read below is LevelDB's answer.
          expect(kb.store.bufferEmpty).toBe(true);
          for (let k = 0; k < 400; k++) {
            kb.setCurrentKey(`key-${k}`);
            expect(value.value()).toBe(values.get(k) ?? null);
          }
          for (const [k, m] of maps) {
            kb.setCurrentKey(`key-${k}`);
            const got = new Map<number, number>();
            for await (const [uk2, v] of map.entries()) got.set(uk2, v);
            expect(got).toEqual(m);
            expect(map.isEmpty()).toBe(m.size === 0);
          }
          await checkCountRows(kb);
        } finally {
          await kb.close();
        }
      }),
      { numRuns: 40 },
    );
  });

  it('a layer that grew while LevelDB was busy goes to LevelDB when the write completes, without waiting for another write', async () => {
    const kb = await create(1 << 20); // layers seal at 64 KiB while LevelDB is idle
    try {
      const value = kb.getState(vd);
      const internals = kb.store as unknown as { active: { bytes: number }; sealed: unknown[] };
      let n = 0;
      // Until the first layer is sealed and its write starts...
      while (internals.sealed.length === 0) {
        kb.setCurrentKey(`k${n}`);
        value.update(n++);
      }
      // ...then another 64 KiB and more in the same synchronous burst: the active layer grows, the write is in flight.
      const start = n;
      while (internals.active.bytes < 80 * 1024) {
        kb.setCurrentKey(`k${n}`);
        value.update(n++);
      }
      expect(internals.sealed.length).toBe(1);
      // No more writes: only reads from here on. The first write's completion seals the active layer.
      for (let i = 0; i < 1000 && internals.active.bytes > 0; i++) await new Promise((r) => setImmediate(r));
      expect(internals.active.bytes).toBe(0);
      for (let i = 0; i < 1000 && internals.sealed.length > 0; i++) await new Promise((r) => setImmediate(r));
      expect(internals.sealed.length).toBe(0);
      expect(kb.store.bufferEmpty).toBe(true);
      for (const k of [0, start - 1, start, n - 1]) {
        kb.setCurrentKey(`k${k}`);
        expect(value.value()).toBe(k);
      }
    } finally {
      await kb.close();
    }
  });

  it('map counts stay exact while a layer resolves its blind puts and while its batch is being written', async () => {
    const kb = await create(1 << 20); // layers are sealed only by flush() here
    try {
      const map = kb.getState(md);
      kb.setCurrentKey('a');
      map.put(1, 1);
      map.put(2, 2);
      await kb.flush(); // LevelDB: entries 1, 2 and count 2
      map.put(2, 20); // blind: existed
      map.put(3, 30); // blind: new
      const stateId = kb.catalog.get('m')?.stateId as number;
      const countKey = encodeRowKey(
        keyGroupForKey('a', stringSerializer, MAX_P),
        countRowStateId(stateId),
        Buffer.from('a'),
        Buffer.from(''),
      );
      const count = (): number => kb.store.mapCount(countKey.toString('latin1'), countKey).count;
      expect(count()).toBe(3);
      map.put(4, 40); // blind again, after the others were resolved synchronously
      const flushed = kb.flush();
      // The layer now waits for hasMany (which cannot complete before a macrotask): resolve synchronously meanwhile.
      for (let i = 0; i < 5; i++) await new Promise<void>((r) => queueMicrotask(r));
      expect(count()).toBe(4);
      await flushed;
      expect(count()).toBe(4);
      // A layer whose batch is in flight: block the event loop long enough for LevelDB to apply it
      // before the layer is dropped from the buffer; the count must not add its delta twice.
      map.remove(1);
      map.put(5, 50);
      map.put(6, 60);
      expect(count()).toBe(5);
      const second = kb.flush();
      for (;;) {
        await new Promise((r) => setImmediate(r));
        const sealed = (kb.store as unknown as { sealed: { counts: Map<string, { absolute: unknown }> }[] }).sealed;
        if (sealed.length === 0 || [...sealed[0].counts.values()].some((d) => d.absolute !== null)) break;
      }
      const until = Date.now() + 50;
      while (Date.now() < until) {
        // busy wait: the batch write runs on the thread pool
      }
      expect(count()).toBe(5);
      await second;
      expect(count()).toBe(5);
      await checkCountRows(kb);
    } finally {
      await kb.close();
    }
  });

  it('an incremental snapshot holds exactly the state of its point while later writes go on into the buffer', async () => {
    const storage = localCheckpointStorage(join(root, 'checkpoints'), { inlineThreshold: 0 });
    const kb = await create(2048);
    try {
      const value = kb.getState(vd);
      const map = kb.getState(md);
      for (let i = 0; i < 200; i++) {
        kb.setCurrentKey(`k${i}`);
        value.update(i);
        map.put(i, i);
      }
      const task = await kb.snapshot(1, { type: 'checkpoint', streams: storage.checkpointStreams('job', 1) });
      // After the snapshot point, before its files are linked: many layers' worth of changes.
      for (let i = 0; i < 300; i++) {
        kb.setCurrentKey(`k${i}`);
        value.update(1000 + i);
        map.clear();
        expect(map.isEmpty()).toBe(true);
      }
      kb.setCurrentKey('k7');
      expect(value.value()).toBe(1007);
      const handle = await task.done;
      expect(handle).not.toBeNull();
      kb.setCurrentKey('k250');
      expect(value.value()).toBe(1250);
      // The later writes reach LevelDB once the snapshot let go of them.
      await kb.flush();
      kb.setCurrentKey('k7');
      expect(value.value()).toBe(1007);
      await checkCountRows(kb);

      const pointer = storage.checkpointPointer('job', 1);
      await storage.writeMetadata(pointer, {
        checkpointId: 1,
        jobId: 'job',
        kind: 'checkpoint',
        format: 'native',
        backend: 'leveldb',
        timestamp: Date.now(),
        operators: [
          {
            operatorId: 'op',
            parallelism: 1,
            maxParallelism: MAX_P,
            subtasks: [{ subtaskIndex: 0, keyed: [handle as KeyedStateHandle], operator: [] }],
          },
        ],
      });
      const { files } = await storage.resolve(pointer);
      const restored = await create(1 << 20, undefined, {
        handles: [handle as KeyedStateHandle],
        files,
        mode: 'no-claim',
        checkpointId: 1,
      });
      try {
        const v2 = restored.getState(vd);
        const m2 = restored.getState(md);
        for (let i = 0; i < 300; i++) {
          restored.setCurrentKey(`k${i}`);
          expect(v2.value()).toBe(i < 200 ? i : null);
          expect(m2.isEmpty()).toBe(i >= 200);
          expect(m2.get(i)).toBe(i < 200 ? i : null);
        }
      } finally {
        await restored.close();
      }
    } finally {
      await kb.close();
    }
  });
});
