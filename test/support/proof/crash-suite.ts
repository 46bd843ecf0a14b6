import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProofBackendKind } from '../../../bench/proof/backends.js';
import { runCrashSuite, type CrashSuiteResult } from '../../../bench/proof/crash-driver.js';
import type { CrashJobShape } from '../../../bench/proof/crash-protocol.js';
import { ensureCrashChild } from './crash-child-build.js';

/** The short crash suite's job: small enough that ~20 kills take seconds, with a checkpoint every ~100 records. */
export const SHORT_CRASH_JOB: Partial<CrashJobShape> = {
  records: 1500,
  keys: 60,
  partitions: 4,
  parallelism: 2,
  checkpointEvery: 100,
  numRetained: 2,
};
export const SHORT_CRASH_KILLS = 20;

/**
 * The short crash suite for one backend (npm test): ~20 SIGKILLs of a child running the counting
 * job — targeted at data-file uploads, inside the _metadata write, mid-cleanup, after durable
 * commits, and at random moments — each followed by restoring every checkpoint on disk and
 * resuming; every run must end exactly once. `CRASH_SEED` replays another seed.
 */
export function describeCrashSuite(backend: ProofBackendKind, seed: number): void {
  describe(`crash suite (SIGKILL): ${backend}`, () => {
    let scratch = '';
    let child = '';
    beforeAll(async () => {
      child = await ensureCrashChild();
      scratch = await mkdtemp(join(tmpdir(), `streamstate-crash-${backend}-`));
    }, 240_000);
    afterAll(async () => {
      if (scratch !== '') await rm(scratch, { recursive: true, force: true });
    });

    it(`survives ${SHORT_CRASH_KILLS} kills: every checkpoint with a _metadata restores consistently, every run commits exactly once`, async () => {
      const effectiveSeed = process.env.CRASH_SEED === undefined ? seed : Number(process.env.CRASH_SEED);
      const result: CrashSuiteResult = await runCrashSuite({
        backend,
        kills: SHORT_CRASH_KILLS,
        seed: effectiveSeed,
        scratchDir: scratch,
        childScript: child,
        job: SHORT_CRASH_JOB,
      });
      const context = `${backend}, seed ${effectiveSeed}: ${JSON.stringify({ ...result, leftoverFiles: result.leftoverFiles.length })}`;
      expect(result.failures, context).toEqual([]);
      expect(result.kills, context).toBe(SHORT_CRASH_KILLS);
      // The first run is the clean calibration run; every run (with or without kills) ended exactly once.
      expect(result.runsExactlyOnce, context).toBe(result.runs);
      expect(result.runs, context).toBeGreaterThan(1);
      // Checkpoints were really restored and compared after the kills, not just listed.
      expect(result.checkpointsRestored, context).toBeGreaterThanOrEqual(result.kills);
      const kinds = Object.entries(result.killsByKind)
        .filter(([, n]) => n > 0)
        .map(([k]) => k);
      expect(kinds.length, `${context}: kinds hit ${kinds.join(', ')}`).toBeGreaterThanOrEqual(4);
    }, 180_000);
  });
}
