import { describe, expect, it } from 'vitest';
import { TimeSlicer } from '../../backends/heap/time-slicer.js';

/**
 * The slicer's CPU budget on a virtual clock: the snapshot's own time (slices and steps it cannot
 * cut) is paid for by others' time before the next slice; idle turns drop the debt; time spent
 * between suspend() and resume() counts as others'.
 */

/** A virtual clock and a competing task that takes `turnMs` of it on every turn of the event loop. */
function world(turnMs: number) {
  let t = 0;
  let running = true;
  let turns = 0;
  const other = (): void => {
    if (!running) return;
    t += turnMs;
    turns++;
    setImmediate(other);
  };
  setImmediate(other);
  return {
    now: () => t,
    advance: (ms: number) => {
      t += ms;
    },
    turns: () => turns,
    stop: () => {
      running = false;
    },
  };
}

describe('TimeSlicer', () => {
  it('after s ms of own work it waits until others had s·(1−share)/share ms', async () => {
    const w = world(2);
    const slicer = new TimeSlicer({ cpuShare: 0.2, maxSliceMs: 4 }, w.now);
    w.advance(3);
    expect(slicer.due()).toBe(false);
    w.advance(1);
    expect(slicer.due()).toBe(true);
    const before = w.now();
    await slicer.yield();
    w.stop();
    // 4 ms of own work at share 0.2 owes 16 ms: eight turns of 2 ms.
    expect(w.now() - before).toBe(16);
    expect(slicer.yields).toBe(8);
    expect(slicer.due()).toBe(false);
  });

  it('a step longer than a slice is paid for in full', async () => {
    const w = world(5);
    const slicer = new TimeSlicer({ cpuShare: 0.5, maxSliceMs: 4 }, w.now);
    w.advance(30); // e.g. one big checksum
    const before = w.now();
    await slicer.yield();
    w.stop();
    expect(w.now() - before).toBe(30);
  });

  it('idle turns drop the debt: with nothing else waiting the work goes on after one turn', async () => {
    const w = world(0);
    const slicer = new TimeSlicer({ cpuShare: 0.1, maxSliceMs: 4 }, w.now);
    w.advance(4);
    await slicer.yield();
    w.stop();
    expect(slicer.yields).toBe(1);
  });

  it('time between suspend() and resume() is others’ time and pays off debt; own time around it adds up', async () => {
    const w = world(1);
    const slicer = new TimeSlicer({ cpuShare: 0.5, maxSliceMs: 4 }, w.now);
    w.advance(2);
    slicer.suspend();
    w.advance(50); // waiting for the store
    slicer.resume();
    expect(slicer.due()).toBe(false); // 2 ms of own work so far
    w.advance(2);
    expect(slicer.due()).toBe(true);
    const before = w.now();
    await slicer.yield();
    w.stop();
    expect(w.now() - before).toBe(4);
  });

  it('cpuShare 1 gives one turn per slice; maxSliceMs Infinity never asks to yield', async () => {
    const w = world(3);
    const full = new TimeSlicer({ cpuShare: 1, maxSliceMs: 4 }, w.now);
    w.advance(4);
    await full.yield();
    expect(full.yields).toBe(1);
    const never = new TimeSlicer({ maxSliceMs: Number.POSITIVE_INFINITY }, w.now);
    w.advance(1e6);
    expect(never.due()).toBe(false);
    w.stop();
  });
});
