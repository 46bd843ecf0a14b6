import { spawn } from 'node:child_process';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import { referencedFiles } from '../../src/backend/handles.js';
import { isLeaseName } from '../../src/checkpoint/lease.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import { resolveHandlePath } from '../../src/checkpoint/streams.js';
import { LocalBlobStore } from '../../src/storage/local-blob-store.js';
import {
  checkCounts,
  countingInput,
  SeededRandom,
  type CountInput,
  type CountOutput,
} from '../../src/testing/index.js';
import { makeProofBackend, proofStorage, type ProofBackendKind } from './backends.js';
import { CHILD_FAILED_EXIT, type ChildMessage, type CrashChildConfig, type CrashJobShape } from './crash-protocol.js';
import { readTransactionLog } from './durable-output.js';
import {
  countFor,
  emptyKillPointCounts,
  TARGETED_KILL_KINDS,
  type KillKind,
  type KillPlan,
  type KillPointCounts,
} from './kill-switch.js';
import { checkpointsWithMetadata, checkRetainedCheckpoints } from './restore-check.js';

export const DEFAULT_CRASH_JOB: CrashJobShape = {
  records: 4000,
  keys: 60,
  partitions: 4,
  inputSeed: 17,
  parallelism: 2,
  checkpointEvery: 120,
  numRetained: 2,
  inlineThreshold: 0,
};

export interface CrashSuiteOptions {
  readonly backend: ProofBackendKind;
  /** Stop once this many children were killed. */
  readonly kills: number;
  readonly seed: number;
  /** Scratch directory (created; the caller removes it). */
  readonly scratchDir: string;
  /** The compiled child entry (dist/bench/crash-child.js). */
  readonly childScript: string;
  readonly job?: Partial<CrashJobShape>;
  /** Kills per job run before a child is let finish (default 5). */
  readonly maxKillsPerRun?: number;
  /** Share of kills the parent times at random instead of targeting a kill point (default 0.35). */
  readonly randomShare?: number;
  /** A child that takes longer is killed and counted as a hang (default 120 s). */
  readonly childTimeoutMs?: number;
  /** Restore every retained checkpoint after each kill (default true; false: only at the end of each run). */
  readonly checkAfterEachKill?: boolean;
  readonly log?: (line: string) => void;
}

export interface CrashSuiteResult {
  readonly backend: ProofBackendKind;
  readonly kills: number;
  readonly killsByKind: Record<KillKind, number>;
  /** Targeted plans a child finished without reaching (its run then ended normally). */
  readonly plansNotReached: number;
  /** Random kills timed after the child had already finished. */
  readonly randomKillsMissed: number;
  /** Job runs (each from scratch to the end of the input, through its kills). */
  readonly runs: number;
  readonly children: number;
  /** Checkpoints (with _metadata) restored and compared with their source offsets. */
  readonly checkpointsRestored: number;
  /** Runs whose committed output was exactly once (checkCounts ok, no duplicate transaction). */
  readonly runsExactlyOnce: number;
  /** Files left in a finished job's directory that no retained checkpoint references (putAtomic temp files included). */
  readonly leftoverFiles: readonly string[];
  readonly failures: readonly string[];
  readonly millis: number;
  /** The job shape used. */
  readonly job: CrashJobShape;
}

export interface ChildOutcome {
  readonly killed: boolean;
  readonly exitCode: number | null;
  readonly messages: readonly ChildMessage[];
  readonly stderr: string;
  readonly timedOut: boolean;
  readonly millis: number;
}

/**
 * The crash suite's parent: runs the counting job in child processes and kills them with SIGKILL —
 * at targeted kill points (mid data-file upload, inside the _metadata putAtomic, mid-cleanup, after
 * a durable commit) or at random moments — resuming each time from the latest completed
 * checkpoint until the input is done. After every kill it restores every checkpoint that has a
 * _metadata (state must match its source offsets); after every run the committed output must be
 * exactly once.
 */
