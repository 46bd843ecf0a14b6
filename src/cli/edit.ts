import { InvalidArgumentError, type Command } from 'commander';
import { resolve } from 'node:path';
import { mergeSavepoints, type SavepointEdit } from '../processor/transform.js';
import { isS3Path } from '../savepoint/locate.js';
import type { VerbHost } from './verb-host.js';

/**
 * `streamstate edit <src> <dst> ...`: a new canonical savepoint from `src` (and any --merge
 * sources) with operators renamed or dropped and states dropped or renamed (docs/CLI.md, "edit").
 * Every name is the source's; the edits apply in the order drop-operator, drop-state,
 * rename-state, rename-operator. The sources are only read.
 */

interface EditOptions {
  renameOperator: string[];
  dropOperator: string[];
  dropState: string[];
  renameState: string[];
  merge: string[];
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

function pair(value: string, what: string): [string, string] {
  const i = value.lastIndexOf('=');
  if (i <= 0 || i === value.length - 1) throw new InvalidArgumentError(`expected ${what}.`);
  return [value.slice(0, i), value.slice(i + 1)];
}

/** `op/state`: split at the first "/" (operator ids cannot hold one here; state names may). */
function opState(value: string, what: string): [string, string] {
  const i = value.indexOf('/');
  if (i <= 0 || i === value.length - 1) throw new InvalidArgumentError(`expected ${what}.`);
  return [value.slice(0, i), value.slice(i + 1)];
}

/** The edits the options ask for, in the documented order, every name as in the source. */
export function editsFromOptions(opts: EditOptions): SavepointEdit[] {
  const edits: SavepointEdit[] = [];
  for (const id of opts.dropOperator) edits.push({ type: 'drop-operator', operatorId: id });
  for (const v of opts.dropState) {
    const [operatorId, state] = opState(v, '<operator>/<state>');
    edits.push({ type: 'drop-state', operatorId, state });
  }
  for (const v of opts.renameState) {
    const [left, to] = pair(v, '<operator>/<old>=<new>');
    const [operatorId, from] = opState(left, '<operator>/<old>=<new>');
    edits.push({ type: 'rename-state', operatorId, from, to });
  }
  for (const v of opts.renameOperator) {
    const [from, to] = pair(v, '<old>=<new>');
    edits.push({ type: 'rename-operator', from, to });
  }
  return edits;
}

export function registerEdit(program: Command, host: VerbHost): void {
  host
    .decorate(
      program
        .command('edit')
        .description(
          'write a new savepoint from a checkpoint or savepoint with operators renamed or dropped, states dropped or renamed, other savepoints merged in',
        )
        .argument('<src>', 'source snapshot directory (or its _metadata file; local or s3://); only read')
        .argument('<dst>', 'new savepoint directory or s3:// prefix (must not exist)')
        .option('--rename-operator <old=new>', 'rename an operator (repeatable)', collect, [])
        .option('--drop-operator <id>', 'leave an operator out (repeatable)', collect, [])
        .option(
          '--drop-state <operator/state>',
          'leave a state out: keyed state, timer queue or operator state of that name (repeatable)',
          collect,
          [],
        )
        .option('--rename-state <operator/old=new>', 'rename a state (repeatable)', collect, [])
        .option(
          '--merge <snapshot>',
          "add another snapshot's operators (repeatable; operator ids must not clash)",
          collect,
          [],
        ),
    )
    .action(
      host.action('edit', async (src: string, dst: string, opts: EditOptions) => {
        const edits = editsFromOptions(opts);
        const at = (p: string): string => (isS3Path(p) ? p : resolve(host.cwd(), p));
        const metadata = await mergeSavepoints([src, ...opts.merge].map(at), at(dst), edits, {
          s3: host.s3(),
          cwd: host.cwd(),
          ...(host.temps === undefined ? {} : { temporaryPaths: host.temps }),
        });
        const ops = metadata.operators.map((o) => o.operatorId).join(', ') || 'none';
        await host.print(
          `edited ${src} -> ${dst}: canonical savepoint with operators ${ops} (${edits.length} edit${edits.length === 1 ? '' : 's'}${opts.merge.length > 0 ? `, ${opts.merge.length} merged` : ''})\n`,
        );
      }),
    );
}
