import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StreamStateError } from '../src/errors.js';
import { CRASH_BACKENDS, isProofBackendKind, type ProofBackendKind } from './proof/backends.js';
import { runCrashSuite, type CrashSuiteResult } from './proof/crash-driver.js';

/**
 * The long crash suite: 200 SIGKILLs per backend (default), each followed by a restore of every
 * checkpoint on disk and a resume; writes bench/results/crash-long.json (counts, failures).
 *
 *   npm run build && node dist/bench/crash-long.js                       # 200 kills x filesystem, leveldb, changelog(filesystem)
 *   node dist/bench/crash-long.js --kills 50 --backends leveldb --seed 7
 */
async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const opt = (name: string): string | undefined => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const kills = Number(opt('kills') ?? 200);
  const seed = Number(opt('seed') ?? 2024);
  const backends = (opt('backends') ?? CRASH_BACKENDS.join(',')).split(',');
  const out = opt('out') ?? join('bench', 'results', 'crash-long.json');
  const child = opt('child') ?? join(dirname(fileURLToPath(import.meta.url)), 'crash-child.js');
  if (!(Number.isInteger(kills) && kills > 0))
    throw new StreamStateError('INVALID_ARGUMENT', '--kills must be a positive integer.');
  for (const b of backends)
    if (!isProofBackendKind(b) || b === 'memory')
      throw new StreamStateError('INVALID_ARGUMENT', `--backends: ${b} is not one of ${CRASH_BACKENDS.join(', ')}.`);

  const results: (Omit<CrashSuiteResult, 'leftoverFiles'> & {
    leftoverFiles: number;
    leftoverTempFiles: number;
    sampleLeftovers: readonly string[];
  })[] = [];
  for (const backend of backends as ProofBackendKind[]) {
    const scratch = await mkdtemp(join(tmpdir(), `streamstate-crash-long-${backend}-`));
    try {
      const r = await runCrashSuite({
        backend,
        kills,
        seed,
        scratchDir: scratch,
        childScript: child,
        job: { records: 2000, checkpointEvery: 100, numRetained: 3 },
        log: (line) => {
          if (/^kill \d+0\//.test(line) || line.startsWith('calibration')) console.log(`  ${line}`);
        },
      });
      const temp = r.leftoverFiles.filter((f) => f.includes('.tmp-'));
      results.push({
        ...r,
        leftoverFiles: r.leftoverFiles.length,
        leftoverTempFiles: temp.length,
        sampleLeftovers: r.leftoverFiles.filter((f) => !f.includes('.tmp-')).slice(0, 10),
      });
      console.log(
        `${backend}: ${r.kills} kills (${JSON.stringify(r.killsByKind)}), ${r.runs} runs, ${r.children} children, ${r.checkpointsRestored} checkpoint restores, ` +
          `${r.runsExactlyOnce}/${r.runs} runs exactly once, ${r.failures.length} failures, ${r.leftoverFiles.length} leftover files (${temp.length} putAtomic temp files), ${(r.millis / 1000).toFixed(0)} s`,
      );
      for (const f of r.failures.slice(0, 10)) console.log(`  FAILURE ${f.slice(0, 600)}`);
    } finally {
      await rm(scratch, { recursive: true, force: true });
    }
  }
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    `${JSON.stringify({ date: new Date().toISOString(), machine: `${process.platform} ${process.arch}, node ${process.version}`, kills, seed, results }, null, 1)}\n`,
  );
  console.log(`wrote ${out}`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
