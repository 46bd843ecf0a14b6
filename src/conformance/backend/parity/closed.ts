import { describe, expect } from 'vitest';
import { stringSerializer } from '../../../serializers/builtins.js';
import { aggregatingState, listState, mapState, reducingState, valueState } from '../../../state/descriptors.js';
import { collect } from '../harness.js';
import { expectRejectsDocumented, expectThrowsDocumented } from './error-classes.js';
import { parityIt, type ParityContext } from './parity-context.js';

/**
 * The closed-backend rule (docs/SEMANTICS.md, "Closed backends"): after close() every state
 * access and every backend method throws BACKEND_CLOSED (a StreamStateError), typed, on every
 * backend; nothing returns stale data. close() is idempotent; checkpoint notifications that
 * arrive after close() are ignored (they are best-effort by contract).
 */
export function closedBackendTests(p: ParityContext): void {
  describe('after close()', () => {
    const sum = {
      createAccumulator: () => 0,
      add: (v: number, a: number) => a + v,
      getResult: (a: number) => a,
      merge: (a: number, b: number) => a + b,
    };

    async function writtenAndClosed() {
      const b = await p.stringKeyed();
      const v = b.getState(valueState<string>('v', { serializer: stringSerializer }));
      // a TTL state where the backend has TTL: its handles are other objects on some backends
      const t = b.getState(
        valueState<string>('t', { serializer: stringSerializer, ...(p.supports.ttl ? { ttl: { ttlMs: 1e9 } } : {}) }),
      );
      const l = b.getState(listState<string>('l', { serializer: stringSerializer }));
      const m = b.getState(
        mapState<string, string>('m', { keySerializer: stringSerializer, valueSerializer: stringSerializer }),
      );
      const r = b.getState(reducingState<number>('r', (x, y) => x + y));
      const a = b.getState(aggregatingState<number, number, number>('a', sum));
      const timers = b.getTimerQueue('timers');
      b.setCurrentKey('k');
      v.update('stale');
      t.update('stale');
      l.add('stale');
      m.put('stale', 'stale');
      r.add(1);
      a.add(1);
      timers.add({ timestamp: 5, key: 'k', namespace: '' });
      await p.h.close(b);
      return { b, v, t, l, m, r, a, timers };
    }

    parityIt(p, 'closed.backend-methods', 'every keyed backend method throws BACKEND_CLOSED', async () => {
      const { b } = await writtenAndClosed();
      const calls: Array<[string, () => unknown]> = [
        ['setCurrentKey', () => b.setCurrentKey('k')],
        ['getCurrentKey', () => b.getCurrentKey()],
        ['currentKeyGroup', () => b.currentKeyGroup],
        ['getState (registered)', () => b.getState(valueState<string>('v', { serializer: stringSerializer }))],
        ['getState (new)', () => b.getState(valueState<string>('new'))],
        ['getTimerQueue', () => b.getTimerQueue('timers')],
        ['stateNames', () => b.stateNames()],
      ];
      for (const [what, call] of calls) {
        try {
          expectThrowsDocumented(call, 'BACKEND_CLOSED');
        } catch (err) {
          throw new Error(`${what}: ${(err as Error).message}`);
        }
      }
      await expectRejectsDocumented(() => b.numEntries(), 'BACKEND_CLOSED');
      await expectRejectsDocumented(() => collect(b.getKeys('v', '')), 'BACKEND_CLOSED');
      await expectRejectsDocumented(() => collect(b.getKeysAndNamespaces('v')), 'BACKEND_CLOSED');
      await expectRejectsDocumented(
        () => b.applyToAllKeys('', valueState<string>('v', { serializer: stringSerializer }), () => undefined),
        'BACKEND_CLOSED',
      );
      await expectRejectsDocumented(
        () => b.snapshot(99, { type: 'checkpoint', streams: p.h.storage.checkpointStreams(p.h.jobId, 99) }),
        'BACKEND_CLOSED',
      );
    });

    parityIt(
      p,
      'closed.state-handles',
      'every state handle and timer queue obtained before close() throws BACKEND_CLOSED, never stale data',
      async () => {
        const { v, t, l, m, r, a, timers } = await writtenAndClosed();
        const calls: Array<() => unknown> = [
          () => v.value(),
          () => v.update('x'),
          () => v.clear(),
          () => v.setCurrentNamespace('other'),
          () => t.value(),
          () => t.update('x'),
          () => l.get(),
          () => l.add('x'),
          () => l.addAll(['x']),
          () => l.update(['x']),
          () => l.mergeNamespaces('a', ['b']),
          () => m.get('stale'),
          () => m.put('x', 'y'),
          () => m.contains('stale'),
          () => m.remove('stale'),
          () => m.isEmpty(),
          () => r.get(),
          () => r.add(1),
          () => a.get(),
          () => a.add(1),
          () => timers.add({ timestamp: 6, key: 'k', namespace: '' }),
          () => timers.peek(),
          () => timers.poll(),
          () => timers.contains({ timestamp: 5, key: 'k', namespace: '' }),
        ];
        for (const call of calls) expectThrowsDocumented(call, 'BACKEND_CLOSED');
        await expectRejectsDocumented(() => collect(m.entries()), 'BACKEND_CLOSED');
        await expectRejectsDocumented(() => collect(m.keys()), 'BACKEND_CLOSED');
      },
    );

    parityIt(p, 'closed.state-handles', 'a map iteration started before close() fails at its next step', async () => {
      const b = await p.stringKeyed();
      const m = b.getState(mapState<string, number>('m'));
      b.setCurrentKey('k');
      for (let i = 0; i < 10; i++) m.put(`e${i}`, i);
      const it = m.entries()[Symbol.asyncIterator]();
      expect((await it.next()).done).toBe(false);
      await p.h.close(b);
      await expectRejectsDocumented(() => it.next(), 'BACKEND_CLOSED');
    });

    parityIt(
      p,
      'closed.notifications',
      'close() is idempotent; late checkpoint notifications are ignored',
      async () => {
        const { b } = await writtenAndClosed();
        await b.close();
        await b.notifyCheckpointComplete(1);
        await b.notifyCheckpointAborted(2);
        expectThrowsDocumented(() => b.setCurrentKey('k'), 'BACKEND_CLOSED');
      },
    );

    parityIt(
      p,
      null,
      'the operator state backend and its handles throw BACKEND_CLOSED',
      async () => {
        const o = await p.h.createOperator();
        const list = o.getListState<string>('list');
        const union = o.getUnionListState<string>('union');
        const bc = o.getBroadcastState(mapState<string, string>('bc'));
        list.add('stale');
        union.add('stale');
        bc.put('stale', 'stale');
        await p.h.close(o);
        for (const call of [
          () => o.getListState('list'),
          () => o.getUnionListState('union'),
          () => o.getBroadcastState(mapState<string, string>('bc')),
          () => o.stateNames(),
          () => list.get(),
          () => list.add('x'),
          () => union.get(),
          () => bc.get('stale'),
          () => bc.put('x', 'y'),
          () => bc.size,
          () => [...bc.entries()],
        ]) {
          expectThrowsDocumented(call, 'BACKEND_CLOSED');
        }
        await expectRejectsDocumented(
          () => o.snapshot(98, { type: 'checkpoint', streams: p.h.storage.checkpointStreams(p.h.jobId, 98) }),
          'BACKEND_CLOSED',
        );
      },
      undefined,
      'operatorState',
    );
  });
}
