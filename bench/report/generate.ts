/**
 * Regenerates bench/results/REPORT.md and the SVG charts from bench/results/latest.json.
 *   node dist/bench/report/generate.js [resultsDir]
 * `npm run bench` runs it after the suites; run it alone to re-render without re-measuring.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resultsDir } from '../lib/bench.js';
import { buildReport } from './report.js';

const dir = process.argv[2] ?? resultsDir;
const source = join(dir, 'latest.json');
let data: Record<string, unknown>;
try {
  data = JSON.parse(readFileSync(source, 'utf8')) as Record<string, unknown>;
} catch (err) {
  console.error(
    `cannot read ${source}: ${(err as Error).message}. Run \`npm run bench\` (or one suite: \`npm run bench -- state-access\`) first.`,
  );
  process.exit(1);
}
const { markdown, charts } = buildReport(data);
writeFileSync(join(dir, 'REPORT.md'), markdown);
for (const [name, svg] of charts) writeFileSync(join(dir, name), `${svg}\n`);
console.log(`report: ${join(dir, 'REPORT.md')} + ${charts.size} charts`);
