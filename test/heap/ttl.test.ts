import { describe, expect, it } from 'vitest';
import { stringSerializer } from '../../src/serializers/builtins.js';
import {
  aggregatingState,
  listState,
  mapState,
  reducingState,
  valueState,
  type TtlConfig,
} from '../../src/state/descriptors.js';
import { isExpired, ttlSerializer } from '../../src/state/ttl.js';
import { FakeClock, Rig, collect, thrown } from './support.js';

const TTL: TtlConfig = { ttlMs: 100 };

async function setup(clock: FakeClock) {
  const rig = new Rig();
  const b = await rig.create({ clock: clock.read });
  b.setCurrentKey('k');
  return { rig, b };
}

describe('TTL', () => {
  it('ttlSerializer stores f64 timestamp + inner bytes and isExpired uses ts + ttl <= now', () => {
    const s = ttlSerializer(stringSerializer);
    const bytes = Buffer.from(s.serialize({ v: 'hi', ts: 1234.5 }));
    expect(bytes.readDoubleBE(0)).toBe(1234.5);
    expect(bytes.subarray(8).toString()).toBe('hi');
    expect(s.deserialize(bytes)).toEqual({ v: 'hi', ts: 1234.5 });
    expect(s.id).toBe('streamstate.ttl');
    expect(s.config).toEqual({ id: 'streamstate.string', version: 1 });
    expect(isExpired({ v: 1, ts: 0 }, TTL, 99)).toBe(false);
    expect(isExpired({ v: 1, ts: 0 }, TTL, 100)).toBe(true);
  });

  it('value: expires after ttl since the last write; reads do not refresh by default', async () => {
    const clock = new FakeClock();
    const { b } = await setup(clock);
    const v = b.getState(valueState<string>('v', { ttl: TTL, defaultValue: 'ignored-with-ttl' }));
    expect(v.value()).toBeNull();
    v.update('a');
    clock.advance(60);
    expect(v.value()).toBe('a');
    clock.advance(40);
    expect(v.value()).toBeNull();
    expect(await b.numEntries()).toBe(0); // cleaned up on read
  });

  it('onReadAndWrite refreshes on read; returnExpiredIfNotCleanedUp returns the expired value once', async () => {
    const clock = new FakeClock();
    const { b } = await setup(clock);
    const r = b.getState(valueState<string>('r', { ttl: { ttlMs: 100, update: 'onReadAndWrite' } }));
    r.update('x');
    for (let i = 0; i < 5; i++) {
      clock.advance(90);
      expect(r.value()).toBe('x');
    }
    const e = b.getState(valueState<string>('e', { ttl: { ttlMs: 100, visibility: 'returnExpiredIfNotCleanedUp' } }));
    e.update('old');
    clock.advance(150);
    expect(e.value()).toBe('old');
    expect(e.value()).toBeNull();
  });

  it('list elements and map entries expire individually', async () => {
    const clock = new FakeClock();
    const { b } = await setup(clock);
    const l = b.getState(listState<string>('l', { ttl: TTL }));
    const m = b.getState(mapState<string, number>('m', { ttl: TTL }));
    l.add('early');
    m.put('early', 1);
    clock.advance(60);
    l.addAll(['late', 'later']);
    m.put('late', 2);
    clock.advance(60);
    expect(l.get()).toEqual(['late', 'later']);
    expect(m.get('early')).toBeNull();
    expect(m.contains('late')).toBe(true);
    expect(await collect(m.entries())).toEqual([['late', 2]]);
    expect(m.isEmpty()).toBe(false);
    clock.advance(60);
    expect(m.isEmpty()).toBe(true);
    expect(l.get()).toBeNull();
    expect(thrown(() => l.add(null as unknown as string)).code).toBe('NULL_NOT_ALLOWED');
  });

  it('reducing and aggregating restart from scratch once expired', async () => {
    const clock = new FakeClock();
    const { b } = await setup(clock);
    const r = b.getState(reducingState<number>('sum', (a, c) => a + c, { ttl: TTL }));
    const a = b.getState(
      aggregatingState<number, { s: number }, number>(
        'agg',
        {
          createAccumulator: () => ({ s: 0 }),
          add: (x, acc) => ((acc.s += x), acc),
          getResult: (acc) => acc.s,
          merge: (x, y) => ({ s: x.s + y.s }),
        },
        { ttl: TTL },
      ),
    );
    r.add(5);
    a.add(5);
    clock.advance(50);
    r.add(6);
    a.add(6);
    expect([r.get(), a.get()]).toEqual([11, 11]);
    clock.advance(99); // last write 99 ms ago
    expect([r.get(), a.get()]).toEqual([11, 11]);
    clock.advance(1);
    r.add(1);
    a.add(1);
    expect([r.get(), a.get()]).toEqual([1, 1]);
  });

  it('full snapshots drop expired entries unless cleanupInFullSnapshot is false', async () => {
    const clock = new FakeClock();
    const { rig, b } = await setup(clock);
    const dropped = valueState<string>('dropped', { ttl: TTL });
    const kept = valueState<string>('kept', { ttl: { ttlMs: 100, cleanupInFullSnapshot: false } });
    const l = listState<string>('l', { ttl: TTL });
    for (let i = 0; i < 10; i++) {
      b.setCurrentKey(`k${i}`);
      b.getState(dropped).update('x');
      b.getState(kept).update('x');
      b.getState(l).add('old');
    }
    clock.advance(150);
    b.setCurrentKey('k0');
    b.getState(dropped).update('fresh');
    b.getState(l).add('fresh');
    const r = await rig.snapshotAndRestore(b, { clock: clock.read });
    // Counted from the raw restored sections: 1 fresh value + 10 kept (expired but not dropped) + 1 list.
    expect(await r.numEntries()).toBe(12);
    r.setCurrentKey('k0');
    expect(r.getState(l).get()).toEqual(['fresh']);
  });

  it('TTL cannot be switched on or off across a restore', async () => {
    const clock = new FakeClock();
    const { rig, b } = await setup(clock);
    b.getState(valueState<string>('with', { ttl: TTL })).update('a');
    b.getState(valueState<string>('without')).update('b');
    const r = await rig.snapshotAndRestore(b, { clock: clock.read });
    expect(thrown(() => r.getState(valueState<string>('with'))).code).toBe('SERIALIZER_INCOMPATIBLE');
    expect(thrown(() => r.getState(valueState<string>('without', { ttl: TTL }))).code).toBe('SERIALIZER_INCOMPATIBLE');
    // Changing only the duration is fine.
    const longer = r.getState(valueState<string>('with', { ttl: { ttlMs: 10_000 } }));
    r.setCurrentKey('k');
    expect(longer.value()).toBe('a');
  });
});
