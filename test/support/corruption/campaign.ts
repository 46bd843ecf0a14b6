import { cp, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, StreamStateError } from '../../../src/errors.js';
import { SeededRandom } from '../../../src/testing/rng.js';
import {
  closeJob,
  newCoordinator,
  openJob,
  storageFor,
  type CorruptionFixture,
  type FormatName,
  type RunningJob,
} from './fixtures.js';
import { describeDifference, dumpState } from './job.js';
import { applyMutation, MUTATIONS, pickMutation, type MutationKind } from './mutations.js';

/**
 * One corruption case: copy the fixture, damage one file, restore through a new coordinator at
 * parallelism 1-3 in one of three ways (RestoreMode), read
 * every state back and compare with the expected state. The verdict is one of
 *   typed   - a StreamStateError with a known code (the damage was refused),
 *   correct - the restore succeeded and the state equals the expected state,
 *   failure - anything else: a silently wrong state, an untyped error, or a hang.
 */
export type Verdict = 'typed' | 'correct' | 'failure';

/**
 * latest: the same job fails over and restores its latest checkpoint (restore() without pointer);
 * claim: the same job restores the snapshot by pointer; no-claim: a new job restores it by pointer.
 */
export type RestoreMode = 'latest' | 'claim' | 'no-claim';

export interface CaseOutcome {
  readonly format: FormatName;
  readonly seed: number;
  readonly mutation: MutationKind;
  readonly description: string;
  readonly parallelism: number;
  readonly mode: RestoreMode;
  readonly verdict: Verdict;
  /** typed: the error's code; failure: what went wrong. */
  readonly code?: string;
  readonly errorClass?: string;
  readonly failure?: string;
  readonly ms: number;
}

export interface CaseOptions {
  /** A restore that takes longer is a hang. Default 20 s. */
  readonly timeoutMs?: number;
  /** Parent of the case directories. Default os.tmpdir(). */
  readonly tmpRoot?: string;
  /** Only this mutation (targeted tests); default a weighted random pick. */
  readonly only?: MutationKind;
}

const KNOWN_CODES = new Set<string>(ErrorCodes);

/** The seed of case `index` of `format` in a campaign seeded with `baseSeed` (printed with failures; replay with runCase). */
export function caseSeed(baseSeed: number, format: FormatName, index: number): number {
  let h = (baseSeed ^ 0x9e3779b9) >>> 0;
  for (const c of `${format}#${index}`) h = Math.imul(h ^ c.charCodeAt(0), 0x01000193) >>> 0;
  return h;
}

class Timeout extends Error {}

