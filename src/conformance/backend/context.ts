import { afterEach, beforeEach } from 'vitest';
import type { KeyedStateBackend } from '../../backend/contract.js';
import { int32Serializer, stringSerializer } from '../../serializers/builtins.js';
import { BackendHarness, type MakeBackend } from './harness.js';
import type { ResolvedSupports } from './supports.js';

/** What every conformance section gets: a fresh harness (and so a fresh backend + storage) per test. */
export interface SuiteContext {
  readonly h: BackendHarness;
  /** What the backend under test declared it supports. */
  readonly supports: ResolvedSupports;
  /** A keyed backend with string keys, maxParallelism 128, parallelism 1. */
  stringKeyed(): Promise<KeyedStateBackend<string>>;
  /** A keyed backend with int32 keys, maxParallelism 128, parallelism 1. */
  intKeyed(): Promise<KeyedStateBackend<number>>;
}

export function useHarness(make: MakeBackend, supports: ResolvedSupports): SuiteContext {
  let current: BackendHarness | undefined;
  beforeEach(async () => {
    current = await BackendHarness.create(make);
  });
  afterEach(async () => {
    const h = current;
    current = undefined;
    await h?.dispose();
  });
  const ctx: SuiteContext = {
    get h(): BackendHarness {
      if (!current) throw new Error('the harness exists only inside a test');
      return current;
    },
    supports,
    stringKeyed: () => ctx.h.createKeyed({ keySerializer: stringSerializer }),
    intKeyed: () => ctx.h.createKeyed({ keySerializer: int32Serializer }),
  };
  return ctx;
}
