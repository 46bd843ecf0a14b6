import { spawn } from 'node:child_process';
import { watch } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { CRASH_CHILD, ensureCrashChild } from '../support/proof/crash-child-build.js';
import { writeJob } from '../savepoint/support/job.js';
import { tempDir } from './support.js';

/**
 * The built CLI as a process: SIGINT/SIGTERM during convert leave nothing behind and exit 130/143;
 * `dump | head` (stdout closed early) ends quietly with exit 0. ensureCrashChild builds dist/ when
 * the sources are newer (the whole project, so dist/src/cli/main.js too).
 */

const MAIN = join(CRASH_CHILD, '..', '..', 'src', 'cli', 'main.js');

let root: string;
let cleanup: () => Promise<void>;
let big: string;

beforeAll(async () => {
  await ensureCrashChild();
  ({ dir: root, cleanup } = await tempDir('ss-cli-sig-'));
  // Large enough that a native LevelDB convert runs well past the moment its scratch directory appears.
  big = await writeJob(new HeapStateBackend({ name: 'memory' }), {
    root,
    parallelism: 2,
    format: 'canonical',
    data: { keys: 20_000 },
  });
}, 180_000);
afterAll(async () => cleanup());

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
}

/** Runs a convert into `out` and sends `signal` as soon as convert's first hidden directory appears there. */
async function interruptedConvert(out: string, signal: 'SIGINT' | 'SIGTERM'): Promise<Exit & { sawHidden: boolean }> {
  await mkdir(out, { recursive: true });
  let sawHidden = false;
  const child = spawn(
    process.execPath,
    [MAIN, 'convert', big, join(out, 'sp'), '--to', 'leveldb', '--format', 'native'],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const watcher = watch(out, (_event, name) => {
    if (!sawHidden && typeof name === 'string' && name.startsWith('.sp.streamstate-')) {
      sawHidden = true;
      child.kill(signal);
    }
  });
  let stderr = '';
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  try {
    const [code, sig] = await new Promise<[number | null, NodeJS.Signals | null]>((res) =>
      child.on('exit', (c, s) => res([c, s])),
    );
    return { code, signal: sig, stderr, sawHidden };
  } finally {
    watcher.close();
  }
}

describe('signals during convert', () => {
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    it(`${signal} removes the hidden output and scratch directories and exits ${code}`, async () => {
      const out = join(root, `out-${signal}`);
      const r = await interruptedConvert(out, signal);
      expect(r.sawHidden).toBe(true);
      expect(r.stderr).toContain(`interrupted by ${signal}; partial output removed`);
      expect(r.code).toBe(code);
      expect(await readdir(out)).toEqual([]);
    }, 60_000);
  }
});

describe('dump into a pipe that closes early', () => {
  it('ends quietly with exit 0 (no EPIPE stack trace)', async () => {
    const child = spawn(process.execPath, [MAIN, 'dump', big, '--operator', 'op-1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    let first = '';
    await new Promise<void>((res) =>
      child.stdout.once('data', (c: Buffer) => {
        first = c.toString();
        child.stdout.destroy(); // like `| head` exiting after the first lines
        res();
      }),
    );
    const code = await new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
    expect(first).toMatch(/^\{"state":/);
    expect(stderr).toBe('');
    expect(code).toBe(0);
  }, 60_000);
});
