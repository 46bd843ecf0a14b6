import type { Command } from 'commander';
import { resolve } from 'node:path';
import { bootstrapSavepoint } from '../processor/bootstrap.js';
import { readBootstrapFile } from '../processor/jsonl.js';
import { isS3Path } from '../savepoint/locate.js';
import type { VerbHost } from './verb-host.js';

/**
 * `streamstate bootstrap <jsonl> <dst>`: a new canonical savepoint from a JSON-lines file
 * (docs/CLI.md, "bootstrap"; the line format is src/processor/jsonl.ts). The whole input is
 * checked before anything is written; the destination must not exist.
 */
export function registerBootstrap(program: Command, host: VerbHost): void {
  host
    .decorate(
      program
        .command('bootstrap')
        .description('write a new canonical savepoint from a JSON-lines file of declarations and records (docs/CLI.md)')
        .argument(
          '<jsonl>',
          'input file: {"type":"operator",...} and {"type":"state",...} declarations, then one record per line',
        )
        .argument('<dst>', 'new savepoint directory or s3:// prefix (must not exist)')
        .option('--job-id <id>', 'job id recorded in _metadata', 'bootstrap'),
    )
    .action(
      host.action('bootstrap', async (input: string, dst: string, opts: { jobId: string }) => {
        const operators = await readBootstrapFile(resolve(host.cwd(), input), input);
        const metadata = await bootstrapSavepoint(isS3Path(dst) ? dst : resolve(host.cwd(), dst), operators, {
          jobId: opts.jobId,
          s3: host.s3(),
          ...(host.temps === undefined ? {} : { temporaryPaths: host.temps }),
        });
        const ops = metadata.operators.map((o) => `${o.operatorId}@${o.parallelism}/${o.maxParallelism}`).join(', ');
        const states = operators.reduce((n, o) => n + (o.keyed?.length ?? 0) + (o.operatorState?.length ?? 0), 0);
        await host.print(
          `bootstrapped ${dst}: canonical savepoint with ${metadata.operators.length} operator${metadata.operators.length === 1 ? '' : 's'} (${ops}), ${states} state${states === 1 ? '' : 's'}\n`,
        );
      }),
    );
}
