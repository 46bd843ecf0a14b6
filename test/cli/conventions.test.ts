import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { Progress } from '../../src/cli/progress.js';
import { writeJob } from '../savepoint/support/job.js';
import { cli, oneLine, tempDir } from './support.js';

/** CLI conventions (docs/CLI.md, "Conventions"): --version, --quiet, --progress, --json errors, argument errors. */

let root: string;
let cleanup: () => Promise<void>;
let sp: string;
beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-cli-conv-'));
  sp = await writeJob(new HeapStateBackend({ name: 'memory' }), {
    root,
    parallelism: 2,
    format: 'canonical',
    data: { keys: 50 },
  });
});
afterAll(async () => cleanup());

describe('flags', () => {
  it('--version and -V print the package version', async () => {
    const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
      version: string;
    };
    for (const flag of ['--version', '-V']) {
      const r = await cli([flag]);
      expect(r.code).toBe(0);
      expect(r.stdout.trim()).toBe(version);
    }
  });

  it('argument errors: one line with the documented prefix and INVALID_ARGUMENT, exit 2', async () => {
    const unknown = await cli(['inspect', sp, '--no-such-flag']);
    expect(unknown.code).toBe(2);
    expect(oneLine(unknown.stderr)).toMatch(
      /^streamstate inspect: error INVALID_ARGUMENT: unknown option '--no-such-flag'/,
    );
    const missing = await cli(['dump', sp]);
    expect(missing.code).toBe(2);
    expect(oneLine(missing.stderr)).toMatch(/^streamstate dump: error INVALID_ARGUMENT: .*--operator/);
    const command = await cli(['inspekt', sp]);
    expect(command.code).toBe(2);
    expect(oneLine(command.stderr)).toMatch(/^streamstate: error INVALID_ARGUMENT: unknown command 'inspekt'/);
  });

  it('--json: errors are one JSON object on stderr, argument errors too', async () => {
    const missing = await cli(['inspect', join(root, 'nope'), '--json']);
    expect(missing.code).toBe(3);
    expect(missing.stdout).toBe('');
    expect(JSON.parse(oneLine(missing.stderr))).toEqual({
      error: {
        command: 'inspect',
        code: 'NOT_FOUND',
        message: expect.stringContaining('no such file or directory'),
        exitCode: 3,
      },
    });
    const usage = await cli(['list', root, '--json', '--bogus']);
    expect(usage.code).toBe(2);
    expect(JSON.parse(oneLine(usage.stderr)).error).toMatchObject({
      command: 'list',
      code: 'INVALID_ARGUMENT',
      exitCode: 2,
    });
  });

  it('--quiet: no progress even on a terminal, results unchanged', async () => {
    const loud = await cli(['verify', sp], { tty: true, progressDelayMs: 0 });
    expect(loud.stderr).toContain('\r');
    const quiet = await cli(['--quiet', 'verify', sp], { tty: true, progressDelayMs: 0 });
    expect(quiet.code).toBe(0);
    expect(quiet.stderr).toBe('');
    expect(quiet.stdout).toBe(loud.stdout);
  });
});

describe('Progress', () => {
  afterEach(() => vi.useRealTimers());

  function sink(tty: boolean): { writes: string[]; write(s: string): void; isTTY: boolean } {
    const writes: string[] = [];
    return { writes, write: (s: string) => void writes.push(s), isTTY: tty };
  }

  it('redraws on a terminal every second while nothing is reported, with the elapsed time; dispose stops it', () => {
    vi.useFakeTimers({ now: 0 });
    const s = sink(true);
    const p = new Progress(s, 0, true, Date.now);
    vi.advanceTimersByTime(3_000);
    expect(s.writes).toEqual(['\r\x1b[2Kworking (1 s)', '\r\x1b[2Kworking (2 s)', '\r\x1b[2Kworking (3 s)']);
    p.update('restoring', 0, 4); // a phase stuck at 0% still shows time passing
    vi.advanceTimersByTime(2_000);
    expect(s.writes.slice(3)).toEqual([
      `\r\x1b[2K[${'-'.repeat(28)}]   0% restoring (3 s)`,
      `\r\x1b[2K[${'-'.repeat(28)}]   0% restoring (4 s)`,
      `\r\x1b[2K[${'-'.repeat(28)}]   0% restoring (5 s)`,
    ]);
    p.dispose();
    const n = s.writes.length;
    vi.advanceTimersByTime(5_000);
    expect(s.writes.slice(n - 1)).toEqual(['\r\x1b[2K']);
  });

  it('writes nothing on a non-terminal unless plain lines are asked for, and nothing at all when disabled', () => {
    vi.useFakeTimers({ now: 0 });
    const pipe = sink(false);
    const silent = new Progress(pipe, 0, false, Date.now);
    silent.update('rewriting', 1, 2);
    vi.advanceTimersByTime(3_000);
    expect(pipe.writes).toEqual([]);
    const plain = new Progress(pipe, 0, false, Date.now, { plain: true });
    plain.update('rewriting', 1, 2);
    expect(pipe.writes).toEqual(['rewriting: 50%\n']);
    const term = sink(true);
    const off = new Progress(term, 0, true, Date.now, { enabled: false });
    off.update('rewriting', 1, 2);
    vi.advanceTimersByTime(3_000);
    expect(term.writes).toEqual([]);
    for (const p of [silent, plain, off]) p.dispose();
  });
});
