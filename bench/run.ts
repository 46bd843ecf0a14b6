/**
 * `npm run bench [-- --quick]`: runs every benchmark script in its own process (fresh heap, no
 * cross-talk) and leaves the figures in bench/results/latest.json.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const quick = process.argv.includes('--quick');
const only = process.argv.slice(2).filter((a) => !a.startsWith('--'));

/** In run order; scripts that are not built (yet) are skipped with a note. */
const scripts = [
  'state-access',
  'snapshot-pause',
  'leveldb-state',
  'leveldb-checkpoint',
  'changelog-checkpoint',
  'savepoint-throughput',
  's3-storage',
];

let failed = 0;
for (const name of scripts) {
  if (only.length > 0 && !only.includes(name)) continue;
  const file = join(here, `${name}.js`);
  if (!existsSync(file)) {
    console.log(`-- ${name}: not built, skipped`);
    continue;
  }
  console.log(`\n== ${name}${quick ? ' (quick)' : ''}`);
  const started = Date.now();
  const r = spawnSync(process.execPath, ['--expose-gc', '--max-old-space-size=16384', file, ...(quick ? ['--quick'] : [])], { stdio: 'inherit' });
  console.log(`-- ${name}: ${r.status === 0 ? 'ok' : `FAILED (exit ${r.status})`} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (r.status !== 0) failed++;
}
console.log(`\nresults: bench/results/latest.json`);
process.exit(failed > 0 ? 1 : 0);
