import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type {
  KeyedStateHandle,
  KeyGroupsStateHandle,
  OperatorStateHandle,
  OperatorStateMetaInfo,
  OperatorStateMode,
} from '../../src/backend/handles.js';
import { assignKeyedState, assignOperatorState, chunkBounds } from '../../src/checkpoint/assignment.js';
import type { OperatorSnapshot } from '../../src/checkpoint/metadata.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { expectThrowsCode } from '../support/errors.js';

const MAX_P = 128;
const ser = { id: 'streamstate.string', version: 1 };

/** A key-groups handle of old subtask j with one block per key group (offset = key group * 10). */
function keyGroupsHandle(maxP: number, oldP: number, j: number): KeyGroupsStateHandle {
  const range = keyGroupRangeForSubtask(maxP, oldP, j);
  return {
    type: 'key-groups',
    layout: 'heap-v1',
    keyGroupRange: range.toJSON(),
    maxParallelism: maxP,
    keySerializer: ser,
    states: [],
    blocks: [...range].map((kg) => ({ keyGroup: kg, offset: kg * 10, length: 10, crc32: kg })),
    stream: { type: 'file', path: `kg-${j}`, size: maxP * 10, crc32: 0 },
  };
}

function incrementalHandle(maxP: number, oldP: number, j: number): KeyedStateHandle {
  return {
    type: 'fake-incremental',
    keyGroupRange: keyGroupRangeForSubtask(maxP, oldP, j).toJSON(),
    maxParallelism: maxP,
    files: [`sst-${j}`],
  };
}

function keyedSnapshot(oldP: number, withIncremental = false, maxP = MAX_P): OperatorSnapshot {
  return {
    operatorId: 'op',
    parallelism: oldP,
    maxParallelism: maxP,
    subtasks: Array.from({ length: oldP }, (_, j) => ({
      subtaskIndex: j,
      keyed: withIncremental
        ? [keyGroupsHandle(maxP, oldP, j), incrementalHandle(maxP, oldP, j)]
        : [keyGroupsHandle(maxP, oldP, j)],
      operator: [],
    })),
  };
}

