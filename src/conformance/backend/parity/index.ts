import { describe } from 'vitest';
import type { MakeBackend } from '../harness.js';
import { useHarness } from '../context.js';
import { closedBackendTests } from './closed.js';
import { errorClassTests } from './error-parity.js';
import { mapKeyTests } from './map-keys.js';
import type { ResolvedSupports } from '../supports.js';
import type { ParityBehaviour } from './behaviours.js';
import type { ParityContext } from './parity-context.js';
import { restoredStateTests } from './restored.js';
import { ttlParityTests } from './ttl.js';

/**
 * The Flink-parity suite (issue 13): behaviours Flink's StateBackendTestBase, TtlStateTestBase
 * and StateBackendMigrationTestBase check, in our own words, with one answer on every backend.
 * Where streamstate chooses differently from Flink on purpose, docs/SEMANTICS.md says so and the
 * suite asserts our choice. Behaviours a backend does not meet yet it names in `skip` (behaviours.ts).
 */
export function describeParityConformance(
  name: string,
  makeBackend: MakeBackend,
  supports: ResolvedSupports,
  skip: readonly ParityBehaviour[] = [],
): void {
  describe(`${name}: Flink parity`, () => {
    const ctx = useHarness(makeBackend, supports);
    const p: ParityContext = {
      skip: new Set(skip),
      supports,
      get h() {
        return ctx.h;
      },
      stringKeyed: () => ctx.stringKeyed(),
      intKeyed: () => ctx.intKeyed(),
    };
    ttlParityTests(p);
    restoredStateTests(p);
    closedBackendTests(p);
    mapKeyTests(p);
    errorClassTests(p);
  });
}
