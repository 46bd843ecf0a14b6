import { spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CRASH_BACKENDS, makeProofBackend, proofStorage, type ProofBackendKind } from '../../bench/proof/backends.js';
import { unreferencedFiles } from '../../bench/proof/crash-driver.js';
import { checkpointsWithMetadata, checkRetainedCheckpoints } from '../../bench/proof/restore-check.js';
import type { BlobStore } from '../../src/storage/blob-store.js';
import { StorageError } from '../../src/errors.js';
import { LocalBlobStore } from '../../src/storage/local-blob-store.js';
import {
  checkCounts,
  countingInput,
  countingJob,
  runPipeline,
  type PipelineEvent,
  type PipelineResult,
  type CountOutput,
} from '../../src/testing/index.js';
import { FaultyBlobStore, FullDiskStore, type FaultErrno } from '../support/proof/fault-store.js';

/**
 * Resource faults during checkpoints (issue 7, item 4): ENOSPC and EACCES injected into the
 * checkpoint storage (a BlobStore wrapper that fails the way the disk does), and — where the
 * machine allows — a real full tmpfs and a real read-only directory. A checkpoint hit by a fault
 * must fail cleanly (typed error in the abort reason, no _metadata, its files removed), the
 * previous checkpoint must stay restorable, and the job must keep running: once the fault is gone,
 * later checkpoints complete and the output is exactly once.
 */
const JOB_ID = 'faults';
const EXPECTED_TEXT: Record<FaultErrno, string> = {
  ENOSPC: 'disk full (ENOSPC)',
  EACCES: 'permission denied (EACCES)',
};

interface Completion {
  readonly id: number;
  readonly attempt: number;
}

interface FaultRun {
  readonly result: PipelineResult<CountOutput>;
  /** Checkpoints aborted while the fault was on. */
  readonly aborted: readonly (Completion & { readonly reason: string })[];
  readonly completedBeforeFault: readonly Completion[];
  readonly completedAfterFault: readonly Completion[];
}

/**
 * changelog(filesystem) under write faults: a checkpoint completed after the fault references a log
 * segment that the coordinator deleted with an aborted checkpoint (the changelog keeps reusing an
 * upload of a checkpoint that failed after a newer one was confirmed to it). Found by this suite;
 * see docs/PROOF.md "Resource faults". Skipped until fixed so that npm test stays green.
 */
const KNOWN_BROKEN_UNDER_FAULTS: readonly ProofBackendKind[] = [];

