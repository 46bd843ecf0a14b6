import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { verifySnapshot } from '../../src/savepoint/verify.js';
import { locateSnapshot } from '../../src/savepoint/locate.js';
import {
  BackendHarness,
  convert,
  convertOptions,
  keyModels,
  misplacedEntries,
  normalizeModel,
  readContents,
  SOURCE_BACKENDS,
  writeSource,
  type KeyModel,
} from './max-parallelism-support.js';

/**
 * Changing max parallelism with convert (issue 17 item 1): random keyed state from every source
 * backend (its checkpoints: heap files, leveldb incremental, changelog handles) goes
 * 128 -> 4096 -> 7 -> 128, each step at another parallelism, and every key's value, list, map,
 * TTL value (and its timestamp) and timers are identical after each step; operator state is
 * unchanged; every entry sits in the key group its key hashes to; every result verifies.
 */

/** The route rehashKeyedState takes, told by its progress phases (src/savepoint/rehash.ts). */
type Route = 'spill' | 'memory' | 'divisor';

function routeOf(phases: ReadonlySet<string>): Route | undefined {
  const all = [...phases].join('\n');
  if (all.includes('spill files')) return 'spill';
  if (all.includes('merging')) return 'divisor';
  if (all.includes('re-hashing')) return 'memory';
  return undefined;
}

/**
 * [maxParallelism, parallelism, rehashMemoryBytes, route] of each step after the source (written
 * at 128): the chain 128 -> 4096 -> 7 -> 128 (through spill files with a budget of 0, then
 * the general path in memory twice), then a multiple in memory (128 -> 4096), divisors merged in one
 * pass (4096 -> 64 -> 32), and a multiple through spill files with a budget of 1 byte (32 -> 128).
 */
const CHAIN: ReadonlyArray<readonly [number, number, number | undefined, Route]> = [
  [4096, 3, 0, 'spill'],
  [7, 2, undefined, 'memory'],
  [128, 1, undefined, 'memory'],
  [4096, 2, undefined, 'memory'],
  [64, 3, undefined, 'divisor'],
  [32, 1, 0, 'divisor'],
  [128, 2, 1, 'spill'],
];

async function expectOk(path: string): Promise<void> {
  const located = await locateSnapshot(path);
  try {
    expect((await verifySnapshot(located)).problems).toEqual([]);
  } finally {
    await located.close();
  }
}

async function roundTrip(backend: string, model: KeyModel[], parallelism: number): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'ss-maxp-'));
  const h = await BackendHarness.create(async () => SOURCE_BACKENDS[backend](root));
  try {
    const written = await writeSource(h, root, model, { parallelism });
    const want = normalizeModel(model);
    const withSession = model.filter((m) => m.session !== null).length;
    let src = written.path;
    for (const [step, [maxP, p, memory, route]] of CHAIN.entries()) {
      const dst = join(root, `step-${step}-${maxP}`);
      const rehashMemory = memory === undefined ? {} : { rehashMemoryBytes: memory };
      const phases = new Set<string>();
      const progress = (e: { phase: string }): void => void phases.add(e.phase);
      await convert(
        src,
        dst,
        convertOptions(root, { maxParallelism: maxP, parallelism: p, progress, ...rehashMemory }),
      );
      const got = await readContents(dst);
      expect({ step: maxP, keys: got.keys }).toEqual({ step: maxP, keys: want });
      // An empty state takes no route; any other goes the one this step is for.
      if (got.keys.length > 0) expect({ step: maxP, route: routeOf(phases) }).toEqual({ step: maxP, route });
      expect(got.split).toEqual(written.split);
      expect(got.sessionsAfterTtl).toBe(0);
      expect(withSession === 0 || got.keys.some((k) => k.session !== null)).toBe(true);
      expect(await misplacedEntries(dst)).toBe(0);
      await expectOk(dst);
      src = dst;
    }
  } finally {
    await h.dispose();
    await rm(root, { recursive: true, force: true });
  }
}

describe('max parallelism round trip 128 -> 4096 -> 7 -> 128 (-> 4096 -> 64 -> 32 -> 128)', () => {
  it.each(Object.keys(SOURCE_BACKENDS))(
    '%s checkpoints: every key identical after every step',
    async (backend) => {
      await fc.assert(
        fc.asyncProperty(keyModels, fc.integer({ min: 1, max: 3 }), async (model, parallelism) =>
          roundTrip(backend, model, parallelism),
        ),
        { numRuns: 5 },
      );
    },
    60_000,
  );
});