export async function runCrashSuite(opts: CrashSuiteOptions): Promise<CrashSuiteResult> {
  const started = Date.now();
  const job: CrashJobShape = { ...DEFAULT_CRASH_JOB, ...opts.job };
  const log = opts.log ?? (() => undefined);
  const rng = new SeededRandom(opts.seed);
  const maxKillsPerRun = opts.maxKillsPerRun ?? 5;
  const randomShare = opts.randomShare ?? 0.35;
  const input = countingInput({
    records: job.records,
    keys: job.keys,
    partitions: job.partitions,
    seed: job.inputSeed,
  });
  const killsByKind = Object.fromEntries([...TARGETED_KILL_KINDS, 'random'].map((k) => [k, 0])) as Record<
    KillKind,
    number
  >;
  const failures: string[] = [];
  const leftoverFiles: string[] = [];
  let kills = 0;
  let plansNotReached = 0;
  let randomKillsMissed = 0;
  let runs = 0;
  let children = 0;
  let checkpointsRestored = 0;
  let runsExactlyOnce = 0;
  await mkdir(opts.scratchDir, { recursive: true });

  const parentWork = join(opts.scratchDir, 'parent-work');
  const runChild = (cfg: CrashChildConfig, randomKillAfterMs: number | null): Promise<ChildOutcome> =>
    spawnChild(opts.childScript, cfg, randomKillAfterMs, opts.childTimeoutMs ?? 120_000);

  // Calibration: one clean run tells how many kill points a child passes and how long it runs.
  let calibration: KillPointCounts = emptyKillPointCounts();
  let calibrationMillis = 1000;

  for (let runNo = 0; kills < opts.kills || runNo === 0; runNo++) {
    runs++;
    const runDir = join(opts.scratchDir, `run-${runNo}`);
    await rm(runDir, { recursive: true, force: true });
    const checkpointDir = join(runDir, 'checkpoints');
    const storage = proofStorage(new LocalBlobStore(checkpointDir), job.inlineThreshold);
    const verifier = makeProofBackend(opts.backend, { checkpointStorage: storage, workingDir: parentWork });
    const jobId = `crash-${opts.backend}-${runNo}`;
    const outputFile = join(runDir, 'committed.log');
    let killsThisRun = 0;
    let finished = false;
    let lastChildCheckpoints = 0;
    for (let childNo = 0; !finished; childNo++) {
      const calibrating = runNo === 0;
      const wantKill = !calibrating && killsThisRun < maxKillsPerRun && kills < opts.kills;
      const plan = wantKill ? chooseKill(rng, randomShare, calibration) : null;
      const workingDir = join(runDir, `work-${childNo}`);
      const cfg: CrashChildConfig = {
        backend: opts.backend,
        checkpointDir,
        workingDir,
        outputFile,
        jobId,
        job,
        seed: rng.int(1e9),
        processNo: childNo,
        kill: plan !== null && plan !== 'random' ? plan : null,
      };
      const randomDelay = plan === 'random' ? Math.floor(rng.next() * calibrationMillis * 0.6) : null;
      children++;
      const outcome = await runChild(cfg, randomDelay);
      const what = `${opts.backend} run ${runNo} child ${childNo} (${describePlan(plan, randomDelay)})`;
      // A killed child's local disk is gone with it (a new machine takes over).
      await rm(workingDir, { recursive: true, force: true });
      if (outcome.killed) {
        if (plan === null) {
          failures.push(`${what}: killed without a kill plan${outcome.timedOut ? ' (hung: timed out)' : ''}`);
          break;
        }
        kills++;
        killsThisRun++;
        killsByKind[plan === 'random' ? 'random' : plan.kind]++;
        log(`kill ${kills}/${opts.kills}: ${what}, after ${outcome.millis} ms`);
        if (opts.checkAfterEachKill ?? true) {
          const check = await checkRetainedCheckpoints(storage, verifier, jobId, input);
          checkpointsRestored += check.checked.length;
          for (const p of check.problems) failures.push(`${what}: after the kill, ${p}`);
        }
        continue;
      }
      const error = outcome.messages.find((m): m is Extract<ChildMessage, { type: 'error' }> => m.type === 'error');
      if (outcome.exitCode !== 0 || error) {
        failures.push(
          `${what}: exited ${outcome.exitCode === CHILD_FAILED_EXIT ? 'with an error' : `with code ${outcome.exitCode}`}` +
            (error
              ? `: ${error.name} ${error.code ?? ''} ${error.message}\n${error.stack}`
              : `\n${outcome.stderr.slice(-2000)}`),
        );
        break;
      }
      const done = outcome.messages.find(
        (m): m is Extract<ChildMessage, { type: 'finished' }> => m.type === 'finished',
      );
      if (plan !== null && plan !== 'random') plansNotReached++;
      if (plan === 'random') randomKillsMissed++;
      lastChildCheckpoints = done?.checkpointsCompleted ?? 0;
      if (calibrating && done) {
        calibration = done.counts;
        calibrationMillis = Math.max(50, done.millis);
        log(
          `calibration (${opts.backend}): ${JSON.stringify(done.counts)} in ${done.millis} ms, ${done.checkpointsCompleted} checkpoints`,
        );
      }
      finished = true;
    }
    if (!finished) continue;
    const problems = await checkFinishedRun(
      storage,
      verifier,
      jobId,
      input,
      outputFile,
      job.numRetained,
      checkpointDir,
      lastChildCheckpoints,
    );
    checkpointsRestored += problems.restored;
    leftoverFiles.push(...problems.leftovers.map((f) => `run ${runNo}: ${f}`));
    for (const p of problems.failures) failures.push(`${opts.backend} run ${runNo}: ${p}`);
    if (problems.exactlyOnce) runsExactlyOnce++;
    await rm(runDir, { recursive: true, force: true });
  }
  await rm(parentWork, { recursive: true, force: true });
  return {
    backend: opts.backend,
    kills,
    killsByKind,
    plansNotReached,
    runs,
    children,
    checkpointsRestored,
    runsExactlyOnce,
    leftoverFiles,
    randomKillsMissed,
    failures,
    millis: Date.now() - started,
    job,
  };
}

