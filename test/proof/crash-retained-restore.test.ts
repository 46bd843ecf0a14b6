import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CRASH_BACKENDS, makeProofBackend, proofStorage } from '../../bench/proof/backends.js';
import { unreferencedFiles } from '../../bench/proof/crash-driver.js';
import { checkRetainedCheckpoints } from '../../bench/proof/restore-check.js';
import { LocalBlobStore } from '../../src/storage/local-blob-store.js';
import { checkCounts, countingInput, countingJob, runPipeline } from '../../src/testing/index.js';

/**
 * Found by the crash suite, reproduced here without any crash: the harness runs far ahead of its
 * checkpoint completions, so a checkpoint's snapshot is often taken after checkpoints that were
 * pending at its trigger have completed. changelog(filesystem) then references a segment of such a
 * checkpoint, which retention deleted (the coordinator protected only files of the checkpoint
 * completed at trigger time): the retained checkpoints did not restore. Every retained
 * checkpoint must restore, with state matching its source offsets.
 */
describe('every retained checkpoint restores after a run with many checkpoints in flight', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    while (dirs.length > 0) await rm(dirs.pop()!, { recursive: true, force: true });
  });

  for (const backend of CRASH_BACKENDS) {
    it(`${backend}`, async () => {
      for (const seed of [1, 2, 3]) {
        const dir = await mkdtemp(join(tmpdir(), `streamstate-retained-${backend}-`));
        dirs.push(dir);
        const storage = proofStorage(new LocalBlobStore(join(dir, 'checkpoints')));
        const input = countingInput({ records: 1500, keys: 60, partitions: 4, seed: 17 + seed });
        const result = await runPipeline(countingJob(input, { parallelism: 2, jobId: 'retained' }), {
          backend: makeProofBackend(backend, { checkpointStorage: storage, workingDir: join(dir, 'work') }),
          checkpointStorage: storage,
          checkpointEvery: 100,
          numRetainedCheckpoints: 2,
          seed,
        });
        expect(checkCounts(result.committed, input).ok).toBe(true);
        const verifier = makeProofBackend(backend, { checkpointStorage: storage, workingDir: join(dir, 'verify') });
        const check = await checkRetainedCheckpoints(storage, verifier, 'retained', input);
        expect(check.problems, `${backend} seed ${seed}`).toEqual([]);
        expect(check.checked.length, `${backend} seed ${seed}`).toBeGreaterThanOrEqual(1);
        expect(check.checked.length).toBeLessThanOrEqual(2);
        // Known gap, reported rather than asserted for changelog: segments of aborted/superseded uploads can stay behind until the next restore's gc.
        if (backend !== 'changelog-filesystem')
          expect(await unreferencedFiles(storage, 'retained', join(dir, 'checkpoints'))).toEqual([]);
      }
    }, 60_000);
  }
});
