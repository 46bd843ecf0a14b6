import fc from 'fast-check';
import { describe, it } from 'vitest';
import { BackendHarness, type MakeBackend } from '../support/backend-harness.js';
import { opArbitrary, runModel } from './model.js';

export interface ModelSuiteOptions {
  /** fast-check runs (default 40). */
  readonly numRuns?: number;
  /** Longest operation sequence (default 60). */
  readonly maxOps?: number;
}

/**
 * Model-based property test: random sequences of state operations, snapshot/restore and
 * rescale (1 → 2 → 1) run against the backend and a plain-Map model; reads are compared after
 * every step and the full contents at the end. A failure prints the shrunk operation sequence.
 */
export function describeModelConformance(name: string, makeBackend: MakeBackend, opts: ModelSuiteOptions = {}): void {
  describe(`${name}: model-based operation sequences`, () => {
    it('matches a plain-Map model through random operations, snapshots and rescales', async () => {
      await fc.assert(
        fc.asyncProperty(fc.array(opArbitrary, { minLength: 1, maxLength: opts.maxOps ?? 60 }), async (ops) => {
          const h = await BackendHarness.create(makeBackend);
          try {
            await runModel(h, ops);
          } finally {
            await h.dispose();
          }
        }),
        { numRuns: opts.numRuns ?? 40 },
      );
    });
  });
}
