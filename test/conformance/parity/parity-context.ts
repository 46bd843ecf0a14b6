import { it } from 'vitest';
import type { KeyedStateBackend } from '../../../src/backend/contract.js';
import { stringSerializer } from '../../../src/serializers/builtins.js';
import type { SuiteContext } from '../context.js';
import { isKnownGap, type ParityBehaviour } from './known-gaps.js';

/** A conformance context that knows which backend it runs on (for known-gaps.ts). */
export interface ParityContext extends SuiteContext {
  readonly backendName: string;
}

/**
 * `it`, skipped when (backend, behaviour) is listed in known-gaps.ts. `behaviour` null: never
 * skipped. The title says which behaviour it belongs to, so a skip is easy to trace.
 */
export function parityIt(
  p: ParityContext,
  behaviour: ParityBehaviour | null,
  title: string,
  fn: () => Promise<void>,
  timeoutMs?: number,
): void {
  const skip = behaviour !== null && isKnownGap(p.backendName, behaviour);
  it.skipIf(skip)(behaviour === null ? title : `${title} [${behaviour}]`, fn, timeoutMs);
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
