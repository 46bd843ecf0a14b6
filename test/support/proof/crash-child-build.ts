import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
/** The crash-suite child, compiled (a child process cannot import TypeScript). */
export const CRASH_CHILD = join(ROOT, 'dist', 'bench', 'crash-child.js');
const SOURCES = ['src', 'backends', join('bench', 'proof'), join('bench', 'crash-child.ts')];
const LOCK = join(ROOT, 'dist', '.crash-child-build.lock');
const STALE_LOCK_MS = 5 * 60_000;

function newestSourceMtime(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return path.endsWith('.ts') ? st.mtimeMs : 0;
  let newest = 0;
  for (const e of readdirSync(path)) newest = Math.max(newest, newestSourceMtime(join(path, e)));
  return newest;
}

function isFresh(): boolean {
  if (!existsSync(CRASH_CHILD)) return false;
  const built = statSync(CRASH_CHILD).mtimeMs;
  return SOURCES.every((s) => !existsSync(join(ROOT, s)) || newestSourceMtime(join(ROOT, s)) <= built);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Makes sure dist/bench/crash-child.js exists and is newer than the sources it is built from
 * (`npm ci` builds dist; after local edits this runs `tsc -p tsconfig.build.json` once, under a
 * lock so that parallel test files do not build over each other). Returns its path.
 */
export async function ensureCrashChild(): Promise<string> {
  if (isFresh()) return CRASH_CHILD;
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
    if (!isFresh()) {
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
      if (!existsSync(CRASH_CHILD)) {
        throw new Error(`building ${CRASH_CHILD} failed (run \`npm run build\`): ${r.stdout}${r.stderr}`);
      }
    }
  } finally {
    rmdirSync(LOCK);
  }
  return CRASH_CHILD;
}
