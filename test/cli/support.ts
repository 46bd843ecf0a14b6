import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run, type CliIo } from '../../src/cli/run.js';

export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs the CLI in-process with captured output (stderr is not a TTY unless `tty`). Progress is off
 * unless `progressDelayMs` is given: its lines appear after a delay, so a slow (loaded) machine
 * would otherwise change what a test sees on stderr.
 */
export async function cli(
  args: readonly string[],
  opts: { tty?: boolean; cwd?: string; progressDelayMs?: number } = {},
): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const io: CliIo = {
    stdout: { write: (s: string) => void (stdout += s) },
    stderr: { write: (s: string) => void (stderr += s), isTTY: opts.tty === true },
    ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
    progressDelayMs: opts.progressDelayMs ?? Number.POSITIVE_INFINITY,
  };
  const code = await run(args, io);
  return { code, stdout, stderr };
}

export async function tempDir(prefix: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export async function entries(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

/** stderr of a failed command: exactly one line that names the problem. */
export function oneLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.length > 0);
  if (lines.length !== 1) throw new Error(`expected one line on stderr, got ${lines.length}: ${stderr}`);
  return lines[0];
}

/** The error line of a failed command whose stderr may also hold plain progress lines: exactly one. */
export function errorLine(stderr: string): string {
  const lines = stderr.split('\n').filter((l) => l.includes(': error'));
  if (lines.length !== 1) throw new Error(`expected one error line on stderr, got ${lines.length}: ${stderr}`);
  return lines[0];
}
