import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { stable } from '../processor/support.js';
import { OPERATOR, writeCheckpoints, writeJob } from '../savepoint/support/job.js';
import { cli, errorLine, tempDir } from './support.js';

/** `streamstate edit`: every edit verified by dump against the source's dump with the edit applied. */

let root: string;
let cleanup: () => Promise<void>;
let source: string;
let n = 0;
beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-cli-edit-'));
  // A LevelDB native savepoint: edit restores it through LevelDB to read it.
  source = await writeJob(leveldb({ workingDir: join(root, 'work') }), {
    root: join(root, 'src'),
    parallelism: 2,
    format: 'native',
    data: { keys: 12 },
  });
});
afterAll(async () => cleanup());

type Line = Record<string, unknown>;
const dst = (): string => join(root, `out-${n++}`);

async function dump(dir: string, operator: string): Promise<string[]> {
  const r = await cli(['dump', dir, '--operator', operator]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r.stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => stable(JSON.parse(l) as Line))
    .sort();
}

describe('streamstate edit', () => {
  it('renames the operator, drops and renames states in one step', async () => {
    const out = dst();
    const r = await cli([
      'edit',
      source,
      out,
      '--rename-operator',
      `${OPERATOR}=op-2`,
      '--drop-state',
      `${OPERATOR}/events`,
      '--drop-state',
      `${OPERATOR}/sources`,
      '--rename-state',
      `${OPERATOR}/count=visits`,
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^edited .* -> .*: canonical savepoint with operators op-2 \(4 edits\)\n$/);
    const want = (await dump(source, OPERATOR))
      .map((l) => JSON.parse(l) as Line)
      .filter((l) => l.state !== 'events' && l.state !== 'sources')
      .map((l) => stable(l.state === 'count' ? { ...l, state: 'visits' } : l))
      .sort();
    expect(await dump(out, 'op-2')).toEqual(want);
    expect((await cli(['verify', out])).code).toBe(0);
  }, 20_000);

  it('merges a checkpoint of another job and drops an operator', async () => {
    const ckRoot = join(root, 'ck');
    await writeCheckpoints(new HeapStateBackend({ name: 'filesystem' }), {
      root: ckRoot,
      jobId: 'job-z',
      count: 1,
      numRetained: 1,
    });
    const chk = join(ckRoot, 'job-z', (await readdir(join(ckRoot, 'job-z'))).find((d) => d.startsWith('chk-'))!);
    const renamed = dst();
    expect((await cli(['edit', chk, renamed, '--rename-operator', `${OPERATOR}=other`])).code).toBe(0);
    const merged = dst();
    const r = await cli(['edit', source, merged, '--merge', renamed]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(await dump(merged, 'other')).toEqual(await dump(chk, OPERATOR));
    expect(await dump(merged, OPERATOR)).toEqual(await dump(source, OPERATOR));
    const dropped = dst();
    expect((await cli(['edit', merged, dropped, '--drop-operator', 'other'])).code).toBe(0);
    expect((await cli(['dump', dropped, '--operator', 'other'])).code).toBe(2);
    // Clashing operator ids: refused.
    const clash = await cli(['edit', source, dst(), '--merge', source]);
    expect(clash.code).toBe(2);
    expect(errorLine(clash.stderr)).toContain('error INVALID_ARGUMENT');
  }, 30_000);

  const bad: [string, string[], string, number][] = [
    ['unknown operator', ['--drop-operator', 'nope'], 'UNKNOWN_OPERATOR', 2],
    ['unknown state', ['--drop-state', `${OPERATOR}/nope`], 'STATE_NOT_REGISTERED', 2],
    ['unknown operator of a state', ['--rename-state', 'nope/count=x'], 'UNKNOWN_OPERATOR', 2],
    ['unknown operator (rename)', ['--rename-operator', 'nope=x'], 'UNKNOWN_OPERATOR', 2],
    ['unknown state (rename)', ['--rename-state', `${OPERATOR}/nope=x`], 'STATE_NOT_REGISTERED', 2],
    ['unknown operator of a dropped state', ['--drop-state', 'nope/count'], 'UNKNOWN_OPERATOR', 2],
  ];
  it.each(bad)('%s: a typed error, nothing written', async (_name, args, code, exit) => {
    const out = dst();
    const before = await readdir(root);
    const r = await cli(['edit', source, out, ...args]);
    expect(r.code).toBe(exit);
    expect(errorLine(r.stderr)).toContain(`error ${code}`);
    expect(await readdir(root)).toEqual(before);
  });

  it('an existing destination is ALREADY_EXISTS and stays as it was', async () => {
    const out = dst();
    expect((await cli(['edit', source, out])).code).toBe(0);
    const before = await readdir(out);
    const r = await cli(['edit', source, out, '--drop-operator', OPERATOR]);
    expect(r.code).not.toBe(0);
    expect(errorLine(r.stderr)).toContain('error ALREADY_EXISTS');
    expect(await readdir(out)).toEqual(before);
    expect((await cli(['dump', out, '--operator', OPERATOR])).code).toBe(0);
  });

  it('malformed options are usage errors', async () => {
    for (const args of [
      ['--rename-operator', 'no-equals'],
      ['--drop-state', 'no-slash'],
      ['--rename-state', `${OPERATOR}/count`],
    ]) {
      const r = await cli(['edit', source, dst(), ...args]);
      expect(r.code).toBe(2);
    }
  });
});
