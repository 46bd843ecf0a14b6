import { describe, expect, it } from 'vitest';
import {
  Channel,
  InputGate,
  type BarrierElement,
  type GateBarrier,
  type StreamElement,
} from '../../src/testing/index.js';

/** The input gate and channels per alignment (src/testing/channels.ts): what is blocked, overtaken and recorded. */

const rec = (value: string): StreamElement<string> => ({ kind: 'record', value, origin: { partition: 0, offset: 0 } });
const barrier = (checkpointId: number, extra: Partial<BarrierElement> = {}): BarrierElement => ({
  kind: 'barrier',
  checkpointId,
  ...extra,
});
const values = (m: ReadonlyMap<number, readonly { value: string }[]> | undefined) =>
  Object.fromEntries(
    [...(m ?? new Map<number, readonly { value: string }[]>())].map(([c, rs]) => [c, rs.map((r) => r.value)]),
  );

describe('channels', () => {
  it('number records in push order; a priority barrier overtakes queued records but never an earlier barrier', () => {
    const c = new Channel<string>(10);
    c.push(rec('a'));
    c.push(barrier(1));
    c.push(rec('b'));
    c.push(rec('c'));
    const overtaken = c.pushPriority(barrier(2, { alignment: 'unaligned' }));
    expect(overtaken.map((r) => [r.value, r.seq])).toEqual([
      ['b', 1],
      ['c', 2],
    ]);
    const order: string[] = [];
    while (c.size > 0) {
      const e = c.shift();
      order.push(e.kind === 'record' ? e.value : `|${e.checkpointId}`);
    }
    expect(order).toEqual(['a', '|1', '|2', 'b', 'c']);
  });

  it('takeBarrier returns every record ahead of the barrier (also before an older barrier) and removes only that barrier', () => {
    const c = new Channel<string>(10);
    c.push(rec('a'));
    c.push(barrier(1));
    c.push(rec('b'));
    c.push(barrier(2));
    c.push(rec('after'));
    expect(c.hasBarrier(2)).toBe(true);
    expect(c.takeBarrier(2)?.map((r) => r.value)).toEqual(['a', 'b']);
    expect(c.hasBarrier(2)).toBe(false);
    expect(c.takeBarrier(2)).toBeNull();
    expect(c.size).toBe(4);
  });
});

describe('InputGate: unaligned', () => {
  it('snapshots at the first barrier, records the other channels until their barrier, blocks nothing', () => {
    const a = new Channel<string>(10);
    const b = new Channel<string>(10);
    const gate = new InputGate([a, b]);
    a.push(barrier(1, { alignment: 'unaligned' }));
    a.push(rec('a-after'));
    b.push(rec('b-before'));
    const first = gate.poll(0) as GateBarrier<string>;
    expect(first).toMatchObject({ kind: 'barrier', checkpointId: 1, unaligned: true });
    expect(first.inFlight).toBeUndefined(); // b is still recorded
    expect(gate.isReadable(0)).toBe(true); // not blocked
    expect(gate.poll(0)).toMatchObject({ value: 'a-after' }); // after the barrier: not recorded
    expect(gate.poll(1)).toMatchObject({ value: 'b-before' });
    b.push(rec('b-before-2'));
    expect(gate.poll(1)).toMatchObject({ value: 'b-before-2' });
    b.push(barrier(1, { alignment: 'unaligned' }));
    const last = gate.poll(1) as GateBarrier<string>;
    expect(last).toMatchObject({ snapshot: false, unaligned: true });
    expect(values(last.inFlight)).toEqual({ 1: ['b-before', 'b-before-2'] });
    expect(gate.recordingInFlight).toBe(false);
  });

  it('a barrier already queued on another channel overtakes what is ahead of it at once', () => {
    const a = new Channel<string>(10);
    const b = new Channel<string>(10);
    const gate = new InputGate([a, b]);
    b.push(rec('x'));
    b.push(rec('y'));
    b.push(barrier(4, { alignment: 'unaligned' }));
    a.push(barrier(4, { alignment: 'unaligned' }));
    const out = gate.poll(0) as GateBarrier<string>;
    expect(values(out.inFlight)).toEqual({ 1: ['x', 'y'] });
    // x and y are still processed (after the snapshot); the barrier is gone from b.
    expect(gate.poll(1)).toMatchObject({ value: 'x' });
    expect(gate.poll(1)).toMatchObject({ value: 'y' });
    expect(b.size).toBe(0);
  });
});

