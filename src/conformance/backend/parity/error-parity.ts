import { describe } from 'vitest';
import { keyGroupRangeForSubtask } from '../../../keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../../serializers/builtins.js';
import { listState, mapState, valueState } from '../../../state/descriptors.js';
import { collect } from '../harness.js';
import { stringKeyInRange, stringKeyOutsideRange } from '../keys.js';
import { within } from '../expect-code.js';
import { GatedStreamFactory } from '../gated-streams.js';
import { expectRejectsDocumented, expectThrowsDocumented } from './error-classes.js';
import { parityIt, type ParityContext } from './parity-context.js';

/** Every backend raises each error with the code and the class docs/ERRORS.md gives it. */
export function errorClassTests(p: ParityContext): void {
  describe('error codes and classes', () => {
    parityIt(
      p,
      null,
      'state access errors: NO_CURRENT_KEY, KEY_OUT_OF_RANGE, NULL_NOT_ALLOWED, INVALID_ARGUMENT',
      async () => {
        const b = await p.h.createKeyed({ keySerializer: stringSerializer, parallelism: 2, subtask: 0 });
        const v = b.getState(valueState<string>('v'));
        const l = b.getState(listState<string>('l'));
        expectThrowsDocumented(() => v.value(), 'NO_CURRENT_KEY');
        expectThrowsDocumented(
          () => b.setCurrentKey(stringKeyOutsideRange(128, keyGroupRangeForSubtask(128, 2, 0))),
          'KEY_OUT_OF_RANGE',
        );
        expectThrowsDocumented(() => b.setCurrentKey(null as unknown as string), 'NULL_NOT_ALLOWED');
        b.setCurrentKey(stringKeyInRange(128, keyGroupRangeForSubtask(128, 2, 0)));
        expectThrowsDocumented(() => l.add(null as unknown as string), 'NULL_NOT_ALLOWED');
        expectThrowsDocumented(() => l.update([null as unknown as string]), 'NULL_NOT_ALLOWED');
        expectThrowsDocumented(() => valueState('', {}), 'INVALID_ARGUMENT');
      },
    );

    parityIt(
      p,
      'errors.state-kind-mismatch-class',
      'registration errors: STATE_KIND_MISMATCH, STATE_NOT_REGISTERED',
      async () => {
        const b = await p.stringKeyed();
        b.getState(valueState<string>('s'));
        expectThrowsDocumented(() => b.getState(listState<string>('s')), 'STATE_KIND_MISMATCH');
        await expectRejectsDocumented(() => collect(b.getKeys('never-registered', '')), 'STATE_NOT_REGISTERED');
      },
    );

    parityIt(
      p,
      null,
      'restore errors: SERIALIZER_INCOMPATIBLE, KEY_SERIALIZER_MISMATCH, MAX_PARALLELISM_MISMATCH',
      async () => {
        const b = await p.stringKeyed();
        b.setCurrentKey('k');
        b.getState(valueState<string>('v', { serializer: stringSerializer })).update('x');
        b.getState(
          mapState<string, string>('m', { keySerializer: stringSerializer, valueSerializer: stringSerializer }),
        ).put('a', 'b');
        const pointer = await p.h.checkpoint([b]);
        await expectRejectsDocumented(
          () => p.h.restoreKeyedSubtask(pointer, 0, { keySerializer: int32Serializer }),
          'KEY_SERIALIZER_MISMATCH',
        );
        await expectRejectsDocumented(
          () => p.h.restoreKeyedSubtask(pointer, 0, { keySerializer: stringSerializer, maxParallelism: 256 }),
          'MAX_PARALLELISM_MISMATCH',
        );
        const r = await p.h.restoreKeyedSubtask(pointer, 0, { keySerializer: stringSerializer });
        await expectRejectsDocumented(() => {
          const s = r.getState(valueState<number>('v', { serializer: int32Serializer }));
          r.setCurrentKey('k');
          return s.value();
        }, 'SERIALIZER_INCOMPATIBLE');
      },
    );

    parityIt(
      p,
      'errors.snapshot-cancelled-class',
      'close() during a blocked snapshot: SNAPSHOT_CANCELLED as a SnapshotError',
      async () => {
        const b = await p.intKeyed();
        const v = b.getState(valueState<string>('v', { serializer: stringSerializer }));
        for (let k = 0; k < 2000; k++) {
          b.setCurrentKey(k);
          v.update(`value-${k}-${'x'.repeat(24)}`);
        }
        let gated: GatedStreamFactory | undefined;
        const run = await p.h.startSnapshot([b], { wrapStreams: (inner) => (gated = new GatedStreamFactory(inner)) });
        if (!gated) throw new Error('stream factory was not wrapped');
        await within(Promise.race([gated.reached, run.done[0]]), 10_000, 'the snapshot never wrote');
        const closing = b.close();
        gated.gate.open();
        await within(
          expectRejectsDocumented(run.done[0], 'SNAPSHOT_CANCELLED'),
          10_000,
          'close() did not cancel the blocked snapshot',
        );
        await closing;
      },
    );
  });
}
