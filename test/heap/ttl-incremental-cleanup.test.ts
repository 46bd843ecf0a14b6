import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { listState, mapState, valueState, type TtlConfig } from '../../src/state/descriptors.js';
import { FakeClock, Rig } from './support.js';

/**
 * Incremental TTL cleanup on the heap (Flink's cleanupIncrementally): expired entries must not
 * survive indefinitely once the state is accessed or records flow, even when they are never read.
 */
describe('heap TTL incremental cleanup', () => {
  const N_KEYS = 200;

  async function filled(ttl: TtlConfig) {
    const clock = new FakeClock();
    const b = await new Rig().create({ clock: clock.read });
    const v = b.getState(valueState<number>('v', { ttl }));
    const l = b.getState(listState<number>('l', { ttl }));
    const m = b.getState(mapState<string, number>('m', { ttl }));
    for (let k = 0; k < N_KEYS; k++) {
      b.setCurrentKey(`k${k}`);
      v.update(k);
      l.add(k);
      m.put('a', k);
      m.put('b', k);
    }
    return { b, clock, v, l, m };
  }

  it('per state access: expired values, lists and map entries nobody reads are removed after enough accesses', async () => {
    const { b, clock, v, l, m } = await filled({ ttlMs: 100, cleanupIncrementally: { entries: 3 } });
    expect(await b.numEntries()).toBe(N_KEYS * 4);
    clock.advance(100);
    b.setCurrentKey('reader');
    // Each access checks 3 slots; one full round over N_KEYS slots per state is enough.
    for (let i = 0; i < N_KEYS; i++) {
      v.value();
      l.get();
      m.contains('a');
    }
    expect(await b.numEntries()).toBe(0);
  });

  it('without incremental cleanup the same expired entries stay (the test above can fail)', async () => {
    const { b, clock, v, l, m } = await filled({ ttlMs: 100 });
    clock.advance(100);
    b.setCurrentKey('reader');
    for (let i = 0; i < N_KEYS; i++) {
      v.value();
      l.get();
      m.contains('a');
    }
    expect(await b.numEntries()).toBe(N_KEYS * 4);
  });

  it('per record: setCurrentKey alone drives the cleanup when everyRecord is set', async () => {
    const { b, clock } = await filled({ ttlMs: 100, cleanupIncrementally: { entries: 5, everyRecord: true } });
    clock.advance(100);
    for (let i = 0; i < N_KEYS; i++) b.setCurrentKey(`other-${i}`);
    expect(await b.numEntries()).toBe(0);
  });

  it('never removes live entries, and removes only the expired elements of a list or map', async () => {
    const clock = new FakeClock();
    const b = await new Rig().create({ clock: clock.read });
    const ttl: TtlConfig = { ttlMs: 100, cleanupIncrementally: { entries: 2, everyRecord: true } };
    const l = b.getState(listState<string>('l', { ttl }));
    const m = b.getState(mapState<string, string>('m', { ttl }));
    for (let k = 0; k < 20; k++) {
      b.setCurrentKey(`k${k}`);
      l.add('old');
      m.put('old', 'x');
    }
    clock.advance(60);
    for (let k = 0; k < 20; k++) {
      b.setCurrentKey(`k${k}`);
      l.add('new');
      m.put('new', 'y');
    }
    clock.advance(50); // 'old' expired, 'new' 50 ms old
    for (let i = 0; i < 100; i++) b.setCurrentKey(`other-${i}`);
    expect(await b.numEntries()).toBe(40); // 20 lists + 20 map entries
    for (let k = 0; k < 20; k++) {
      b.setCurrentKey(`k${k}`);
      expect(l.get()).toEqual(['new']);
      expect(m.contains('old')).toBe(false);
      expect(m.get('new')).toBe('y');
    }
  });

  it('a snapshot taken before the cleanup keeps what was there when it was taken', async () => {
    const clock = new FakeClock();
    const rig = new Rig();
    const b = await rig.create({ clock: clock.read });
    const d = valueState<number>('v', {
      ttl: { ttlMs: 100, cleanupInFullSnapshot: false, cleanupIncrementally: { entries: 10, everyRecord: true } },
    });
    const v = b.getState(d);
    for (let k = 0; k < N_KEYS; k++) {
      b.setCurrentKey(`k${k}`);
      v.update(k);
    }
    clock.advance(100);
    const { id, task } = await rig.snapshot(b);
    // The cleanup runs on the live state while the snapshot's asynchronous part is pending.
    for (let i = 0; i < N_KEYS; i++) b.setCurrentKey(`other-${i}`);
    expect(await b.numEntries()).toBe(0);
    const r = await rig.restore(id, [await task.done], { clock: clock.read });
    expect(await r.numEntries()).toBe(N_KEYS);
  });

  it('cleanupIncrementally.entries must be a positive integer (INVALID_ARGUMENT)', () => {
    for (const entries of [0, -1, 1.5, Number.NaN]) {
      expect(() => valueState('v', { ttl: { ttlMs: 100, cleanupIncrementally: { entries } } })).toThrow(
        expect.objectContaining({ code: 'INVALID_ARGUMENT' }),
      );
    }
    expect(() => valueState('v', { ttl: { ttlMs: 100, cleanupIncrementally: false } })).not.toThrow();
  });

  it('model: with cleanup per record, after a full round no expired entry is left and every live one is', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 150 })), {
          minLength: 1,
          maxLength: 60,
        }),
        fc.integer({ min: 1, max: 7 }),
        async (writes, perStep) => {
          const clock = new FakeClock();
          const b = await new Rig().create({ clock: clock.read });
          const v = b.getState(
            valueState<number>('v', {
              ttl: { ttlMs: 100, cleanupIncrementally: { entries: perStep, everyRecord: true } },
            }),
          );
          const writtenAt = new Map<number, number>();
          for (const [key, wait] of writes) {
            clock.advance(wait);
            b.setCurrentKey(`k${key}`);
            v.update(key);
            writtenAt.set(key, clock.now);
          }
          // Enough records to finish the cursor's current round and run one full round more.
          for (let i = 0; i < 2 * writtenAt.size + 2; i++) b.setCurrentKey(`other-${i}`);
          const live = [...writtenAt.values()].filter((t) => t + 100 > clock.now).length;
          expect(await b.numEntries()).toBe(live);
          await b.close();
        },
      ),
      { numRuns: 60 },
    );
  });
});
