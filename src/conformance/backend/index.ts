import { describe, expect, it } from 'vitest';
import type { StateBackend } from '../../backend/contract.js';
import type { CheckpointStorage } from '../../checkpoint/storage.js';
import type { BackendFixture, MakeBackend } from './harness.js';
import { describeKeyedBackendConformance } from './keyed-suite.js';
import { describeModelConformance, type ModelSuiteOptions } from './model-suite.js';
import { describeOperatorBackendConformance } from './operator-suite.js';
import { CONFORMANCE_SECTIONS, type ConformanceSection, checkConformanceOptions } from './options.js';
import type { ParityBehaviour } from './parity/behaviours.js';
import { describeParityConformance } from './parity/index.js';
import { describeRescalingConformance, RESCALING_CASES } from './rescaling.js';
import { type BackendSupports, type ResolvedSupports, resolveSupports } from './supports.js';

export { CONFORMANCE_SECTIONS, type ConformanceSection };

/**
 * What `create` returns for one test: a backend (a preset such as `memory()` brings its checkpoint
 * storage), or the backend with the checkpoint storage to use and a cleanup that runs after the test.
 */
export type BackendUnderTest =
  | StateBackend
  | {
      readonly backend: StateBackend;
      /** Checkpoint storage the test writes to; default the preset's (`backend.checkpointStorage`). */
      readonly storage?: CheckpointStorage;
      cleanup?(): Promise<void>;
    };

export interface BackendConformanceOptions {
  /** What the backend supports beyond the required contract (default: everything). */
  readonly supports?: BackendSupports;
  /** Parity behaviours the backend does not meet yet: reported as skipped, not failed. */
  readonly skip?: readonly ParityBehaviour[];
  /** The sections to run (default all): e.g. only `rescaling` over slow storage. */
  readonly sections?: readonly ConformanceSection[];
  /** Rescaling cases [from parallelism, to parallelism]; default a matrix of five. */
  readonly rescaling?: readonly (readonly [number, number])[];
  /** The model-based section's size. */
  readonly model?: ModelSuiteOptions;
}

function fixture(made: BackendUnderTest): BackendFixture {
  if ('backend' in made)
    return {
      backend: made.backend,
      ...(made.storage ? { storage: made.storage } : {}),
      cleanup: made.cleanup ?? (async () => undefined),
    };
  return { backend: made, cleanup: async () => undefined };
}

/** The declarations the suite can check against the backend itself. */
function describeDeclarations(name: string, make: MakeBackend, supports: ResolvedSupports): void {
  describe(`${name}: declared capabilities`, () => {
    it('supportsSavepointFormat agrees with the manifest (native always, canonical as declared)', async () => {
      const { backend, cleanup } = await make();
      try {
        expect(backend.supportsSavepointFormat('native')).toBe(true);
        expect(backend.supportsSavepointFormat('canonical')).toBe(supports.canonicalSavepoints);
      } finally {
        await cleanup();
      }
    });
  });
}

/**
 * The backend conformance suite of `streamstate/conformance`: every section for one state
 * backend (keyed state, operator state, rescaling, model-based sequences, Flink parity). Call it
 * at the top level of a vitest test file. `create` runs once per test (a fresh backend and
 * checkpoint storage each time); the suite drives the backend the way a runtime does, through
 * real checkpoint streams, `_metadata` and the assignment of handles to subtasks.
 */
export function describeBackendConformance(
  name: string,
  create: () => BackendUnderTest | Promise<BackendUnderTest>,
  options: BackendConformanceOptions = {},
): void {
  checkConformanceOptions(options);
  const make: MakeBackend = async () => fixture(await create());
  const supports = resolveSupports(options.supports);
  const sections = new Set(options.sections ?? CONFORMANCE_SECTIONS);
  describeDeclarations(name, make, supports);
  if (sections.has('keyed')) describeKeyedBackendConformance(name, make, supports);
  if (sections.has('operator')) describeOperatorBackendConformance(name, make, supports);
  if (sections.has('rescaling'))
    describeRescalingConformance(name, make, supports, options.rescaling ?? RESCALING_CASES);
  if (sections.has('model')) describeModelConformance(name, make, supports, options.model);
  if (sections.has('parity')) describeParityConformance(name, make, supports, options.skip);
}
