import type { MakeBackend } from '../support/backend-harness.js';
import { describeKeyedBackendConformance } from './keyed-suite.js';
import { describeModelConformance, type ModelSuiteOptions } from './model-suite.js';
import { describeOperatorBackendConformance } from './operator-suite.js';
import { describeParityConformance } from './parity/index.js';
import { describeRescalingConformance, RESCALING_CASES } from './rescaling.js';

export interface ConformanceOptions {
  readonly model?: ModelSuiteOptions;
  /** Rescaling cases [from, to]; default the full matrix. */
  readonly rescaling?: readonly (readonly [number, number])[];
}

/** Every conformance section for one backend: keyed, operator, rescaling, model-based, Flink parity. */
export function describeBackendConformance(
  name: string,
  makeBackend: MakeBackend,
  opts: ConformanceOptions = {},
): void {
  describeKeyedBackendConformance(name, makeBackend);
  describeOperatorBackendConformance(name, makeBackend);
  describeRescalingConformance(name, makeBackend, opts.rescaling ?? RESCALING_CASES);
  describeModelConformance(name, makeBackend, opts.model);
  describeParityConformance(name, makeBackend);
}
