import { it } from 'vitest';
import type { KeyedStateBackend } from '../../../backend/contract.js';
import { stringSerializer } from '../../../serializers/builtins.js';
import type { SuiteContext } from '../context.js';
import type { BackendCapability } from '../supports.js';
import type { ParityBehaviour } from './behaviours.js';

/** A conformance context that knows which behaviours the backend under test skips. */
export interface ParityContext extends SuiteContext {
  readonly skip: ReadonlySet<ParityBehaviour>;
}

/**
 * `it`, skipped when the backend lists `behaviour` in `skip` (`behaviour` null: never skipped by
 * name) or does not support `requires`. The title says which behaviour it belongs to, so a skip
 * is easy to trace.
 */
export function parityIt(
  p: ParityContext,
  behaviour: ParityBehaviour | null,
  title: string,
  fn: () => Promise<void>,
  timeoutMs?: number,
  requires?: BackendCapability,
): void {
  const gap = behaviour !== null && p.skip.has(behaviour) && process.env.PARITY_RUN_GAPS !== '1';
  const unsupported = requires !== undefined && !p.supports[requires];
  it.skipIf(gap || unsupported)(behaviour === null ? title : `${title} [${behaviour}]`, fn, timeoutMs);
}

/** A processing-time clock the test moves by hand: the TTL time provider is injected through params.clock. */
export class ManualClock {
  constructor(public now = 1_000_000) {}
  readonly read = (): number => this.now;
  advance(ms: number): void {
    this.now += ms;
  }
}

export async function keyedWithClock(p: ParityContext, clock: ManualClock): Promise<KeyedStateBackend<string>> {
  return p.h.createKeyed({ keySerializer: stringSerializer, clock: clock.read });
}
