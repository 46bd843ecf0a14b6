import { describe, expect, it } from 'vitest';
import type { OperatorStateBackend } from '../../backend/contract.js';
import { int32Serializer, stringSerializer } from '../../serializers/builtins.js';
import { mapState } from '../../state/descriptors.js';
import type { MakeBackend } from './harness.js';
import { expectRejectsCode, expectThrowsCode, within } from './expect-code.js';
import { type BlockedSnapshot, expectCancelledWhileBlocked, startBlockedSnapshot } from './blocked-snapshot.js';
import { GatedStreamFactory } from './gated-streams.js';
import { useHarness } from './context.js';
import type { ResolvedSupports } from './supports.js';

const bcast = (name: string) =>
  mapState<string, number>(name, { keySerializer: stringSerializer, valueSerializer: int32Serializer });

const sortedEntries = (b: OperatorStateBackend, name: string): [string, number][] =>
  [...b.getBroadcastState(bcast(name)).entries()].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));

/**
 * The operator-state conformance suite (reference §1.4, §10 items 59–64, 66): list, union and
 * broadcast state, snapshots through real streams, and repartitioning through assignOperatorState.
 */
export function describeOperatorBackendConformance(
  name: string,
  makeBackend: MakeBackend,
  supports: ResolvedSupports,
): void {
  describe.skipIf(!supports.operatorState)(`${name}: operator state conformance`, () => {
    const ctx = useHarness(makeBackend, supports);

    it('registers list, union and broadcast states; getting a state again returns the same contents', async () => {
      const b = await ctx.h.createOperator();
      b.getListState<number>('list-1').addAll([1, 2]);
      b.getListState<number>('list-2').add(3);
      b.getUnionListState<number>('union-1').add(4);
      b.getBroadcastState(bcast('bc-1')).put('a', 1);
      b.getBroadcastState(bcast('bc-2'));
      expect(b.stateNames().sort()).toEqual(['bc-1', 'bc-2', 'list-1', 'list-2', 'union-1']);
      expect(b.getListState<number>('list-1').get()).toEqual([1, 2]);
      expect(b.getUnionListState<number>('union-1').get()).toEqual([4]);
      expect(b.getBroadcastState(bcast('bc-1')).get('a')).toBe(1);
      expect(b.getBroadcastState(bcast('bc-2')).size).toBe(0);
    });

    it('STATE_KIND_MISMATCH when a name is used with another distribution mode', async () => {
      const b = await ctx.h.createOperator();
      b.getListState<number>('s').add(1);
      b.getUnionListState<number>('u').add(1);
      b.getBroadcastState(bcast('bc'));
      expectThrowsCode(() => b.getUnionListState<number>('s'), 'STATE_KIND_MISMATCH');
      expectThrowsCode(() => b.getListState<number>('u'), 'STATE_KIND_MISMATCH');
      expectThrowsCode(() => b.getListState<number>('bc'), 'STATE_KIND_MISMATCH');
      expectThrowsCode(() => b.getBroadcastState(bcast('s')), 'STATE_KIND_MISMATCH');
      expect(b.getListState<number>('s').get()).toEqual([1]);
    });

    it('list state operations: add, addAll, update, clear, order', async () => {
      const b = await ctx.h.createOperator();
      const l = b.getListState<string>('l');
      expect(l.get()).toEqual([]);
      l.add('a');
      l.addAll(['b', 'c']);
      expect(l.get()).toEqual(['a', 'b', 'c']);
      l.update(['z', 'y']);
      expect(l.get()).toEqual(['z', 'y']);
      l.clear();
      expect(l.get()).toEqual([]);
    });

    it('a backend without states snapshots to a null handle', async () => {
      const b = await ctx.h.createOperator();
      expect(await ctx.h.snapshotHandle(b)).toBeNull();
      const pointer = await ctx.h.checkpoint([b]);
      const [r] = await ctx.h.restoreOperator(pointer);
      expect(r.stateNames()).toEqual([]);
    });

    it('broadcast-only backend round trips, also after removing one entry and after removing all', async () => {
      const { h } = ctx;
      let b = await h.createOperator();
      const s = b.getBroadcastState(bcast('bc'));
      s.putAll([
        ['a', 1],
        ['b', 2],
        ['c', 3],
      ]);
      b = await h.snapshotAndRestoreOperator(b);
      expect(sortedEntries(b, 'bc')).toEqual([
        ['a', 1],
        ['b', 2],
        ['c', 3],
      ]);
      b.getBroadcastState(bcast('bc')).remove('b');
      b = await h.snapshotAndRestoreOperator(b);
      expect(sortedEntries(b, 'bc')).toEqual([
        ['a', 1],
        ['c', 3],
      ]);
      const again = b.getBroadcastState(bcast('bc'));
      expect(again.contains('c')).toBe(true);
      expect(again.contains('b')).toBe(false);
      again.clear();
      b = await h.snapshotAndRestoreOperator(b);
      expect(sortedEntries(b, 'bc')).toEqual([]);
    });

    it('restores 2 list states, 1 union state and 3 broadcast states (one empty) exactly, in order', async () => {
      const { h } = ctx;
      const b = await h.createOperator();
      b.getListState<{ id: number }>('list-a').addAll([{ id: 3 }, { id: 1 }, { id: 2 }]);
      b.getListState<string>('list-b', stringSerializer).addAll(['x', 'y', 'x']);
      b.getUnionListState<number>('union', int32Serializer).addAll([9, 8, 7]);
      b.getBroadcastState(bcast('bc-1')).putAll([
        ['k1', 1],
        ['k2', 2],
      ]);
      b.getBroadcastState(bcast('bc-2')).put('only', 42);
      b.getBroadcastState(bcast('bc-empty'));
      const r = await h.snapshotAndRestoreOperator(b);
      expect(r.getListState<{ id: number }>('list-a').get()).toEqual([{ id: 3 }, { id: 1 }, { id: 2 }]);
      expect(r.getListState<string>('list-b', stringSerializer).get()).toEqual(['x', 'y', 'x']);
      expect(r.getUnionListState<number>('union', int32Serializer).get()).toEqual([9, 8, 7]);
      expect(sortedEntries(r, 'bc-1')).toEqual([
        ['k1', 1],
        ['k2', 2],
      ]);
      expect(sortedEntries(r, 'bc-2')).toEqual([['only', 42]]);
      expect(sortedEntries(r, 'bc-empty')).toEqual([]);
    });

    it('SERIALIZER_INCOMPATIBLE when a restored list is registered with another serializer', async () => {
      const b = await ctx.h.createOperator();
      b.getListState<string>('l', stringSerializer).add('x');
      const r = await ctx.h.snapshotAndRestoreOperator(b);
      await expectRejectsCode(() => r.getListState<number>('l', int32Serializer).get(), 'SERIALIZER_INCOMPATIBLE');
    });

    it('is isolated from mutations made while the asynchronous part is blocked', async () => {
      const { h } = ctx;
      const b = await h.createOperator();
      const list = b.getListState<{ n: number }>('list');
      const element = { n: 1 };
      list.addAll([element, { n: 2 }]);
      const union = b.getUnionListState<number>('union');
      union.add(5);
      const bc = b.getBroadcastState(bcast('bc'));
      bc.put('a', 1);

      let gated: GatedStreamFactory | undefined;
      const run = await h.startSnapshot([b], { wrapStreams: (inner) => (gated = new GatedStreamFactory(inner)) });
      list.add({ n: 3 });
      element.n = 100; // in-place mutation of an element that is in the snapshot
      union.clear();
      bc.put('a', 2);
      bc.put('b', 3);
      b.getListState<number>('registered-later').add(1);
      gated?.gate.open();
      const pointer = await within(run.complete(), 10_000, 'the snapshot never completed');
      const [r] = await h.restoreOperator(pointer);
      expect(r.stateNames().sort()).toEqual(['bc', 'list', 'union']);
      expect(r.getListState<{ n: number }>('list').get()).toEqual([{ n: 1 }, { n: 2 }]);
      expect(r.getUnionListState<number>('union').get()).toEqual([5]);
      expect(sortedEntries(r, 'bc')).toEqual([['a', 1]]);
    });

    /** An operator backend with enough data that a snapshot goes to a file, and one snapshot of it held in its I/O. */
    async function blocked(): Promise<{ b: OperatorStateBackend } & BlockedSnapshot> {
      const b = await ctx.h.createOperator();
      b.getListState<string>('l', stringSerializer).addAll(
        Array.from({ length: 3000 }, (_, i) => `element-${i}-${'y'.repeat(20)}`),
      );
      return { b, ...(await startBlockedSnapshot(ctx.h, b)) };
    }

    it('close() during a blocked snapshot fails it with SNAPSHOT_CANCELLED and leaves no files behind', async () => {
      const { b, ...held } = await blocked();
      await expectCancelledWhileBlocked(held, () => b.close(), 'close()');
      expect(await ctx.h.jobFiles()).toEqual([]);
    });

    it('notifyCheckpointAborted(id) during a blocked snapshot of id fails it with SNAPSHOT_CANCELLED and leaves no files; another id leaves it alone', async () => {
      const { h } = ctx;
      const { b, ...held } = await blocked();
      await b.notifyCheckpointAborted(held.run.checkpointId + 1);
      await expectCancelledWhileBlocked(
        held,
        () => b.notifyCheckpointAborted(held.run.checkpointId),
        'the abort notice',
      );
      expect(await h.jobFiles()).toEqual([]);
      const pointer = await h.checkpoint([b]);
      const [r] = await h.restoreOperator(pointer, 1);
      expect(r.getListState<string>('l', stringSerializer).get()).toHaveLength(3000);
    });

    describe('repartitioning on restore', () => {
      /** Three old subtasks with 4, 3 and 5 split elements; union and broadcast state on each. */
      async function threeSubtasks(): Promise<string> {
        const { h } = ctx;
        const sizes = [4, 3, 5];
        const backends: OperatorStateBackend[] = [];
        for (let i = 0; i < 3; i++) {
          const b = await h.createOperator({ parallelism: 3, subtask: i });
          b.getListState<number>('split', int32Serializer).addAll(
            Array.from({ length: sizes[i] }, (_, j) => i * 10 + j),
          );
          b.getUnionListState<number>('union', int32Serializer).addAll([i, i + 100]);
          const bc = b.getBroadcastState(bcast('bc'));
          bc.put('shared', 7);
          bc.put('from', i); // lets the test see which old copy a new subtask got
          backends.push(b);
        }
        return h.checkpoint(backends);
      }
      const all = [0, 1, 2, 3, 10, 11, 12, 20, 21, 22, 23, 24];

      for (const newP of [1, 2, 3, 5]) {
        it(`3 → ${newP}: split in contiguous near-equal chunks, union to all, broadcast from old i mod 3`, async () => {
          const pointer = await threeSubtasks();
          const restored = await ctx.h.restoreOperator(pointer, newP);
          const chunks = restored.map((b) => b.getListState<number>('split', int32Serializer).get());
          expect(chunks.flat()).toEqual(all);
          if (newP === 3) {
            // Unchanged parallelism: every subtask keeps its own elements.
            expect(chunks).toEqual([
              [0, 1, 2, 3],
              [10, 11, 12],
              [20, 21, 22, 23, 24],
            ]);
          } else {
            const base = Math.floor(all.length / newP);
            chunks.forEach((c, i) => expect(c.length).toBe(base + (i < all.length % newP ? 1 : 0)));
          }
          for (const b of restored) {
            expect([...b.getUnionListState<number>('union', int32Serializer).get()].sort((x, y) => x - y)).toEqual([
              0, 1, 2, 100, 101, 102,
            ]);
          }
          restored.forEach((b, i) =>
            expect(sortedEntries(b, 'bc')).toEqual([
              ['from', i % 3],
              ['shared', 7],
            ]),
          );
        });
      }
    });
  });
}
