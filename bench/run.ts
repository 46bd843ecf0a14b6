/**
 * `npm run bench [-- --quick] [suite ...]`: runs every benchmark script in its own process (fresh
 * heap, no cross-talk), leaves the figures in bench/results/latest.json with the machine and the
 * load it ran under, then renders bench/results/REPORT.md + SVG charts (bench/report/generate.ts).
 * A run of all suites starts a fresh latest.json; naming suites updates only theirs.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { cpus, loadavg, release, totalmem, type as osType } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { recordResults, resultsDir } from './lib/bench.js';

const here = dirname(fileURLToPath(import.meta.url));
const quick = process.argv.includes('--quick');
const only = process.argv.slice(2).filter((a) => !a.startsWith('--'));
/** `--size=MB` goes to the suites that take a state size (processing-during-checkpoint, heap-full-snapshot). */
const sized = new Set(['processing-during-checkpoint', 'heap-full-snapshot']);
const sizeArg = process.argv.slice(2).find((a) => a.startsWith('--size='));

/** In run order; scripts that are not built (yet) are skipped with a note. */
const scripts = [
  'state-access',
  'snapshot-pause',
  'leveldb-state',
  'leveldb-checkpoint',
  'checkpoint-sizes',
  'changelog-checkpoint',
  'changelog-scaling',
  'savepoint-throughput',
  'convert-max-parallelism',
  's3-storage',
  's3-incremental',
  'durability',
  'processing-during-checkpoint',
  'heap-full-snapshot',
  'upload-under-load',
  'unaligned',
];
const unknown = only.filter((n) => !scripts.includes(n));
if (unknown.length > 0) {
  console.error(`unknown suite(s): ${unknown.join(', ')}; suites: ${scripts.join(', ')}`);
  process.exit(2);
}

if (only.length === 0) rmSync(join(resultsDir, 'latest.json'), { force: true });

// The 1-minute load average, sampled through the run: other work on the machine shows here.
const loadSamples: number[] = [];
const sampler = setInterval(() => loadSamples.push(loadavg()[0]), 5000);
const loadAtStart = loadavg();
const startedAt = new Date().toISOString();
const t0 = Date.now();
const suites: Array<{ name: string; status: string; seconds: number }> = [];

let failed = 0;
for (const name of scripts) {
  if (only.length > 0 && !only.includes(name)) continue;
  const file = join(here, `${name}.js`);
  if (!existsSync(file)) {
    console.log(`-- ${name}: not built, skipped`);
    suites.push({ name, status: 'not built', seconds: 0 });
    continue;
  }
  console.log(`\n== ${name}${quick ? ' (quick)' : ''}`);
  const started = Date.now();
  const r = spawnSync(
    process.execPath,
    [
      '--expose-gc',
      '--max-old-space-size=16384',
      file,
      ...(quick ? ['--quick'] : []),
      ...(sizeArg !== undefined && sized.has(name) ? [sizeArg] : []),
    ],
    { stdio: 'inherit' },
  );
  const seconds = (Date.now() - started) / 1000;
  const status = r.status === 0 ? 'ok' : `FAILED (exit ${r.status ?? r.signal})`;
  console.log(`-- ${name}: ${status} in ${seconds.toFixed(1)} s`);
  suites.push({ name, status, seconds: +seconds.toFixed(1) });
  if (r.status !== 0) failed++;
  loadSamples.push(loadavg()[0]);
}
clearInterval(sampler);

const totalSeconds = (Date.now() - t0) / 1000;
recordResults('run', {
  quick,
  startedAt,
  totalSeconds: +totalSeconds.toFixed(1),
  suites,
  machine: {
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    cpus: cpus().length,
    memGiB: Math.round(totalmem() / 2 ** 30),
    os: `${osType()} ${release()}`,
    node: process.version,
  },
  load: {
    start: loadAtStart.map((x) => +x.toFixed(2)),
    mean: +(loadSamples.reduce((s, x) => s + x, 0) / Math.max(1, loadSamples.length)).toFixed(2),
    max: +Math.max(...loadSamples, loadAtStart[0]).toFixed(2),
    end: loadavg().map((x) => +x.toFixed(2)),
  },
});
console.log(`\nresults: bench/results/latest.json (${totalSeconds.toFixed(0)} s)`);
const report = spawnSync(process.execPath, [join(here, 'report', 'generate.js')], { stdio: 'inherit' });
process.exit(failed > 0 || report.status !== 0 ? 1 : 0);
