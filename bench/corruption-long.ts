/**
 * The long corruption campaign (issue 7): 10,000 damaged snapshots per format, each restored and
 * judged (typed error / correct restore / failure), results in bench/results/corruption-long.json.
 *
 *   npx tsc -p tsconfig.build.json && node dist/bench/corruption-long.js [--cases 10000] [--seed 1]
 *       [--formats metadata,key-groups,...] [--jobs 2] [--out bench/results/corruption-long.json]
 *
 * --jobs N splits the formats over N child processes (one per core); the parent merges their
 * results. Mutation kinds are drawn at random with weights (mutations.ts); every failing case is
 * listed with its seed and the command that replays it. Exit code 1 when any case failed.
 */
import { fork } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem, type as osType, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  describeCase,
  emptySummary,
  runFormat,
  type CaseOutcome,
  type FormatSummary,
} from '../test/support/corruption/campaign.js';
import {
  buildFamily,
  familyOf,
  fixtureFor,
  FORMATS,
  type FamilyFixture,
  type FormatName,
} from '../test/support/corruption/fixtures.js';

const here = dirname(fileURLToPath(import.meta.url));

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const cases = Number(arg('cases', '10000'));
const seed = Number(arg('seed', '1'));
const jobs = Math.max(1, Number(arg('jobs', '1')));
const formats = arg('formats', FORMATS.join(',')).split(',') as FormatName[];
// dist/bench/ → repository root/bench/results
const out = resolve(arg('out', join(here, '..', '..', 'bench', 'results', 'corruption-long.json')));

for (const f of formats) {
  if (!FORMATS.includes(f)) {
    console.error(`unknown format ${f}; formats: ${FORMATS.join(', ')}`);
    process.exit(2);
  }
}

interface Report {
  readonly generatedAt: string;
  readonly machine: { os: string; cpus: string; cores: number; memoryGiB: number; node: string };
  readonly seed: number;
  readonly casesPerFormat: number;
  readonly totals: { cases: number; typed: number; correct: number; failures: number };
  readonly formats: Record<string, FormatSummary & { failureReplays: string[] }>;
}

function machine(): Report['machine'] {
  return {
    os: `${osType()} ${release()}`,
    cpus: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
  };
}

function report(summaries: readonly FormatSummary[]): Report {
  const totals = { cases: 0, typed: 0, correct: 0, failures: 0 };
  const byFormat: Report['formats'] = {};
  for (const s of summaries) {
    totals.cases += s.cases;
    totals.typed += s.typed;
    totals.correct += s.correct;
    totals.failures += s.failures;
    byFormat[s.format] = { ...s, ms: Math.round(s.ms), failureReplays: s.failureCases.map(describeCase) };
  }
  return {
    generatedAt: new Date().toISOString(),
    machine: machine(),
    seed,
    casesPerFormat: cases,
    totals,
    formats: byFormat,
  };
}

/** Runs `list` in this process; a case that crashes the process with an unhandled error is a failure of that case. */
async function runHere(list: readonly FormatName[]): Promise<FormatSummary[]> {
  let current: { format: FormatName; index: number } | null = null;
  const stray: string[] = [];
  const onStray = (err: unknown): void => {
    stray.push(
      `${current ? `${current.format} near case ${current.index}` : 'outside a case'}: ${(err as Error)?.stack ?? String(err)}`,
    );
  };
  process.on('unhandledRejection', onStray);
  process.on('uncaughtException', onStray);
  const families = new Map<string, FamilyFixture>();
  const tmpRoot = join(tmpdir(), `streamstate-corruption-long-${process.pid}`);
  mkdirSync(tmpRoot, { recursive: true });
  const summaries: FormatSummary[] = [];
  try {
    for (const format of list) {
      const family = familyOf(format);
      let fam = families.get(family);
      if (fam === undefined) families.set(family, (fam = await buildFamily(family, tmpRoot)));
      const started = Date.now();
      const summary = await runFormat(fixtureFor(format, fam), seed, cases, {
        tmpRoot,
        timeoutMs: 30_000,
        onCase: (o: CaseOutcome, index: number) => {
          current = { format, index };
          if (o.verdict === 'failure') console.error(`FAILURE ${describeCase(o)}`);
          if ((index + 1) % 1000 === 0)
            console.log(`[${format}] ${index + 1}/${cases} cases, ${Math.round((Date.now() - started) / 1000)} s`);
        },
      });
      // Errors that escaped a case (unhandled rejections) fail the format even if every verdict was fine.
      for (const s of stray.splice(0)) {
        summary.failures++;
        summary.failureCases.push({ ...emptyOutcome(format), failure: `unhandled error: ${s}`.slice(0, 2000) });
      }
      console.log(
        `[${format}] done: ${summary.typed} typed, ${summary.correct} correct, ${summary.failures} failures in ${Math.round((Date.now() - started) / 1000)} s`,
      );
      summaries.push(summary);
    }
  } finally {
    for (const fam of families.values()) await fam.cleanup();
    rmSync(tmpRoot, { recursive: true, force: true });
  }
  return summaries;
}

function emptyOutcome(format: FormatName): CaseOutcome {
  return {
    format,
    seed: 0,
    mutation: 'bit-flip',
    description: '(no case)',
    parallelism: 0,
    mode: 'claim',
    verdict: 'failure',
    ms: 0,
  };
}

/** Splits the formats over `jobs` children of this script and collects their summaries. */
async function runForked(): Promise<FormatSummary[]> {
  // Longest first (LevelDB cases cost the most), dealt round-robin.
  const order = [...formats].sort((a, b) => (b === 'leveldb' ? 1 : 0) - (a === 'leveldb' ? 1 : 0));
  const groups: FormatName[][] = Array.from({ length: Math.min(jobs, order.length) }, () => []);
  order.forEach((f, i) => groups[i % groups.length].push(f));
  const results = await Promise.all(
    groups.map(
      (group, i) =>
        new Promise<FormatSummary[]>((resolveGroup, reject) => {
          const partial = join(tmpdir(), `streamstate-corruption-long-${process.pid}-${i}.json`);
          const child = fork(fileURLToPath(import.meta.url), [
            '--cases',
            String(cases),
            '--seed',
            String(seed),
            '--formats',
            group.join(','),
            '--out',
            partial,
          ]);
          child.on('exit', () => {
            try {
              const r = JSON.parse(readFileSync(partial, 'utf8')) as Report;
              rmSync(partial, { force: true });
              resolveGroup(Object.values(r.formats));
            } catch (err) {
              reject(new Error(`corruption worker for ${group.join(',')} left no results: ${(err as Error).message}`));
            }
          });
        }),
    ),
  );
  return results.flat();
}

const summaries = jobs > 1 && formats.length > 1 ? await runForked() : await runHere(formats);
const ordered = FORMATS.filter((f) => formats.includes(f)).map(
  (f) => summaries.find((s) => s.format === f) ?? emptySummary(f),
);
const r = report(ordered);
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify(r, null, 2)}\n`);
console.log(
  `\n${r.totals.cases} cases: ${r.totals.typed} typed errors, ${r.totals.correct} correct restores, ${r.totals.failures} failures -> ${out}`,
);
process.exit(r.totals.failures > 0 ? 1 : 0);
