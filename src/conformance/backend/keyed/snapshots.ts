import { describe, expect, it } from 'vitest';
import type { KeyedStateBackend } from '../../../backend/contract.js';
import { int32Serializer, stringSerializer } from '../../../serializers/builtins.js';
import { listState, mapState, valueState } from '../../../state/descriptors.js';
import { collect } from '../harness.js';
import { type BlockedSnapshot, expectCancelledWhileBlocked, startBlockedSnapshot } from '../blocked-snapshot.js';
import { within } from '../expect-code.js';
import { GatedStreamFactory } from '../gated-streams.js';
import type { SuiteContext } from '../context.js';

const vd = valueState<string>('v', { serializer: stringSerializer });
const ld = listState<number>('l', { serializer: int32Serializer });
const md = mapState<number, string>('m', { keySerializer: int32Serializer, valueSerializer: stringSerializer });

/** Writes keys 0..9: v = "old-k", l = [k], m = {k: "old"}. */
function writeOld(b: KeyedStateBackend<number>): void {
  const v = b.getState(vd);
  const l = b.getState(ld);
  const m = b.getState(md);
  for (let k = 0; k < 10; k++) {
    b.setCurrentKey(k);
    v.update(`old-${k}`);
    l.add(k);
    m.put(k, 'old');
  }
}

/** Mutates keys [from, to): new values, appends to lists, puts/removes in maps. */
function mutate(b: KeyedStateBackend<number>, from: number, to: number): void {
  const v = b.getState(vd);
  const l = b.getState(ld);
  const m = b.getState(md);
  for (let k = from; k < to; k++) {
    b.setCurrentKey(k);
    v.update(`new-${k}`);
    l.add(1000 + k);
    m.remove(k);
    m.put(-k - 1, 'new');
  }
}

async function expectOld(r: KeyedStateBackend<number>): Promise<void> {
  const v = r.getState(vd);
  const l = r.getState(ld);
  const m = r.getState(md);
  for (let k = 0; k < 20; k++) {
    r.setCurrentKey(k);
    if (k < 10) {
      expect(v.value()).toBe(`old-${k}`);
      expect(l.get()).toEqual([k]);
      expect(await collect(m.entries())).toEqual([[k, 'old']]);
    } else {
      expect(v.value()).toBeNull();
      expect(l.get()).toBeNull();
      expect(m.isEmpty()).toBe(true);
    }
  }
  expect(await r.numEntries()).toBe(30);
}

async function expectNew(b: KeyedStateBackend<number>): Promise<void> {
  const v = b.getState(vd);
  const l = b.getState(ld);
  const m = b.getState(md);
  for (let k = 0; k < 20; k++) {
    b.setCurrentKey(k);
    expect(v.value()).toBe(`new-${k}`);
    expect(l.get()).toEqual(k < 10 ? [k, 1000 + k] : [1000 + k]);
    expect(await collect(m.entries())).toEqual([[-k - 1, 'new']]);
  }
}