function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Timeout(`no result after ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

async function restoreAndDump(
  fixture: CorruptionFixture,
  storeRoot: string,
  workDir: string,
  mode: RestoreMode,
  jobId: string,
  parallelism: number,
): Promise<string> {
  const backend = fixture.makeBackend(storeRoot, workDir);
  const storage = storageFor(fixture.family, storeRoot);
  const coordinator = newCoordinator(storage, backend, jobId, parallelism);
  const job: RunningJob = { keyed: [], operator: [] };
  try {
    const plan = await coordinator.restore(mode === 'latest' ? undefined : fixture.pointer);
    if (plan === null)
      throw new Error(`restore (${mode}) found nothing to restore: the job would start without its state`);
    await openJob(backend, jobId, parallelism, plan, job);
    return await dumpState(job.keyed, job.operator, true);
  } finally {
    await closeJob(job);
    await coordinator.shutdown('finish').catch(() => undefined);
  }
}

/** Restores an undamaged copy of the fixture (the control: it must equal the expected state). */
export async function restorePristine(
  fixture: CorruptionFixture,
  mode: RestoreMode,
  parallelism: number,
  tmpRoot = tmpdir(),
): Promise<string> {
  const dir = await mkdtemp(join(tmpRoot, 'streamstate-corruption-pristine-'));
  try {
    await cp(fixture.root, join(dir, 'store'), { recursive: true });
    await mkdir(join(dir, 'work'));
    const jobId = mode === 'no-claim' ? 'job-restored-pristine' : fixture.jobId;
    return await restoreAndDump(fixture, join(dir, 'store'), join(dir, 'work'), mode, jobId, parallelism);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Runs one case from its seed. */
export async function runCase(fixture: CorruptionFixture, seed: number, opts: CaseOptions = {}): Promise<CaseOutcome> {
  const rng = new SeededRandom(seed);
  const kind = pickMutation(rng, opts.only);
  const parallelism = 1 + rng.int(3);
  // A savepoint is never "the latest checkpoint": canonical cases restore it by pointer.
  const modes: RestoreMode[] = fixture.pointer.includes('/chk-')
    ? ['latest', 'claim', 'no-claim']
    : ['claim', 'no-claim'];
  const mode = modes[rng.int(modes.length)];
  const dir = await mkdtemp(join(opts.tmpRoot ?? tmpdir(), `streamstate-corruption-case-`));
  const storeRoot = join(dir, 'store');
  const workDir = join(dir, 'work');
  const started = performance.now();
  let description = `${kind} (not applied)`;
  const base = { format: fixture.format, seed, mutation: kind, parallelism, mode };
  let hung = false;
  try {
    await cp(fixture.root, storeRoot, { recursive: true });
    await mkdir(workDir, { recursive: true });
    const applied = await applyMutation(rng, fixture, storeRoot, kind);
    description = applied.description;
    // Without its _metadata a checkpoint never completed: the latest one is then the previous checkpoint.
    const expected = mode === 'latest' && applied.metadataGone ? fixture.previous : fixture.expected;
    const jobId = mode === 'no-claim' ? `job-restored-${seed.toString(16)}` : fixture.jobId;
    const dump = await withTimeout(
      restoreAndDump(fixture, storeRoot, workDir, mode, jobId, parallelism),
      opts.timeoutMs ?? 20_000,
    );
    const ms = performance.now() - started;
    if (dump === expected) return { ...base, description, verdict: 'correct', ms };
    return {
      ...base,
      description,
      verdict: 'failure',
      failure: `silently wrong state: ${describeDifference(expected, dump)}`,
      ms,
    };
  } catch (err) {
    const ms = performance.now() - started;
    if (err instanceof Timeout) {
      hung = true;
      return { ...base, description, verdict: 'failure', failure: `hang: ${err.message}`, ms };
    }
    if (err instanceof StreamStateError && KNOWN_CODES.has(err.code) && err.message.length > 15) {
      return { ...base, description, verdict: 'typed', code: err.code, errorClass: err.name, ms };
    }
    const e = err as Error;
    return {
      ...base,
      description,
      verdict: 'failure',
      failure: `untyped error ${e?.name}: ${e?.message}`.slice(0, 600),
      errorClass: e?.name,
      ms,
    };
  } finally {
    // A hung restore may still hold files open; leave its directory rather than race it.
    if (!hung) await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

export interface MutationStats {
  cases: number;
  typed: number;
  correct: number;
  failures: number;
}

export interface FormatSummary {
  readonly format: FormatName;
  cases: number;
  correct: number;
  typed: number;
  failures: number;
  readonly typedByCode: Record<string, number>;
  readonly byMutation: Record<string, MutationStats>;
  /** The first failing cases (with seeds). */
  readonly failureCases: CaseOutcome[];
  ms: number;
}

export function emptySummary(format: FormatName): FormatSummary {
  const byMutation: Record<string, MutationStats> = {};
  for (const m of MUTATIONS) byMutation[m] = { cases: 0, typed: 0, correct: 0, failures: 0 };
  return { format, cases: 0, correct: 0, typed: 0, failures: 0, typedByCode: {}, byMutation, failureCases: [], ms: 0 };
}

export function record(summary: FormatSummary, o: CaseOutcome, keepFailures = 50): void {
  summary.cases++;
  summary.ms += o.ms;
  const m = summary.byMutation[o.mutation];
  m.cases++;
  if (o.verdict === 'typed') {
    summary.typed++;
    m.typed++;
    summary.typedByCode[o.code!] = (summary.typedByCode[o.code!] ?? 0) + 1;
  } else if (o.verdict === 'correct') {
    summary.correct++;
    m.correct++;
  } else {
    summary.failures++;
    m.failures++;
    if (summary.failureCases.length < keepFailures) summary.failureCases.push(o);
  }
}

/** How to replay one case. */
export function describeCase(o: CaseOutcome): string {
  const outcome =
    o.verdict === 'typed' ? `${o.errorClass} ${o.code}` : o.verdict === 'correct' ? 'correct restore' : o.failure;
  return (
    `[${o.format}] seed=0x${o.seed.toString(16)} ${o.description}; restore at parallelism ${o.parallelism} ` +
    `(${o.mode}) -> ${outcome}. ` +
    `Replay: CORRUPTION_REPLAY=${o.format}:${o.mutation}:0x${o.seed.toString(16)} npx vitest run test/proof/`
  );
}

/** Runs `count` cases of one format, sequentially. */
export async function runFormat(
  fixture: CorruptionFixture,
  baseSeed: number,
  count: number,
  opts: CaseOptions & { onCase?: (o: CaseOutcome, index: number) => void; cycleMutations?: boolean } = {},
): Promise<FormatSummary> {
  const summary = emptySummary(fixture.format);
  for (let i = 0; i < count; i++) {
    // cycleMutations: every kind gets an equal share (short runs); else weighted random kinds.
    const only = opts.cycleMutations ? MUTATIONS[i % MUTATIONS.length] : opts.only;
    const o = await runCase(fixture, caseSeed(baseSeed, fixture.format, i), { ...opts, ...(only ? { only } : {}) });
    record(summary, o);
    opts.onCase?.(o, i);
  }
  return summary;
}