function chooseKill(rng: SeededRandom, randomShare: number, calibration: KillPointCounts): KillPlan | 'random' {
  const targeted = TARGETED_KILL_KINDS.filter((k) => countFor(k, calibration) > 0);
  if (targeted.length === 0 || rng.next() < randomShare) return 'random';
  const kind = targeted[rng.int(targeted.length)];
  // Resumed children do less work than the clean run: aim within the first 70% of its kill points.
  const range = Math.max(1, Math.floor(countFor(kind, calibration) * 0.7));
  return { kind, nth: 1 + rng.int(range) };
}

function describePlan(plan: KillPlan | 'random' | null, delay: number | null): string {
  if (plan === null) return 'no kill';
  if (plan === 'random') return `random kill after ${delay} ms`;
  return `${plan.kind} #${plan.nth}`;
}

/** Runs one crash-suite child to its end: finished, failed, or killed (by its plan, by `randomKillAfterMs` after it started, or by the timeout). */
export function spawnChild(
  script: string,
  cfg: CrashChildConfig,
  randomKillAfterMs: number | null,
  timeoutMs: number,
): Promise<ChildOutcome> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [script, JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const messages: ChildMessage[] = [];
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timers: NodeJS.Timeout[] = [
      setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs),
    ];
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      let nl: number;
      while ((nl = stdout.indexOf('\n')) >= 0) {
        const line = stdout.slice(0, nl);
        stdout = stdout.slice(nl + 1);
        let msg: ChildMessage;
        try {
          msg = JSON.parse(line) as ChildMessage;
        } catch {
          stderr += `[stdout] ${line}\n`;
          continue;
        }
        messages.push(msg);
        if (msg.type === 'started' && randomKillAfterMs !== null)
          timers.push(setTimeout(() => child.kill('SIGKILL'), randomKillAfterMs));
      }
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      resolve({ killed: signal === 'SIGKILL', exitCode: code, messages, stderr, timedOut, millis: Date.now() - t0 });
    });
  });
}

interface FinishedRunCheck {
  readonly exactlyOnce: boolean;
  readonly restored: number;
  readonly failures: string[];
  readonly leftovers: string[];
}

async function checkFinishedRun(
  storage: CheckpointStorage,
  verifier: ReturnType<typeof makeProofBackend>,
  jobId: string,
  input: readonly (readonly CountInput[])[],
  outputFile: string,
  numRetained: number,
  checkpointDir: string,
  /** Checkpoints the last child completed: with none (it restored a checkpoint at the end of the input), retention had no occasion to run. */
  lastChildCheckpoints: number,
): Promise<FinishedRunCheck> {
  const failures: string[] = [];
  const logged = readTransactionLog<CountOutput>(outputFile);
  const committed = logged.transactions.flatMap((t) => t.records);
  const counts = checkCounts(committed, input);
  if (!counts.ok)
    failures.push(
      `committed output is not exactly once: ${counts.committedRecords}/${counts.expectedRecords} records, ${counts.problems.join('; ')}`,
    );
  if (logged.duplicateIds.length > 0)
    failures.push(`transaction ids committed twice: ${logged.duplicateIds.slice(0, 5).join(', ')}`);
  const retained = await checkRetainedCheckpoints(storage, verifier, jobId, input);
  failures.push(...retained.problems);
  if (retained.checked.length > numRetained && lastChildCheckpoints > 0)
    failures.push(
      `${retained.checked.length} checkpoints retained after the job finished (numRetained ${numRetained}): ${retained.checked.join(', ')}`,
    );
  if (retained.checked.length === 0) failures.push('no checkpoint retained after the job finished');
  const leftovers = await unreferencedFiles(storage, jobId, checkpointDir);
  return {
    exactlyOnce: counts.ok && logged.duplicateIds.length === 0,
    restored: retained.checked.length,
    failures,
    leftovers,
  };
}

/** Every file on disk under the job's directory (temp files included) that no retained checkpoint needs. */
export async function unreferencedFiles(
  storage: CheckpointStorage,
  jobId: string,
  checkpointDir: string,
): Promise<string[]> {
  const needed = new Set<string>();
  for (const { pointer } of await checkpointsWithMetadata(storage, jobId)) {
    needed.add(`${pointer}/_metadata`);
    const { metadata } = await storage.resolve(pointer);
    for (const op of metadata.operators) {
      for (const s of op.subtasks)
        for (const f of referencedFiles([s.keyed, s.operator])) needed.add(resolveHandlePath(pointer, f.path));
    }
  }
  const onDisk = await walk(join(checkpointDir, jobId));
  // The job lease (src/checkpoint/lease.ts) is not checkpoint data.
  return onDisk
    .map((p) => relative(checkpointDir, p).split(sep).join('/'))
    .filter((name) => !needed.has(name) && !isLeaseName(jobId, name));
}

async function walk(dir: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const e of entries) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else out.push(p);
  }
  return out;
}