/** Snapshot mechanics (reference §10 items 27, 34, 39–42). */
export function snapshotTests(ctx: SuiteContext): void {
  describe('snapshots', () => {
    it('an empty backend snapshots to a null handle, and restoring from nothing gives an empty working backend', async () => {
      const { h } = ctx;
      const b = await ctx.stringKeyed();
      expect(await h.snapshotHandle(b)).toBeNull();
      const pointer = await h.checkpoint([b]);
      const [r] = await h.restoreKeyed(pointer, { keySerializer: stringSerializer });
      expect(r.stateNames()).toEqual([]);
      const s = r.getState(valueState<string>('v'));
      r.setCurrentKey('k');
      expect(s.value()).toBeNull();
      s.update('x');
      expect(await r.numEntries()).toBe(1);
      // Explicitly empty restore sources work too.
      const { files } = await h.resolve(pointer);
      const fresh = await h.createKeyed({ keySerializer: stringSerializer }, { handles: [], files });
      expect(await fresh.numEntries()).toBe(0);
    });

    it('restored state that was never accessed is still in the next snapshot', async () => {
      const { h } = ctx;
      const b = await ctx.intKeyed();
      writeOld(b);
      b.getTimerQueue('timers').add({ timestamp: 7, key: 3, namespace: '' });
      const r1 = await h.snapshotAndRestore(b);
      // No getState, no setCurrentKey: straight into the next snapshot.
      const r2 = await h.snapshotAndRestore(r1);
      expect(r2.stateNames().sort()).toEqual(['l', 'm', 'v']);
      await expectOld(r2);
      expect([...r2.getTimerQueue<string>('timers')]).toEqual([{ timestamp: 7, key: 3, namespace: '' }]);
    });

    it('is isolated from writes made while its asynchronous part is blocked', async () => {
      const { h } = ctx;
      const b = await ctx.intKeyed();
      writeOld(b);
      let gated: GatedStreamFactory | undefined;
      const run = await h.startSnapshot([b], { wrapStreams: (inner) => (gated = new GatedStreamFactory(inner)) });
      if (!gated) throw new Error('stream factory was not wrapped');
      // Writes right after the synchronous part, then more once the upload is stuck.
      mutate(b, 0, 5);
      await within(Promise.race([gated.reached, run.done[0]]), 10_000, 'the snapshot never wrote');
      mutate(b, 5, 20);
      await expectNew(b);
      gated.gate.open();
      const pointer = await within(run.complete(), 10_000, 'the snapshot never completed');
      await expectNew(b);
      const r = await h.restoreKeyedSubtask(pointer, 0, { keySerializer: int32Serializer });
      await expectOld(r);
    });

    it('completes a second snapshot while the first is blocked, then the first', async () => {
      const { h } = ctx;
      const b = await ctx.intKeyed();
      writeOld(b);
      let gated: GatedStreamFactory | undefined;
      const first = await h.startSnapshot([b], { wrapStreams: (inner) => (gated = new GatedStreamFactory(inner)) });
      mutate(b, 0, 20);
      const second = await within(h.checkpoint([b]), 10_000, 'the second snapshot waited for the blocked first one');
      let firstDone = false;
      void first.done[0].then(
        () => (firstDone = true),
        () => (firstDone = true),
      );
      await new Promise((r) => setTimeout(r, 20));
      expect(firstDone).toBe(false);
      gated?.gate.open();
      const firstPointer = await within(first.complete(), 10_000, 'the first snapshot never completed');
      await expectOld(await h.restoreKeyedSubtask(firstPointer, 0, { keySerializer: int32Serializer }));
      await expectNew(await h.restoreKeyedSubtask(second, 0, { keySerializer: int32Serializer }));
    });

    it('runs ten snapshots back to back, each after registering a new state, all completing', async () => {
      const { h } = ctx;
      const b = await ctx.intKeyed();
      const counter = b.getState(valueState<number>('s0'));
      const runs = [];
      for (let i = 0; i < 10; i++) {
        b.setCurrentKey(1);
        b.getState(valueState<number>(`s${i}`)).update(i * 100);
        counter.update(i);
        runs.push(await h.startSnapshot([b]));
      }
      const pointers = await within(
        Promise.all(runs.map((r) => r.complete())),
        20_000,
        'ten snapshots did not all complete',
      );
      const last = await h.restoreKeyedSubtask(pointers[9], 0, { keySerializer: int32Serializer });
      last.setCurrentKey(1);
      expect(last.stateNames().sort()).toEqual(Array.from({ length: 10 }, (_, i) => `s${i}`).sort());
      for (let i = 1; i < 10; i++) expect(last.getState(valueState<number>(`s${i}`)).value()).toBe(i * 100);
      expect(last.getState(valueState<number>('s0')).value()).toBe(9);
      const third = await h.restoreKeyedSubtask(pointers[2], 0, { keySerializer: int32Serializer });
      third.setCurrentKey(1);
      expect(third.stateNames().sort()).toEqual(['s0', 's1', 's2']);
      expect(third.getState(valueState<number>('s0')).value()).toBe(2);
    });

    /** A backend with enough data that a snapshot goes to a file, and one snapshot of it held in its I/O. */
    async function blocked(): Promise<{ b: KeyedStateBackend<number> } & BlockedSnapshot> {
      const b = await ctx.intKeyed();
      const v = b.getState(vd);
      for (let k = 0; k < 3000; k++) {
        b.setCurrentKey(k);
        v.update(`value-${k}-${'x'.repeat(24)}`);
      }
      return { b, ...(await startBlockedSnapshot(ctx.h, b)) };
    }

    it('close() during a blocked snapshot fails it with SNAPSHOT_CANCELLED and leaves no files behind', async () => {
      const { b, ...held } = await blocked();
      await expectCancelledWhileBlocked(held, () => b.close(), 'close()');
      for (const s of held.gated.streams) expect(s.discarded || !s.closed).toBe(true);
      expect(held.gated.streams.some((s) => s.discarded)).toBe(held.gated.streams.length > 0);
      expect(await ctx.h.jobFiles()).toEqual([]);
    });

    it('notifyCheckpointAborted(id) during a blocked snapshot of id fails it with SNAPSHOT_CANCELLED, leaves no files, and the backend checkpoints on', async () => {
      const { h } = ctx;
      const { b, ...held } = await blocked();
      await expectCancelledWhileBlocked(
        held,
        () => b.notifyCheckpointAborted(held.run.checkpointId),
        'the abort notice',
      );
      expect(await h.jobFiles()).toEqual([]);
      b.setCurrentKey(7);
      b.getState(vd).update('after-abort');
      const pointer = await h.checkpoint([b]);
      const r = await h.restoreKeyedSubtask(pointer, 0, { keySerializer: int32Serializer });
      r.setCurrentKey(7);
      expect(r.getState(vd).value()).toBe('after-abort');
      r.setCurrentKey(2999);
      expect(r.getState(vd).value()).toBe(`value-2999-${'x'.repeat(24)}`);
    });

    it('an abort notice for another checkpoint id leaves a running snapshot alone', async () => {
      const { h } = ctx;
      const { b, run, gated } = await blocked();
      await b.notifyCheckpointAborted(run.checkpointId + 1);
      await b.notifyCheckpointAborted(run.checkpointId - 1);
      gated.gate.open();
      const pointer = await within(run.complete(), 10_000, 'the snapshot did not complete');
      const r = await h.restoreKeyedSubtask(pointer, 0, { keySerializer: int32Serializer });
      r.setCurrentKey(1234);
      expect(r.getState(vd).value()).toBe(`value-1234-${'x'.repeat(24)}`);
    });
  });
}
