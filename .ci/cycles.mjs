// Import-cycle check over the published code (src/, backends/), type-only imports included
// (a cycle of types is still a cycle in the design). Prints every cycle; fails on any cycle that
// .ci/known-cycles.txt does not list, and names listed ones that are gone (so the list only shrinks).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'cycles-'));
const out = join(dir, 'dpdm.json');
try {
  execFileSync(
    process.execPath,
    [
      join(root, 'node_modules', 'dpdm', 'lib', 'bin', 'dpdm.js'),
      '--no-warning',
      '--no-tree',
      '--no-circular',
      '--progress=false',
      '-o',
      out,
      'src/**/*.ts',
      'backends/**/*.ts',
    ],
    { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const { circulars, tree } = JSON.parse(readFileSync(out, 'utf8'));
  const unresolved = Object.values(tree)
    .flat()
    .filter((d) => d !== null && d.id === null && d.request.startsWith('.'));
  if (unresolved.length > 0) {
    // A relative import dpdm could not resolve would hide cycles through it.
    console.error(
      `cycles: ${unresolved.length} relative imports did not resolve, e.g. ${unresolved[0].issuer}: ${unresolved[0].request}`,
    );
    process.exit(1);
  }
  const canonical = (cycle) => {
    const start = cycle.indexOf([...cycle].sort()[0]);
    const rotated = [...cycle.slice(start), ...cycle.slice(0, start)];
    return [...rotated, rotated[0]].join(' -> ');
  };
  const found = new Set(circulars.map(canonical));
  const known = new Set(
    readFileSync(join(root, '.ci', 'known-cycles.txt'), 'utf8')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '' && !l.startsWith('#')),
  );
  const fresh = [...found].filter((c) => !known.has(c));
  const gone = [...known].filter((c) => !found.has(c));
  for (const c of found) console.log(`${known.has(c) ? 'known cycle' : 'NEW CYCLE'}: ${c}`);
  for (const c of gone) console.log(`gone (remove it from .ci/known-cycles.txt): ${c}`);
  console.log(
    `cycles: ${Object.keys(tree).length} modules, ${found.size} cycles (${found.size - fresh.length} known), ${fresh.length} new`,
  );
  process.exit(fresh.length > 0 ? 1 : 0);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
