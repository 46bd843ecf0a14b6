import { describe } from 'vitest';
import type { MakeBackend } from './harness.js';
import { useHarness } from './context.js';
import type { ResolvedSupports } from './supports.js';
import { keyIterationTests } from './keyed/key-iteration.js';
import { listStateTests } from './keyed/list-state.js';
import { mapStateTests } from './keyed/map-state.js';
import { reducingAggregatingTests } from './keyed/reducing-aggregating.js';
import { snapshotTests } from './keyed/snapshots.js';
import { timerTests } from './keyed/timers.js';
import { ttlTests } from './keyed/ttl.js';
import { valueStateTests } from './keyed/value-state.js';
import { validationTests } from './keyed/validation.js';

/**
 * The keyed-state conformance suite: every backend must pass it unchanged. `makeBackend` is
 * called once per test (fresh backend and checkpoint storage); `cleanup` runs after the test.
 */
export function describeKeyedBackendConformance(
  name: string,
  makeBackend: MakeBackend,
  supports: ResolvedSupports,
): void {
  describe(`${name}: keyed state conformance`, () => {
    const ctx = useHarness(makeBackend, supports);
    valueStateTests(ctx);
    listStateTests(ctx);
    reducingAggregatingTests(ctx);
    mapStateTests(ctx);
    keyIterationTests(ctx);
    validationTests(ctx);
    timerTests(ctx);
    snapshotTests(ctx);
    ttlTests(ctx);
  });
}
