import { describe, expect, it } from 'vitest';
import type { KeyedStateHandle } from '../../../backend/handles.js';
import { keyGroupForKey, keyGroupRangeForSubtask } from '../../../keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../../serializers/builtins.js';
import { listState, mapState, valueState } from '../../../state/descriptors.js';
import { expectRejectsCode, expectThrowsCode } from '../expect-code.js';
import { stringKeyInRange, stringKeyOutsideRange } from '../keys.js';
import type { SuiteContext } from '../context.js';

/** Misuse and restore-time validation (reference §1.2 cross-cutting, §10 items 45, 46; maxParallelism §2.2). */
export function validationTests(ctx: SuiteContext): void {
  describe('access errors', () => {
    it('KEY_OUT_OF_RANGE for a key of another subtask; the previous key stays current', async () => {
      const b = await ctx.h.createKeyed({ keySerializer: stringSerializer, parallelism: 2, subtask: 0 });
      const range = keyGroupRangeForSubtask(128, 2, 0);
      expect(b.keyGroupRange.start).toBe(range.start);
      expect(b.keyGroupRange.end).toBe(range.end);
      const inside = stringKeyInRange(128, range);
      const outside = stringKeyOutsideRange(128, range);
      b.setCurrentKey(inside);
      const s = b.getState(valueState<string>('v'));
      s.update('mine');
      const err = expectThrowsCode(() => b.setCurrentKey(outside), 'KEY_OUT_OF_RANGE');
      expect(err.message).toContain(String(keyGroupForKey(outside, stringSerializer, 128)));
      expect(b.getCurrentKey()).toBe(inside);
      expect(s.value()).toBe('mine');
    });

    it('NO_CURRENT_KEY when state is used before any key is set', async () => {
      const b = await ctx.stringKeyed();
      const v = b.getState(valueState<string>('v'));
      const l = b.getState(listState<string>('l'));
      expectThrowsCode(() => v.value(), 'NO_CURRENT_KEY');
      expectThrowsCode(() => v.update('x'), 'NO_CURRENT_KEY');
      expectThrowsCode(() => l.add('x'), 'NO_CURRENT_KEY');
      expect(await b.numEntries()).toBe(0);
    });

    it('STATE_KIND_MISMATCH when a name is registered again as another kind; same kind returns working state', async () => {
      const b = await ctx.stringKeyed();
      const v = b.getState(valueState<string>('s'));
      b.setCurrentKey('k');
      v.update('x');
      expectThrowsCode(() => b.getState(listState<string>('s')), 'STATE_KIND_MISMATCH');
      expectThrowsCode(() => b.getState(mapState<string, string>('s')), 'STATE_KIND_MISMATCH');
      const again = b.getState(valueState<string>('s'));
      expect(again.value()).toBe('x');
      expect(b.stateNames()).toEqual(['s']);
    });

    it('STATE_KIND_MISMATCH also against a restored state that was not registered yet', async () => {
      const b = await ctx.stringKeyed();
      b.setCurrentKey('k');
      b.getState(valueState<string>('s')).update('x');
      const r = await ctx.h.snapshotAndRestore(b);
      expect(r.stateNames()).toEqual(['s']);
      expectThrowsCode(() => r.getState(listState<string>('s')), 'STATE_KIND_MISMATCH');
    });
  });

  describe('restore-time validation', () => {
    async function snapshotWithValue(): Promise<string> {
      const b = await ctx.stringKeyed();
      b.setCurrentKey('k');
      b.getState(valueState<string>('v', { serializer: stringSerializer })).update('hello');
      b.getState(
        mapState<string, string>('m', { keySerializer: stringSerializer, valueSerializer: stringSerializer }),
      ).put('a', 'b');
      return ctx.h.checkpoint([b]);
    }

    it('KEY_SERIALIZER_MISMATCH when the key serializer changed', async () => {
      const pointer = await snapshotWithValue();
      await expectRejectsCode(
        () => ctx.h.restoreKeyedSubtask(pointer, 0, { keySerializer: int32Serializer }),
        'KEY_SERIALIZER_MISMATCH',
      );
    });

    it('SERIALIZER_INCOMPATIBLE when a value or map-key serializer changed; the compatible state still reads', async () => {
      const pointer = await snapshotWithValue();
      const r = await ctx.h.restoreKeyedSubtask(pointer, 0, { keySerializer: stringSerializer });
      await expectRejectsCode(() => {
        const s = r.getState(valueState<number>('v', { serializer: int32Serializer }));
        r.setCurrentKey('k');
        return s.value();
      }, 'SERIALIZER_INCOMPATIBLE');
      await expectRejectsCode(() => {
        const m = r.getState(
          mapState<number, string>('m', { keySerializer: int32Serializer, valueSerializer: stringSerializer }),
        );
        r.setCurrentKey('k');
        return m.get(1);
      }, 'SERIALIZER_INCOMPATIBLE');

      const r2 = await ctx.h.restoreKeyedSubtask(pointer, 0, { keySerializer: stringSerializer });
      const ok = r2.getState(valueState<string>('v', { serializer: stringSerializer }));
      r2.setCurrentKey('k');
      expect(ok.value()).toBe('hello');
    });

    it('MAX_PARALLELISM_MISMATCH when maxParallelism changed (through assignment, and in the backend itself)', async () => {
      const pointer = await snapshotWithValue();
      await expectRejectsCode(
        () => ctx.h.restoreKeyedSubtask(pointer, 0, { keySerializer: stringSerializer, maxParallelism: 256 }),
        'MAX_PARALLELISM_MISMATCH',
      );
      // A runtime that skips assignment must still be stopped by the backend.
      const { operator, files } = await ctx.h.resolve(pointer);
      const handles: KeyedStateHandle[] = operator.subtasks.flatMap((s) => s.keyed);
      expect(handles.length).toBeGreaterThan(0);
      const params = ctx.h.keyedParams({ keySerializer: stringSerializer, maxParallelism: 256 }, { handles, files });
      await expectRejectsCode(() => ctx.h.createKeyedFromParams(params), 'MAX_PARALLELISM_MISMATCH');
    });
  });
}
