import { StreamStateError } from '../../errors.js';
import { PARITY_BEHAVIOURS } from './parity/behaviours.js';
import { BACKEND_CAPABILITIES } from './supports.js';

/** The sections of the suite, each a `describe` of its own. */
export const CONFORMANCE_SECTIONS = ['keyed', 'operator', 'rescaling', 'model', 'parity'] as const;

export type ConformanceSection = (typeof CONFORMANCE_SECTIONS)[number];

/** Rescaling cases stay within the suite's maxParallelism. */
const MAX_RESCALING_PARALLELISM = 128;

const invalid = (message: string): StreamStateError => new StreamStateError('INVALID_ARGUMENT', message);

const list = (names: readonly string[]): string => names.join(', ');

/**
 * Checks the options of describeBackendConformance before anything is registered, so a typo (a
 * capability, section or behaviour the suite does not know) fails the test file at once instead
 * of silently running or skipping the wrong tests.
 */
export function checkConformanceOptions(options: {
  readonly supports?: object;
  readonly skip?: readonly string[];
  readonly sections?: readonly string[];
  readonly rescaling?: readonly (readonly [number, number])[];
}): void {
  for (const [key, value] of Object.entries(options.supports ?? {})) {
    if (!(BACKEND_CAPABILITIES as readonly string[]).includes(key))
      throw invalid(
        `supports.${key} is not a capability of the backend conformance suite; known: ${list(BACKEND_CAPABILITIES)}.`,
      );
    if (value !== undefined && typeof value !== 'boolean')
      throw invalid(`supports.${key} must be true or false, got ${JSON.stringify(value)}.`);
  }
  for (const behaviour of options.skip ?? [])
    if (!(PARITY_BEHAVIOURS as readonly string[]).includes(behaviour))
      throw invalid(`skip: '${behaviour}' is not a parity behaviour; known: ${list(PARITY_BEHAVIOURS)}.`);
  for (const section of options.sections ?? [])
    if (!(CONFORMANCE_SECTIONS as readonly string[]).includes(section))
      throw invalid(`sections: '${section}' is not a section of the suite; known: ${list(CONFORMANCE_SECTIONS)}.`);
  if (options.sections !== undefined && options.sections.length === 0)
    throw invalid('sections is empty: name at least one section, or leave the option out to run them all.');
  for (const pair of options.rescaling ?? []) {
    const ok =
      Array.isArray(pair) &&
      pair.length === 2 &&
      pair.every((p) => Number.isInteger(p) && p >= 1 && p <= MAX_RESCALING_PARALLELISM);
    if (!ok)
      throw invalid(
        `rescaling: ${JSON.stringify(pair)} is not a case [from, to] of two parallelisms between 1 and ${MAX_RESCALING_PARALLELISM}.`,
      );
  }
}
