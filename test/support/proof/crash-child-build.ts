import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
/** The crash-suite child, compiled (a child process cannot import TypeScript). */
export const CRASH_CHILD = join(ROOT, 'dist', 'bench', 'crash-child.js');
/** What every compiled entry point is built from, besides its own sources. */
const CORE_SOURCES = ['src', 'backends'];
const LOCK = join(ROOT, 'dist', '.crash-child-build.lock');
const STALE_LOCK_MS = 5 * 60_000;

function newestSourceMtime(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return path.endsWith('.ts') ? st.mtimeMs : 0;
  let newest = 0;
  for (const e of readdirSync(path)) newest = Math.max(newest, newestSourceMtime(join(path, e)));
  return newest;
}

function isFresh(output: string, sources: readonly string[]): boolean {
  if (!existsSync(output)) return false;
  const built = statSync(output).mtimeMs;
  return sources.every((s) => !existsSync(join(ROOT, s)) || newestSourceMtime(join(ROOT, s)) <= built);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Makes sure dist/bench/crash-child.js exists and is newer than the sources it is built from
 * (`npm ci` builds dist; after local edits this runs `tsc -p tsconfig.build.json` once, under a
 * lock so that parallel test files do not build over each other). Returns its path.
 */
export function ensureCrashChild(): Promise<string> {
  return ensureBuilt(relative(ROOT, CRASH_CHILD), [join('bench', 'proof'), join('bench', 'crash-child.ts')]);
}

/**
 * The same for any compiled file of dist/ (`output`, relative to the repository), built from src/,
 * backends/ and `ownSources` (relative too): e.g. an example a test runs as a user would. Returns its
 * absolute path.
 */
export async function ensureBuilt(output: string, ownSources: readonly string[]): Promise<string> {
  const target = join(ROOT, output);
  const sources = [...CORE_SOURCES, ...ownSources];
  if (isFresh(target, sources)) return target;
  mkdirSync(join(ROOT, 'dist'), { recursive: true });
  for (;;) {
    try {
      mkdirSync(LOCK);
      break;
    } catch {
      const held = statSync(LOCK, { throwIfNoEntry: false });
      if (held !== undefined && Date.now() - held.mtimeMs > STALE_LOCK_MS) rmdirSync(LOCK);
      await sleep(250);
    }
  }
  try {
    if (!isFresh(target, sources)) {
      // tsc emits even when files of others have type errors; only a missing output is fatal.
      const r = spawnSync(
        process.execPath,
        [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.build.json')],
        {
          cwd: ROOT,
          encoding: 'utf8',
          timeout: 180_000,
        },
      );
      if (!existsSync(target)) {
        throw new Error(`building ${target} failed (run \`npm run build\`): ${r.stdout}${r.stderr}`);
      }
    }
  } finally {
    rmdirSync(LOCK);
  }
  return target;
}
