import { describe } from 'vitest';
import type { MakeBackend } from '../../support/backend-harness.js';
import { useHarness } from '../context.js';
import { closedBackendTests } from './closed.js';
import { errorClassTests } from './error-parity.js';
import { mapKeyTests } from './map-keys.js';
import type { ParityContext } from './parity-context.js';
import { restoredStateTests } from './restored.js';
import { ttlParityTests } from './ttl.js';

/**
 * The Flink-parity suite (issue 13): behaviours Flink's StateBackendTestBase, TtlStateTestBase
 * and StateBackendMigrationTestBase check, in our own words, with one answer on every backend.
 * Where streamstate chooses differently from Flink on purpose, docs/SEMANTICS.md says so and the
 * suite asserts our choice. Gaps a backend still has are listed in known-gaps.ts (skipped there).
 */
export function describeParityConformance(name: string, makeBackend: MakeBackend): void {
  describe(`${name}: Flink parity`, () => {
    const ctx = useHarness(makeBackend);
    const p: ParityContext = {
      backendName: name,
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
