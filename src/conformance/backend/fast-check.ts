import { loadOptional, type OptionalDependency } from '../../util/optional-dependency.js';

/** fast-check's module: an optional peer dependency of `streamstate/conformance`. */
export type FastCheck = typeof import('fast-check');

const FAST_CHECK: OptionalDependency = {
  feature: 'the property-based tests of the backend conformance suite (streamstate/conformance)',
  packages: ['fast-check@^4.0.0'],
};

/**
 * fast-check, loaded by the tests that generate cases when they run (never at import): the rest
 * of `streamstate/conformance` works without it, and a missing package is DEPENDENCY_MISSING.
 */
export function loadFastCheck(): Promise<FastCheck> {
  return loadOptional(FAST_CHECK, () => import('fast-check'));
}
