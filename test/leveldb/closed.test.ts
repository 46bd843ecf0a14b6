import { afterAll, describe, expect, it } from 'vitest';
import { SnapshotError, StateRegistrationError, StreamStateError } from '../../src/errors.js';
import { aggregatingState, listState, mapState, reducingState, valueState } from '../../src/state/descriptors.js';
import { float64Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { GatedStreamFactory } from '../support/gated-streams.js';
import { LevelRig } from './support.js';

/**
 * After close() every state access and every backend method of the LevelDB backend throws
 * BACKEND_CLOSED as a typed StreamStateError (docs/ERRORS.md): no stale value of the last key,
 * no classic-level error (LEVEL_DATABASE_NOT_OPEN, LEVEL_ITERATOR_NOT_OPEN) reaching the caller.
 */

const rig = new LevelRig();
afterAll(() => rig.cleanup());

/** What `fn` threw (sync or async), or 'nothing'. */
async function failure(fn: () => unknown): Promise<unknown> {
  try {
    const r = fn();
    if (r !== null && typeof r === 'object' && Symbol.asyncIterator in r) {
      for await (const _ of r as AsyncIterable<unknown>) break;
    } else await r;
  } catch (err) {
    return err;
  }
  return 'nothing';
}

function expectClosed(err: unknown, what: string): void {
  expect({ what, typed: err instanceof StreamStateError, code: (err as StreamStateError)?.code }).toEqual({
    what,
    typed: true,
    code: 'BACKEND_CLOSED',
  });
}

async function populated() {
  const kb = await rig.create();
  const value = kb.getState(valueState<number>('v', { serializer: float64Serializer }));
  const list = kb.getState(listState<number>('l', { serializer: float64Serializer }));
  const map = kb.getState(
    mapState<string, number>('m', { keySerializer: stringSerializer, valueSerializer: float64Serializer }),
  );
  const red = kb.getState(reducingState<number>('r', (a, b) => a + b, { serializer: float64Serializer }));
  const agg = kb.getState(
    aggregatingState<number, number, number>(
      'a',
      { createAccumulator: () => 0, add: (v, acc) => v + acc, getResult: (acc) => acc, merge: (x, y) => x + y },
      { accumulatorSerializer: float64Serializer },
    ),
  );
  const timers = kb.getTimerQueue('t');
  for (const k of ['a', 'b', 'c']) {
    kb.setCurrentKey(k);
    value.update(1);
    list.add(1);
    map.put('x', 1);
    red.add(1);
    agg.add(1);
    timers.add({ timestamp: 5, key: k, namespace: '' });
  }
  await kb.flush();
  return { kb, value, list, map, red, agg, timers };
}

describe('leveldb after close()', () => {
  it('every state access throws BACKEND_CLOSED, also for the key that was current', async () => {
    const { kb, value, list, map, red, agg, timers } = await populated();
    kb.setCurrentKey('c');
    await kb.close();
    const calls: Record<string, () => unknown> = {
      'value()': () => value.value(),
      'update()': () => value.update(2),
      'clear()': () => value.clear(),
      'list get()': () => list.get(),
      'list add()': () => list.add(2),
      'list addAll()': () => list.addAll([2]),
      'list update()': () => list.update([2]),
      'list merge': () => list.mergeNamespaces('x', ['y']),
      'map get()': () => map.get('x'),
      'map put()': () => map.put('x', 2),
      'map contains()': () => map.contains('x'),
      'map remove()': () => map.remove('x'),
      'map isEmpty()': () => map.isEmpty(),
      'map clear()': () => map.clear(),
      'map entries()': () => map.entries(),
      'map keys()': () => map.keys(),
      'map values()': () => map.values(),
      'reducing get()': () => red.get(),
      'reducing add()': () => red.add(1),
      'aggregating get()': () => agg.get(),
      'aggregating add()': () => agg.add(1),
      'timer add()': () => timers.add({ timestamp: 6, key: 'a', namespace: '' }),
      'timer peek()': () => timers.peek(),
      'timer poll()': () => timers.poll(),
      'timer size': () => timers.size,
      'timer iterate': () => [...timers],
    };
    for (const [what, fn] of Object.entries(calls)) expectClosed(await failure(fn), what);
  });

  it('every backend method throws BACKEND_CLOSED', async () => {
    const { kb } = await populated();
    kb.setCurrentKey('a');
    await kb.close();
    const streams = rig.storage.checkpointStreams('job', 999);
    const calls: Record<string, () => unknown> = {
      setCurrentKey: () => kb.setCurrentKey('b'),
      getCurrentKey: () => kb.getCurrentKey(),
      currentKeyGroup: () => kb.currentKeyGroup,
      getState: () => kb.getState(valueState<number>('v2', { serializer: float64Serializer })),
      'getState (registered)': () => kb.getState(valueState<number>('v', { serializer: float64Serializer })),
      getTimerQueue: () => kb.getTimerQueue('t2'),
      getKeys: () => kb.getKeys('v', ''),
      getKeysAndNamespaces: () => kb.getKeysAndNamespaces('v'),
      applyToAllKeys: () =>
        kb.applyToAllKeys('', valueState<number>('v', { serializer: float64Serializer }), () => undefined),
      numEntries: () => kb.numEntries(),
      stateNames: () => kb.stateNames(),
      snapshot: () => kb.snapshot(1, { type: 'checkpoint', streams }),
      flush: () => kb.flush(),
    };
    for (const [what, fn] of Object.entries(calls)) expectClosed(await failure(fn), what);
    await kb.close(); // a second close is a no-op
  });

  it('a map iteration running when the backend closes ends with BACKEND_CLOSED', async () => {
    const kb = await rig.create();
    const map = kb.getState(
      mapState<string, number>('m', { keySerializer: stringSerializer, valueSerializer: float64Serializer }),
    );
    kb.setCurrentKey('k');
    for (let i = 0; i < 5000; i++) map.put(`e${String(i).padStart(5, '0')}`, i);
    await kb.flush();
    const it = map.entries()[Symbol.asyncIterator]();
    expect((await it.next()).done).toBe(false);
    await kb.close();
    let err: unknown = 'nothing';
    try {
      for (let r = await it.next(); !r.done; r = await it.next());
    } catch (e) {
      err = e;
    }
    expectClosed(err, 'entries() after close');
  });

  it('a snapshot cancelled by close() fails with SnapshotError SNAPSHOT_CANCELLED', async () => {
    const kb = await rig.create({}, { incremental: false });
    const value = kb.getState(valueState<number>('v', { serializer: float64Serializer }));
    for (let i = 0; i < 100; i++) {
      kb.setCurrentKey(`k${i}`);
      value.update(i);
    }
    const gated = new GatedStreamFactory(rig.storage.checkpointStreams('job', 500));
    const task = await kb.snapshot(500, { type: 'checkpoint', streams: gated });
    await gated.reached;
    const outcome = task.done.then(
      () => 'completed',
      (e: unknown) => e,
    );
    await kb.close();
    const err = await outcome;
    expect(err).toBeInstanceOf(SnapshotError);
    expect((err as SnapshotError).code).toBe('SNAPSHOT_CANCELLED');
  });

  it('a state name registered again as another kind is a StateRegistrationError', async () => {
    const kb = await rig.create();
    kb.getState(valueState<number>('s', { serializer: float64Serializer }));
    const err = await failure(() => kb.getState(listState<number>('s', { serializer: float64Serializer })));
    expect(err).toBeInstanceOf(StateRegistrationError);
    expect((err as StreamStateError).code).toBe('STATE_KIND_MISMATCH');
    await kb.close();
  });
});