describe('assignKeyedState', () => {
  const matrix: [number, number][] = [
    [4, 2],
    [2, 4],
    [2, 2],
    [15, 77],
    [77, 15],
    [1, 128],
    [128, 1],
  ];

  it.each(matrix)('%i -> %i: every key group assigned exactly once, to the subtask that owns it', (oldP, newP) => {
    const assigned = assignKeyedState(keyedSnapshot(oldP), newP, MAX_P);
    expect(assigned).toHaveLength(newP);
    const owner = new Map<number, number>();
    assigned.forEach((handles, i) => {
      const range = keyGroupRangeForSubtask(MAX_P, newP, i);
      for (const h of handles as KeyGroupsStateHandle[]) {
        expect(range.contains(h.keyGroupRange.start) && range.contains(h.keyGroupRange.end)).toBe(true);
        for (const b of h.blocks) {
          expect(range.contains(b.keyGroup)).toBe(true);
          expect(b.offset).toBe(b.keyGroup * 10); // blocks keep pointing at the same bytes
          expect(owner.has(b.keyGroup)).toBe(false);
          owner.set(b.keyGroup, i);
        }
      }
    });
    expect(owner.size).toBe(MAX_P);
  });

  it('passes the handles of old subtask i to new subtask i untouched at unchanged parallelism', () => {
    const snap = keyedSnapshot(3, true);
    const assigned = assignKeyedState(snap, 3, MAX_P);
    for (let i = 0; i < 3; i++) {
      expect(assigned[i]).toHaveLength(2);
      expect(assigned[i][0]).toBe(snap.subtasks[i].keyed[0]);
      expect(assigned[i][1]).toBe(snap.subtasks[i].keyed[1]);
    }
  });

  it('passes other handle types whole to every subtask whose range they intersect', () => {
    const snap = keyedSnapshot(2, true);
    const assigned = assignKeyedState(snap, 4, MAX_P);
    // old 0 owns [0, 63] -> new 0 [0, 31] and new 1 [32, 63]
    const incremental = assigned.map((hs) => hs.filter((h) => h.type === 'fake-incremental'));
    expect(incremental[0]).toEqual([snap.subtasks[0].keyed[1]]);
    expect(incremental[1][0]).toBe(snap.subtasks[0].keyed[1]);
    expect(incremental[2][0]).toBe(snap.subtasks[1].keyed[1]);
    expect(incremental[3][0]).toBe(snap.subtasks[1].keyed[1]);
    // 3 -> 2: new 0 [0, 63] intersects old 0 [0, 42] and old 1 [43, 85]
    const threeToTwo = assignKeyedState(keyedSnapshot(3, true), 2, MAX_P).map(
      (hs) => hs.filter((h) => h.type === 'fake-incremental').length,
    );
    expect(threeToTwo).toEqual([2, 2]);
  });

  it('clips key-groups handles to the intersection', () => {
    const assigned = assignKeyedState(keyedSnapshot(1), 2, MAX_P);
    const h = assigned[1][0] as KeyGroupsStateHandle;
    expect(h.keyGroupRange).toEqual({ start: 64, end: 127 });
    expect(h.blocks.map((b) => b.keyGroup)).toEqual(Array.from({ length: 64 }, (_, k) => 64 + k));
    expect(h.stream).toEqual({ type: 'file', path: 'kg-0', size: 1280, crc32: 0 });
  });

  it('every key group exactly once for any old/new parallelism (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 64 }), (oldP, newP) => {
        const maxP = 64;
        const seen = new Array<number>(maxP).fill(0);
        for (const handles of assignKeyedState(keyedSnapshot(oldP, false, maxP), newP, maxP)) {
          for (const h of handles as KeyGroupsStateHandle[]) for (const b of h.blocks) seen[b.keyGroup]++;
        }
        expect(seen.every((n) => n === 1)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it('refuses a different maxParallelism and a parallelism above it', () => {
    const err = expectThrowsCode(() => assignKeyedState(keyedSnapshot(2), 2, 256), 'MAX_PARALLELISM_MISMATCH');
    expect(err.message).toContain("use the snapshot's value 128");
    expectThrowsCode(() => assignKeyedState(keyedSnapshot(2), 129, MAX_P), 'PARALLELISM_INVALID');
    expectThrowsCode(() => assignKeyedState(keyedSnapshot(2), 0, MAX_P), 'PARALLELISM_INVALID');
  });

  it('gives subtasks without state in the snapshot nothing', () => {
    const snap: OperatorSnapshot = { operatorId: 'op', parallelism: 2, maxParallelism: MAX_P, subtasks: [] };
    expect(assignKeyedState(snap, 3, MAX_P)).toEqual([[], [], []]);
  });
});

// ------------------------------------------------------------------ operator state

/** Offsets encode (old subtask, element): 1000 * j + 5 + k, in a stream named s<j>. */
function meta(name: string, mode: OperatorStateMode, j: number, count: number): OperatorStateMetaInfo {
  return { name, mode, valueSerializer: ser, offsets: Array.from({ length: count }, (_, k) => 1000 * j + 5 + k) };
}

function opHandle(j: number, states: OperatorStateMetaInfo[]): OperatorStateHandle {
  return { type: 'operator', states, stream: { type: 'inline', data: `s${j}`, size: 0, crc32: 0 } };
}

function operatorSnapshot(oldP: number, statesOf: (j: number) => OperatorStateMetaInfo[]): OperatorSnapshot {
  return {
    operatorId: 'op',
    parallelism: oldP,
    maxParallelism: MAX_P,
    subtasks: Array.from({ length: oldP }, (_, j) => ({
      subtaskIndex: j,
      keyed: [],
      operator: [opHandle(j, statesOf(j))],
    })),
  };
}

/** The elements (as "j:k") of state `name` a subtask would restore, in restore order. */
function elements(handles: readonly OperatorStateHandle[], name: string): string[] {
  const out: string[] = [];
  for (const h of handles) {
    const j = Number((h.stream as { data: string }).data.slice(1));
    for (const s of h.states) if (s.name === name) for (const off of s.offsets) out.push(`${j}:${off - 1000 * j - 5}`);
  }
  return out;
}

describe('assignOperatorState', () => {
  it('split: contiguous chunks in subtask order, sizes differ by at most one, larger first', () => {
    const counts = [3, 0, 5, 2]; // 10 elements
    const snap = operatorSnapshot(4, (j) => [meta('split', 'split', j, counts[j])]);
    const logical = counts.flatMap((c, j) => Array.from({ length: c }, (_, k) => `${j}:${k}`));
    for (const newP of [1, 2, 3, 5, 7, 12]) {
      const assigned = assignOperatorState(snap, newP);
      const per = assigned.map((hs) => elements(hs, 'split'));
      expect(per.flat()).toEqual(logical);
      per.forEach((chunk, i) => expect(chunk.length).toBe(chunkBounds(10, newP, i)[1] - chunkBounds(10, newP, i)[0]));
      const sizes = per.map((c) => c.length);
      expect(Math.max(...sizes) - Math.min(...sizes)).toBeLessThanOrEqual(1);
      expect([...sizes].sort((a, b) => b - a)).toEqual(sizes);
      // every subtask still learns the state's name (even with no elements)
      for (const hs of assigned) expect(hs.some((h) => h.states.some((s) => s.name === 'split'))).toBe(true);
    }
  });

  it('split: 10 elements over 3 subtasks are 4, 3, 3', () => {
    const snap = operatorSnapshot(2, (j) => [meta('s', 'split', j, 5)]);
    expect(assignOperatorState(snap, 3).map((hs) => elements(hs, 's'))).toEqual([
      ['0:0', '0:1', '0:2', '0:3'],
      ['0:4', '1:0', '1:1'],
      ['1:2', '1:3', '1:4'],
    ]);
  });

  it('union: every new subtask gets every element of every old subtask, in subtask order', () => {
    const snap = operatorSnapshot(3, (j) => [meta('u', 'union', j, j + 1)]);
    const all = ['0:0', '1:0', '1:1', '2:0', '2:1', '2:2'];
    for (const newP of [1, 3, 5]) {
      for (const hs of assignOperatorState(snap, newP)) expect(elements(hs, 'u')).toEqual(all);
    }
  });

  it('broadcast: new subtask i gets the copy of old subtask i mod oldP', () => {
    const snap = operatorSnapshot(3, (j) => [meta('b', 'broadcast', j, 2)]);
    const assigned = assignOperatorState(snap, 7);
    assigned.forEach((hs, i) => expect(elements(hs, 'b')).toEqual([`${i % 3}:0`, `${i % 3}:1`]));
    const down = assignOperatorState(snap, 2);
    expect(down.map((hs) => elements(hs, 'b'))).toEqual([
      ['0:0', '0:1'],
      ['1:0', '1:1'],
    ]);
  });

  it('unchanged parallelism: split and broadcast pass through, union is still fanned out', () => {
    const snap = operatorSnapshot(3, (j) => [
      meta('split', 'split', j, 2),
      meta('b', 'broadcast', j, 1),
      meta('u', 'union', j, 1),
    ]);
    const assigned = assignOperatorState(snap, 3);
    assigned.forEach((hs, i) => {
      expect(elements(hs, 'split')).toEqual([`${i}:0`, `${i}:1`]);
      expect(elements(hs, 'b')).toEqual([`${i}:0`]);
      expect(elements(hs, 'u')).toEqual(['0:0', '1:0', '2:0']);
    });
    // A handle without union state is passed through as the very same object.
    const plain = operatorSnapshot(2, (j) => [meta('split', 'split', j, 2)]);
    const same = assignOperatorState(plain, 2);
    expect(same[0]).toEqual([plain.subtasks[0].operator[0]]);
    expect(same[1][0]).toBe(plain.subtasks[1].operator[0]);
  });

  it('keeps the streams of the old handles (only offsets are filtered)', () => {
    const snap = operatorSnapshot(2, (j) => [meta('s', 'split', j, 4)]);
    const assigned = assignOperatorState(snap, 4);
    expect(assigned[3]).toHaveLength(1);
    expect(assigned[3][0].stream).toBe(snap.subtasks[1].operator[0].stream);
    expect(assigned[3][0].states[0].offsets).toEqual([1007, 1008]);
  });

  it('mixes modes in one handle and keeps empty states known', () => {
    const snap = operatorSnapshot(2, (j) => [
      meta('s', 'split', j, 1),
      meta('u', 'union', j, 0),
      meta('b', 'broadcast', j, 0),
    ]);
    const assigned = assignOperatorState(snap, 3);
    for (const hs of assigned) {
      const names = new Set(hs.flatMap((h) => h.states.map((s) => s.name)));
      expect(names).toEqual(new Set(['s', 'u', 'b']));
      // an empty state is listed once, not once per old subtask
      expect(hs.flatMap((h) => h.states).filter((st) => st.name === 'u')).toHaveLength(1);
    }
    expect(assigned.map((hs) => elements(hs, 's'))).toEqual([['0:0'], ['1:0'], []]);
  });

  it('refuses a non-positive parallelism', () => {
    expectThrowsCode(
      () =>
        assignOperatorState(
          operatorSnapshot(1, () => []),
          0,
        ),
      'PARALLELISM_INVALID',
    );
  });
});
