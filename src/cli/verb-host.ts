import type { Command } from 'commander';
import type { TemporaryPaths } from '../savepoint/convert.js';
import type { S3ConnectionOptions } from '../savepoint/locate.js';

/**
 * What a command defined outside run.ts needs from the program that hosts it: the working
 * directory, the S3 settings of the global --s3-* flags (known once they are parsed), a way to
 * print, and run.ts's wrappers (the action wrapper names the command in error lines; the
 * decorator adds the exit-code help).
 */
export interface VerbHost {
  readonly cwd: () => string;
  readonly s3: () => S3ConnectionOptions;
  readonly print: (text: string) => Promise<void>;
  readonly action: <A extends unknown[]>(
    name: string,
    fn: (...args: A) => Promise<void>,
  ) => (...args: A) => Promise<void>;
  readonly decorate: (cmd: Command) => Command;
  /** Temporary directories of the running command, removed when the process is interrupted (optional). */
  readonly temps?: TemporaryPaths;
}