describe('InputGate: aligned with a timeout', () => {
  it('before the timeout it aligns; timeOut switches a pending alignment to unaligned and unblocks', () => {
    let now = 0;
    const a = new Channel<string>(10);
    const b = new Channel<string>(10);
    const gate = new InputGate([a, b], () => now);
    a.push(barrier(2, { alignment: 'aligned', timeoutAt: 10 }));
    a.push(rec('a-after'));
    b.push(rec('b-before'));
    expect(gate.poll(0)).toBeNull();
    expect(gate.isReadable(0)).toBe(false); // aligned: blocked
    expect(gate.timeOut(2)).toMatchObject({ checkpointId: 2, unaligned: true }); // the runtime calls it once the timeout passed
    now = 10;
    expect(gate.isReadable(0)).toBe(true);
    expect(gate.poll(1)).toMatchObject({ value: 'b-before' }); // recorded: b's barrier has not come
    b.push(barrier(2, { alignment: 'aligned', timeoutAt: 10 })); // past its timeout: counts as unaligned
    expect(values((gate.poll(1) as GateBarrier<string>).inFlight)).toEqual({ 1: ['b-before'] });
  });

  it('a barrier stuck behind a backlog (a single-input task that has not seen it) overtakes it on timeout', () => {
    const c = new Channel<string>(3);
    const gate = new InputGate([c]);
    for (const v of ['r1', 'r2', 'r3']) c.push(rec(v));
    c.push(barrier(5, { alignment: 'aligned', timeoutAt: 3 }));
    expect(gate.timeOut(6)).toBeNull(); // no such barrier here
    const out = gate.timeOut(5)!;
    expect(out).toMatchObject({ checkpointId: 5, unaligned: true });
    expect(values(out.inFlight)).toEqual({ 0: ['r1', 'r2', 'r3'] });
    expect(c.hasBarrier(5)).toBe(false);
    expect(gate.timeOut(5)).toBeNull();
  });

  it('restored in-flight records are read before any channel', () => {
    const c = new Channel<string>(3);
    const gate = new InputGate([c]);
    c.push(rec('new'));
    gate.recover([rec('old-1'), rec('old-2')] as never);
    expect(gate.isReadable(0)).toBe(false);
    expect(gate.isReadable(-1)).toBe(true);
    expect(gate.poll(-1)).toMatchObject({ value: 'old-1' });
    expect(gate.poll(-1)).toMatchObject({ value: 'old-2' });
    expect(gate.isReadable(-1)).toBe(false);
    expect(gate.poll(0)).toMatchObject({ value: 'new' });
  });
});

describe('InputGate: at-least-once', () => {
  it('never blocks; yields the barrier once every channel delivered it, records after it on early channels included', () => {
    const a = new Channel<string>(10);
    const b = new Channel<string>(10);
    const gate = new InputGate([a, b]);
    a.push(barrier(3, { alignment: 'at-least-once' }));
    a.push(rec('a-after'));
    b.push(rec('b-before'));
    b.push(barrier(3, { alignment: 'at-least-once' }));
    expect(gate.poll(0)).toBeNull();
    expect(gate.isReadable(0)).toBe(true);
    expect(gate.poll(0)).toMatchObject({ value: 'a-after' }); // processed before the snapshot: a duplicate after a restore
    expect(gate.poll(1)).toMatchObject({ value: 'b-before' });
    expect(gate.poll(1)).toMatchObject({ kind: 'barrier', checkpointId: 3, alignment: 'at-least-once' });
  });
});
