import { describe, expect, it } from 'vitest';
import { stringSerializer } from '../../../serializers/builtins.js';
import { listState, mapState, valueState, type TtlConfig } from '../../../state/descriptors.js';
import { collect } from '../harness.js';
import { expectThrowsCode } from '../expect-code.js';
import type { SuiteContext } from '../context.js';

/** A processing-time clock the test moves by hand. */
class FakeClock {
  constructor(public now = 1_000_000) {}
  readonly read = (): number => this.now;
  advance(ms: number): void {
    this.now += ms;
  }
}

const TTL: TtlConfig = { ttlMs: 100 };

/** TTL basics with a fake clock through params.clock (reference §1.3, §10 item 8). */
export function ttlTests(ctx: SuiteContext): void {
  describe.skipIf(!ctx.supports.ttl)('TTL', () => {
    async function backend(clock: FakeClock) {
      return ctx.h.createKeyed({ keySerializer: stringSerializer, clock: clock.read });
    }

    it('a value expires ttlMs after its last write; writes refresh it; the default value is ignored', async () => {
      const clock = new FakeClock();
      const b = await backend(clock);
      const s = b.getState(valueState<string>('v', { ttl: TTL, defaultValue: 'dflt' }));
      b.setCurrentKey('k');
      expect(s.value()).toBeNull();
      s.update('a');
      clock.advance(60);
      expect(s.value()).toBe('a');
      s.update('b'); // refreshes the timestamp
      clock.advance(60);
      expect(s.value()).toBe('b');
      clock.advance(50);
      expect(s.value()).toBeNull();
    });

    it('onReadAndWrite: reads refresh the timestamp too', async () => {
      const clock = new FakeClock();
      const b = await backend(clock);
      const s = b.getState(valueState<string>('v', { ttl: { ttlMs: 100, update: 'onReadAndWrite' } }));
      b.setCurrentKey('k');
      s.update('a');
      for (let i = 0; i < 5; i++) {
        clock.advance(60);
        expect(s.value()).toBe('a');
      }
      clock.advance(150);
      expect(s.value()).toBeNull();
    });

    it('a mutable value can be updated and read', async () => {
      const clock = new FakeClock();
      const b = await backend(clock);
      const s = b.getState(valueState<{ n: number[] }>('obj', { ttl: TTL }));
      b.setCurrentKey('k');
      s.update({ n: [1] });
      const v = s.value();
      s.update({ n: [...(v?.n ?? []), 2] });
      expect(s.value()).toEqual({ n: [1, 2] });
    });

    it('list elements and map entries expire individually', async () => {
      const clock = new FakeClock();
      const b = await backend(clock);
      const l = b.getState(listState<string>('l', { ttl: TTL }));
      const m = b.getState(mapState<string, number>('m', { ttl: TTL }));
      b.setCurrentKey('k');
      l.add('early');
      m.put('early', 1);
      clock.advance(60);
      l.add('late');
      m.put('late', 2);
      clock.advance(60);
      expect(l.get()).toEqual(['late']);
      expect(m.get('early')).toBeNull();
      expect(m.contains('early')).toBe(false);
      expect(m.get('late')).toBe(2);
      expect(await collect(m.entries())).toEqual([['late', 2]]);
      clock.advance(60);
      expect(l.get()).toBeNull();
      expect(m.isEmpty()).toBe(true);
    });

    it('timestamps survive snapshot/restore; expired entries do not come back', async () => {
      const clock = new FakeClock();
      const b = await backend(clock);
      const d = valueState<string>('v', { ttl: TTL });
      const s = b.getState(d);
      b.setCurrentKey('old');
      s.update('old');
      clock.advance(80);
      b.setCurrentKey('young');
      s.update('young');
      clock.advance(40); // 'old' is expired now, 'young' is 40 ms old
      const r = await ctx.h.snapshotAndRestore(b, { clock: clock.read });
      const rs = r.getState(d);
      r.setCurrentKey('old');
      expect(rs.value()).toBeNull();
      r.setCurrentKey('young');
      expect(rs.value()).toBe('young');
      clock.advance(70);
      expect(rs.value()).toBeNull();
    });

    it('SERIALIZER_INCOMPATIBLE when TTL is switched on or off across a restore', async () => {
      const clock = new FakeClock();
      const b = await backend(clock);
      b.setCurrentKey('k');
      b.getState(valueState<string>('with', { ttl: TTL })).update('x');
      b.getState(valueState<string>('without')).update('y');
      const pointer = await ctx.h.checkpoint([b]);
      const r = await ctx.h.restoreKeyedSubtask(pointer, 0, { keySerializer: stringSerializer, clock: clock.read });
      r.setCurrentKey('k');
      expectThrowsCode(() => r.getState(valueState<string>('with')).value(), 'SERIALIZER_INCOMPATIBLE');
      expectThrowsCode(
        () => r.getState(valueState<string>('without', { ttl: TTL })).value(),
        'SERIALIZER_INCOMPATIBLE',
      );
    });
  });
}
