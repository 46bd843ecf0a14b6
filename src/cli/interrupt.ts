import { rmSync } from 'node:fs';
import type { TemporaryPaths } from '../savepoint/convert.js';

/**
 * What the CLI does when the process is told to stop: SIGINT/SIGTERM remove the temporary
 * directories of work in progress (convert's hidden output and scratch, the canonical view of
 * verify/dump) and exit 130/143; a closed stdout (`dump ... | head`) ends the process quietly with
 * exit 0 after the same cleanup. Removal is synchronous and the process exits right after it, so
 * no pending write of the interrupted work runs again to recreate what was removed.
 */

export const EXIT_ON_SIGNAL: Readonly<Record<'SIGINT' | 'SIGTERM', number>> = { SIGINT: 130, SIGTERM: 143 };

/** The temporary directories that exist right now (convert and view code add and delete them). */
export class TemporaryPathRegistry implements TemporaryPaths {
  private readonly paths = new Set<string>();

  add(path: string): void {
    this.paths.add(path);
  }

  delete(path: string): void {
    this.paths.delete(path);
  }

  get size(): number {
    return this.paths.size;
  }

  /** Removes every registered directory, now; failures are reported, not thrown (the process is ending). */
  removeAllSync(): string[] {
    const failed: string[] = [];
    for (const p of this.paths) {
      try {
        rmSync(p, { recursive: true, force: true, maxRetries: 2 });
        this.paths.delete(p);
      } catch (err) {
        failed.push(`${p} (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
      }
    }
    return failed;
  }
}

interface Sink {
  write(chunk: string): unknown;
}

/**
 * Installs the handlers on this process for the duration of a command; returns their removal.
 * `exit` is process.exit (a parameter for tests of the wiring).
 */
export function installProcessHandlers(
  temps: TemporaryPathRegistry,
  stderr: Sink,
  command: () => string,
  exit: (code: number) => never = process.exit,
): () => void {
  const cleanup = (): void => {
    const failed = temps.removeAllSync();
    if (failed.length > 0)
      stderr.write(
        `streamstate ${command()}: could not remove ${failed.join(', ')}; delete it by hand or run \`streamstate gc\` on its directory.\n`,
      );
  };
  const onSignal = (signal: 'SIGINT' | 'SIGTERM'): void => {
    const had = temps.size > 0;
    cleanup();
    stderr.write(`streamstate ${command()}: interrupted by ${signal}${had ? '; partial output removed' : ''}.\n`);
    exit(EXIT_ON_SIGNAL[signal]);
  };
  const onStdoutError = (err: NodeJS.ErrnoException): void => {
    cleanup();
    if (err.code === 'EPIPE') exit(0); // the reader is gone (`| head`): nothing more to say
    stderr.write(`streamstate ${command()}: cannot write to stdout: ${err.code ?? err.message}.\n`);
    exit(1);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  // Stays after the command: output still buffered in the pipe can fail with EPIPE after run() returned.
  process.stdout.on('error', onStdoutError);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}
