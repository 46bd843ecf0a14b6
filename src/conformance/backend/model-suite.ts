import { describe, it } from 'vitest';
import { BackendHarness, type MakeBackend } from './harness.js';
import { loadFastCheck } from './fast-check.js';
import { opArbitrary, runModel } from './model.js';
import type { ResolvedSupports } from './supports.js';

export interface ModelSuiteOptions {
  /** fast-check runs (default 40). */
  readonly numRuns?: number;
  /** Longest operation sequence (default 60). */
  readonly maxOps?: number;
}

/**
 * Model-based property test: random sequences of state operations, snapshot/restore and
 * rescale (1 → 2 → 1, where supported) run against the backend and a plain-Map model; reads are
 * compared after every step and the full contents at the end. A failure prints the shrunk
 * operation sequence.
 */
export function describeModelConformance(
  name: string,
  makeBackend: MakeBackend,
  supports: ResolvedSupports,
  opts: ModelSuiteOptions = {},
): void {
  describe(`${name}: model-based operation sequences`, () => {
    it('matches a plain-Map model through random operations, snapshots and rescales', async () => {
      const fc = await loadFastCheck();
      await fc.assert(
        fc.asyncProperty(
          fc.array(opArbitrary(fc, supports.rescaling), { minLength: 1, maxLength: opts.maxOps ?? 60 }),
          async (ops) => {
            const h = await BackendHarness.create(makeBackend);
            try {
              await runModel(h, ops);
            } finally {
              await h.dispose();
            }
          },
        ),
        { numRuns: opts.numRuns ?? 40 },
      );
    });
  });
}
