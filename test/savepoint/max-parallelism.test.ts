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

/**
 * [maxParallelism, parallelism, rehashMemoryBytes] of each step after the source (written at 128):
 * the first step goes through spill files (memory budget 0), the others are re-hashed in memory.
 */
const CHAIN: ReadonlyArray<readonly [number, number, number | undefined]> = [
  [4096, 3, 0],
  [7, 2, undefined],
  [128, 1, undefined],
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
    for (const [step, [maxP, p, memory]] of CHAIN.entries()) {
      const dst = join(root, `step-${step}-${maxP}`);
      const rehashMemory = memory === undefined ? {} : { rehashMemoryBytes: memory };
      await convert(src, dst, convertOptions(root, { maxParallelism: maxP, parallelism: p, ...rehashMemory }));
      const got = await readContents(dst);
      expect({ step: maxP, keys: got.keys }).toEqual({ step: maxP, keys: want });
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

describe('max parallelism round trip 128 -> 4096 -> 7 -> 128', () => {
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