describe('resource faults during checkpoints', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    while (dirs.length > 0) await rm(dirs.pop()!, { recursive: true, force: true });
  });

  async function scratch(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'streamstate-faults-'));
    dirs.push(dir);
    return dir;
  }

  const input = countingInput({ records: 3000, keys: 80, partitions: 4, seed: 23 });

  /**
   * Runs the counting job; `faultOn` is called once checkpoint `faultAfter` completed, `faultOff`
   * once `abortsWanted` checkpoints were aborted (or, with `crashOnAbort`, when the job restarts).
   */
  async function runWithFault(
    backend: ProofBackendKind,
    dir: string,
    store: BlobStore,
    hooks: { faultOn: () => void; faultOff: () => void },
    opts: { faultAfter?: number; abortsWanted?: number; crashOnAbort?: boolean } = {},
  ): Promise<FaultRun> {
    const storage = proofStorage(store);
    const faultAfter = opts.faultAfter ?? 3;
    const abortsWanted = opts.abortsWanted ?? 2;
    const aborted: (Completion & { reason: string })[] = [];
    const completedBeforeFault: Completion[] = [];
    const completedAfterFault: Completion[] = [];
    let state: 'before' | 'fault' | 'after' = 'before';
    const onEvent = (e: PipelineEvent): void => {
      if (e.type === 'checkpoint-completed') {
        (state === 'before' ? completedBeforeFault : completedAfterFault).push({
          id: e.checkpointId,
          attempt: e.attempt,
        });
        if (state === 'before' && e.checkpointId >= faultAfter) {
          state = 'fault';
          hooks.faultOn();
        }
      } else if (e.type === 'checkpoint-aborted' && state === 'fault') {
        aborted.push({ id: e.checkpointId, attempt: e.attempt, reason: e.reason });
        if (!opts.crashOnAbort && aborted.length >= abortsWanted) {
          state = 'after';
          hooks.faultOff();
        }
      } else if (e.type === 'restored' && state === 'fault') {
        state = 'after';
        hooks.faultOff();
      }
    };
    const result = await runPipeline(countingJob(input, { parallelism: 2, jobId: JOB_ID }), {
      backend: makeProofBackend(backend, { checkpointStorage: storage, workingDir: join(dir, 'work') }),
      checkpointStorage: storage,
      checkpointEvery: 100,
      numRetainedCheckpoints: 2,
      seed: 5,
      onEvent,
      ...(opts.crashOnAbort
        ? { crashAt: (e: PipelineEvent) => e.type === 'checkpoint-aborted' && e.attempt === 0 }
        : {}),
    });
    return { result, aborted, completedBeforeFault, completedAfterFault };
  }

  /** What every fault run must show: clean failures, later successes, exactly-once output, restorable checkpoints, nothing left over. */
  async function expectCleanRecovery(
    backend: ProofBackendKind,
    dir: string,
    run: FaultRun,
    text: string,
  ): Promise<void> {
    const { result, aborted, completedAfterFault } = run;
    const context = `${backend}: aborted ${JSON.stringify(aborted)}, completed after ${JSON.stringify(completedAfterFault)}`;
    expect(aborted.length, context).toBeGreaterThanOrEqual(1);
    // The abort reason carries the storage error's message: what went wrong and what to do.
    for (const a of aborted) expect(a.reason, context).toContain(text);
    // The job kept running: a checkpoint triggered after the failed ones completed (a restarted attempt may reuse ids).
    const lastAbort = aborted[aborted.length - 1];
    expect(
      completedAfterFault.some(
        (c) => c.attempt > lastAbort.attempt || (c.attempt === lastAbort.attempt && c.id > lastAbort.id),
      ),
      context,
    ).toBe(true);
    const counts = checkCounts(result.committed, input);
    expect(counts.problems, context).toEqual([]);
    expect(counts.ok, context).toBe(true);
    // No aborted checkpoint left a _metadata; every checkpoint that has one restores with consistent state.
    const storage = proofStorage(new LocalBlobStore(join(dir, 'checkpoints')));
    const withMetadata = (await checkpointsWithMetadata(storage, JOB_ID)).map((c) => c.id);
    const completedLater = new Set(completedAfterFault.map((c) => c.id));
    for (const a of aborted) if (!completedLater.has(a.id)) expect(withMetadata, context).not.toContain(a.id);
    const verifier = makeProofBackend(backend, { checkpointStorage: storage, workingDir: join(dir, 'verify') });
    const check = await checkRetainedCheckpoints(storage, verifier, JOB_ID, input);
    expect(check.problems, context).toEqual([]);
    expect(check.checked.length, context).toBeGreaterThanOrEqual(1);
    // The aborted checkpoints' files were removed (changelog: see docs/PROOF.md, leftover segments are gc-able).
    const leftovers = await unreferencedFiles(storage, JOB_ID, join(dir, 'checkpoints'));
    if (backend !== 'changelog-filesystem') expect(leftovers, context).toEqual([]);
  }

  for (const backend of CRASH_BACKENDS) {
    for (const errno of ['ENOSPC', 'EACCES'] as const) {
      it.skipIf(KNOWN_BROKEN_UNDER_FAULTS.includes(backend))(
        `${backend}, ${errno} during checkpoints: they fail cleanly, the job keeps running, later checkpoints complete`,
        async () => {
          const dir = await scratch();
          const store = new FaultyBlobStore(new LocalBlobStore(join(dir, 'checkpoints')));
          const run = await runWithFault(backend, dir, store, {
            faultOn: () => (store.fault = errno),
            faultOff: () => (store.fault = null),
          });
          expect(store.faultedWrites).toBeGreaterThan(0);
          // Every error the "disk" raised reached the runtime as a typed StorageError (STORAGE_IO) with an actionable message.
          expect(store.thrown.length).toBeGreaterThan(0);
          for (const err of store.thrown) {
            expect(err).toBeInstanceOf(StorageError);
            expect((err as StorageError).code).toBe('STORAGE_IO');
            expect((err as StorageError).message).toContain(EXPECTED_TEXT[errno]);
          }
          expect(run.result.crashes).toBe(0);
          await expectCleanRecovery(backend, dir, run, EXPECTED_TEXT[errno]);
        },
        60_000,
      );
    }

    it.skipIf(KNOWN_BROKEN_UNDER_FAULTS.includes(backend))(
      `${backend}, a crash while checkpoints fail with ENOSPC: the job restores the checkpoint before the fault`,
      async () => {
        const dir = await scratch();
        const store = new FaultyBlobStore(new LocalBlobStore(join(dir, 'checkpoints')));
        const run = await runWithFault(
          backend,
          dir,
          store,
          { faultOn: () => (store.fault = 'ENOSPC'), faultOff: () => (store.fault = null) },
          { crashOnAbort: true },
        );
        expect(run.result.crashes).toBe(1);
        const restored = run.result.restoredFrom[0].checkpointId;
        expect(restored).not.toBeNull();
        // The newest checkpoint that completed before the crash: the failed ones did not get in its way.
        const completedBeforeCrash = [...run.completedBeforeFault, ...run.completedAfterFault]
          .filter((c) => c.attempt === 0)
          .map((c) => c.id);
        expect(restored).toBe(Math.max(...completedBeforeCrash));
        await expectCleanRecovery(backend, dir, run, EXPECTED_TEXT.ENOSPC);
      },
      60_000,
    );
  }

  // A real full file system: a 2 MiB tmpfs, filled up after checkpoint 3. Needs root (mount); skipped otherwise.
  const tmpfsAllowed = canMountTmpfs();
  it.skipIf(!tmpfsAllowed)(
    'filesystem on a real full tmpfs: ENOSPC from the kernel fails checkpoints cleanly until space is freed',
    async () => {
      const dir = await scratch();
      const mountPoint = join(dir, 'checkpoints');
      await mkdir(mountPoint);
      const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mountPoint]);
      expect(mounted.status, String(mounted.stderr)).toBe(0);
      try {
        const store = new FullDiskStore(new LocalBlobStore(mountPoint), join(mountPoint, 'filler'));
        const run = await runWithFault(
          'filesystem',
          dir,
          store,
          { faultOn: () => (store.full = true), faultOff: () => (store.full = false) },
          { abortsWanted: 1 },
        );
        await expectCleanRecovery('filesystem', dir, run, EXPECTED_TEXT.ENOSPC);
      } finally {
        spawnSync('umount', ['-l', mountPoint]);
      }
    },
    60_000,
  );

  // Real permission bits: root ignores them, so this runs only as an ordinary user.
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  it.skipIf(isRoot)(
    'filesystem in a directory made read-only: EACCES from the kernel fails checkpoints cleanly until it is writable again',
    async () => {
      const dir = await scratch();
      const jobDir = join(dir, 'checkpoints', JOB_ID);
      const run = await runWithFault(
        'filesystem',
        dir,
        new LocalBlobStore(join(dir, 'checkpoints')),
        { faultOn: () => void chmod(jobDir, 0o555), faultOff: () => void chmod(jobDir, 0o755) },
        { abortsWanted: 1 },
      );
      await chmod(jobDir, 0o755);
      await expectCleanRecovery('filesystem', dir, run, EXPECTED_TEXT.EACCES);
    },
    60_000,
  );
});

function canMountTmpfs(): boolean {
  if (process.platform !== 'linux' || typeof process.getuid !== 'function' || process.getuid() !== 0) return false;
  const probe = join(tmpdir(), `streamstate-mount-probe-${process.pid}`);
  spawnSync('mkdir', ['-p', probe]);
  const ok = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe]).status === 0;
  if (ok) spawnSync('umount', [probe]);
  spawnSync('rmdir', [probe]);
  return ok;
}
