import { describe, expect, it } from 'vitest';
import {
  Channel,
  CommittedOutput,
  InputGate,
  SeededRandom,
  checkCounts,
  countingInput,
  type StreamElement,
} from '../../src/testing/index.js';

const rec = (value: string, offset = 0): StreamElement<string> => ({
  kind: 'record',
  value,
  origin: { partition: 0, offset },
});
const barrier = (checkpointId: number): StreamElement<string> => ({ kind: 'barrier', checkpointId });

describe('InputGate barrier alignment', () => {
  it('blocks a channel after its barrier until every channel delivered it', () => {
    const a = new Channel<string>(10);
    const b = new Channel<string>(10);
    const gate = new InputGate([a, b]);
    a.push(barrier(1));
    a.push(rec('a-after'));
    b.push(rec('b-before'));
    b.push(barrier(1));

    expect(gate.poll(0)).toBeNull(); // barrier 1 on a: a blocks
    expect(gate.isReadable(0)).toBe(false); // a-after stays buffered
    expect(gate.aligningCheckpoint).toBe(1);
    expect(() => gate.poll(0)).toThrow(/blocked/);
    expect(gate.poll(1)).toMatchObject({ kind: 'record', value: 'b-before' });
    expect(gate.poll(1)).toEqual({ kind: 'barrier', checkpointId: 1 }); // aligned: emitted once
    expect(gate.isReadable(0)).toBe(true);
    expect(gate.poll(0)).toMatchObject({ kind: 'record', value: 'a-after' });
    expect(gate.aligningCheckpoint).toBeNull();
  });

  it('a single channel aligns at once', () => {
    const a = new Channel<string>(10);
    const gate = new InputGate([a]);
    a.push(barrier(3));
    expect(gate.poll(0)).toEqual({ kind: 'barrier', checkpointId: 3 });
  });

  it('rejects barriers out of order', () => {
    const a = new Channel<string>(10);
    const b = new Channel<string>(10);
    const gate = new InputGate([a, b]);
    a.push(barrier(1));
    b.push(barrier(2));
    gate.poll(0);
    expect(() => gate.poll(1)).toThrow(/while aligning barrier 1/);
  });

  it('channels are FIFO and report room against their capacity; barriers always fit', () => {
    const c = new Channel<string>(2);
    c.push(rec('x', 0));
    c.push(rec('y', 1));
    expect(c.hasRoom).toBe(false);
    c.push(barrier(1));
    expect(c.size).toBe(3);
    expect(c.shift()).toMatchObject({ value: 'x' });
    expect(c.shift()).toMatchObject({ value: 'y' });
    expect(c.shift()).toMatchObject({ kind: 'barrier' });
    expect(() => c.shift()).toThrow(/empty channel/);
    for (let i = 0; i < 5000; i++) c.push(rec(String(i), i));
    for (let i = 0; i < 5000; i++) expect((c.shift() as { value: string }).value).toBe(String(i));
  });
});

describe('CommittedOutput', () => {
  it('commits a transaction id once', () => {
    const out = new CommittedOutput<number>();
    expect(out.commit('t1', 1, [1, 2], 0)).toBe(true);
    expect(out.commit('t1', 1, [1, 2], 1)).toBe(false);
    expect(out.commit('t2', 2, [3], 1)).toBe(true);
    expect(out.records()).toEqual([1, 2, 3]);
    expect(out.transactions().map((t) => [t.transactionId, t.committedInAttempt])).toEqual([
      ['t1', 0],
      ['t2', 1],
    ]);
    expect(() => out.commit('', 1, [], 0)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it('keeps what was committed, in commit order, whatever the caller does with its array afterwards', () => {
    const out = new CommittedOutput<number>();
    const first = [1, 2];
    out.commit('t1', 1, first, 0);
    expect(out.records()).toEqual([1, 2]);
    first.push(99);
    first[0] = -1;
    out.commit('t2', 2, [], 0);
    out.commit('t3', 3, [3, 4], 0);
    expect(out.records()).toEqual([1, 2, 3, 4]);
    expect(out.records()).toEqual([1, 2, 3, 4]);
    expect(out.transactions().map((t) => t.recordCount)).toEqual([2, 0, 2]);
  });
});

describe('SeededRandom', () => {
  it('is deterministic per seed and differs across seeds', () => {
    const draw = (seed: number) => {
      const r = new SeededRandom(seed);
      return Array.from({ length: 20 }, () => r.int(1000));
    };
    expect(draw(5)).toEqual(draw(5));
    expect(draw(5)).not.toEqual(draw(6));
    const r = new SeededRandom(9);
    for (let i = 0; i < 1000; i++) {
      const x = r.next();
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(1);
    }
  });
});

describe('checkCounts', () => {
  const input = countingInput({ records: 50, keys: 5, partitions: 2, seed: 3 });
  const exact = () => {
    const counts = new Map<string, { n: number; sum: number }>();
    const out: { key: string; count: number; sum: number }[] = [];
    for (const part of input) {
      for (const r of part) {
        const c = counts.get(r.key) ?? { n: 0, sum: 0 };
        c.n++;
        c.sum += r.value;
        counts.set(r.key, c);
        out.push({ key: r.key, count: c.n, sum: c.sum });
      }
    }
    return out;
  };

  it('accepts exactly-once output in any order', () => {
    const check = checkCounts(exact().reverse(), input);
    expect(check.ok).toBe(true);
    expect(check.keysOk).toBe(check.keys);
    expect(check.committedRecords).toBe(50);
  });

  it('finds a duplicate, a gap and a wrong sum', () => {
    const out = exact();
    expect(checkCounts([...out, out[3]], input).problems.join()).toMatch(/duplicate|committed records/);
    expect(
      checkCounts(
        out.filter((_, i) => i !== 7),
        input,
      ).ok,
    ).toBe(false);
    const wrong = out.map((o) => ({ ...o, sum: o.sum + 1 }));
    expect(checkCounts(wrong, input).problems.join()).toMatch(/final sum/);
  });

  it('keeps every key in one partition', () => {
    const parts = countingInput({ records: 500, keys: 20, partitions: 4 });
    const where = new Map<string, number>();
    parts.forEach((p, i) =>
      p.forEach((r) => {
        expect(where.get(r.key) ?? i).toBe(i);
        where.set(r.key, i);
      }),
    );
    expect(where.size).toBe(20);
  });
});
