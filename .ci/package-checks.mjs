// Package checks on the tarball npm would publish (dist/ must be built: npm ci runs `prepare`):
// it ships only dist/src and dist/backends (plus docs, README, LICENSE), every source map carries
// its sources inline (src/ is not shipped), then publint and `attw --profile esm-only` on it.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const bin = (name) => join(root, 'node_modules', '.bin', name);
const dir = mkdtempSync(join(tmpdir(), 'pack-'));
let failed = false;
const fail = (msg) => {
  console.error(`package: ${msg}`);
  failed = true;
};
try {
  const [packed] = JSON.parse(
    execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], {
      cwd: root,
      encoding: 'utf8',
    }),
  );
  const tgz = join(
    dir,
    readdirSync(dir).find((f) => f.endsWith('.tgz')),
  );
  const files = packed.files.map((f) => f.path);
  const allowed = /^(dist\/src\/|dist\/backends\/|docs\/|README\.md$|LICENSE$|package\.json$)/;
  const stray = files.filter((f) => !allowed.test(f));
  if (stray.length > 0)
    fail(
      `ships files outside dist/src, dist/backends, docs: ${stray.slice(0, 5).join(', ')}${stray.length > 5 ? ', ...' : ''}`,
    );
  for (const needed of ['dist/src/index.js', 'dist/src/index.d.ts', 'LICENSE'])
    if (!files.includes(needed)) fail(`does not ship ${needed} (is dist/ built?)`);
  // Output whose source is gone (a build over an old dist/) would ship as if it were current.
  const stale = files.filter(
    (f) => /^dist\/.*\.js$/.test(f) && !existsSync(join(root, f.slice('dist/'.length).replace(/\.js$/, '.ts'))),
  );
  if (stale.length > 0)
    fail(`ships build output without a source (stale dist/: npm run clean-build): ${stale.slice(0, 5).join(', ')}`);
  // Source maps: sources must be inline, since src/ is not in the package.
  execFileSync('tar', ['-xzf', tgz, '-C', dir]);
  let maps = 0;
  for (const f of files.filter((p) => p.endsWith('.js.map'))) {
    const map = JSON.parse(readFileSync(join(dir, 'package', f), 'utf8'));
    maps++;
    const content = map.sourcesContent ?? [];
    if (content.length !== map.sources.length || content.some((c) => typeof c !== 'string')) {
      fail(
        `${f} does not carry its sources inline (sourcesContent); its sources ${map.sources.join(', ')} are not shipped`,
      );
      break;
    }
  }
  console.log(
    `package: ${files.length} files, ${(packed.size / 1024).toFixed(0)} KiB packed, ${maps} source maps with inline sources`,
  );
  for (const [name, args] of [
    ['publint', ['run', tgz, '--level', 'warning', '--strict']],
    ['attw', [tgz, '--profile', 'esm-only', '--format', 'table-flipped']],
  ]) {
    try {
      const out = execFileSync(bin(name), args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      console.log(`${name}: ok${out.trim() === '' ? '' : `\n${out.trim()}`}`);
    } catch (err) {
      fail(`${name} failed:\n${err.stdout ?? ''}${err.stderr ?? ''}`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
