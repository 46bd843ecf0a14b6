import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as benny from 'benny';

/**
 * Shared benchmark plumbing: benny suites with a dead-code sink, and one results file that every
 * bench script adds its figures to (bench/results/latest.json).
 */

/** Every case adds what it computed here; printing it at the end keeps V8 from dropping the work. */
export const sink = { value: 0 };

export function consume(v: unknown): void {
  sink.value = (sink.value + (typeof v === 'number' ? v : v === null || v === undefined ? 0 : 1)) | 0;
}

export interface CaseResult {
  readonly suite: string;
  readonly name: string;
  readonly opsPerSec: number;
  readonly marginPct: number;
  readonly samples: number;
}

export interface BenchOptions {
  readonly quick: boolean;
}

export function parseBenchArgs(argv: readonly string[] = process.argv.slice(2)): BenchOptions & { args: string[] } {
  return { quick: argv.includes('--quick'), args: argv.filter((a) => !a.startsWith('--')) };
}

/** Runs benny cases; each case does ONE operation (async cases return a promise). */
export async function runCases(
  suiteName: string,
  cases: ReadonlyArray<readonly [string, () => void | Promise<void>]>,
  opts: BenchOptions,
): Promise<CaseResult[]> {
  const maxTime = opts.quick ? 0.5 : 3;
  const summary = await benny.suite(
    suiteName,
    ...cases.map(([name, fn]) => benny.add(name, fn)),
    benny.configure({ cases: { minSamples: opts.quick ? 5 : 20, maxTime } }),
    benny.cycle(() => undefined),
    benny.complete(() => undefined),
  );
  return summary.results.map((r) => ({
    suite: suiteName,
    name: r.name,
    opsPerSec: r.ops,
    marginPct: r.margin,
    samples: r.samples,
  }));
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function percentile(xs: readonly number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
}

const here = dirname(fileURLToPath(import.meta.url));
/** bench/results under the repository root (works from src and from dist). */
export const resultsDir = join(here, here.includes(`${'dist'}`) ? '../../../bench/results' : '../results');

/** Merges `section` into bench/results/latest.json under `key`. */
export function recordResults(key: string, section: unknown): void {
  mkdirSync(resultsDir, { recursive: true });
  const file = join(resultsDir, 'latest.json');
  let all: Record<string, unknown> = {};
  try {
    all = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    all = {};
  }
  all[key] = { ...(section as object), recordedAt: new Date().toISOString(), node: process.version };
  writeFileSync(file, `${JSON.stringify(all, null, 2)}\n`);
}

export function printTable(rows: ReadonlyArray<Record<string, string | number>>): void {
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(width[i])).join('  ');
  console.log(line(cols));
  for (const r of rows) console.log(line(cols.map((c) => String(r[c]))));
}

export function fmtOps(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : n.toFixed(0);
}
