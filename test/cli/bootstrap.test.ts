import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { MAX_PARALLELISM, OPERATOR, readJob } from '../savepoint/support/job.js';
import { jobModel } from '../processor/support.js';
import { cli, errorLine, tempDir } from './support.js';

/**
 * `streamstate bootstrap <jsonl> <dst>`: the JSON lines of test/savepoint/support/job.ts's job
 * make a savepoint that the job's own descriptors restore, in every backend, as what that job
 * would have written; bad lines are typed errors naming the line, and nothing is written.
 */

let root: string;
let cleanup: () => Promise<void>;
let n = 0;
beforeAll(async () => ({ dir: root, cleanup } = await tempDir('ss-cli-bootstrap-')));
afterAll(async () => cleanup());

const KEYS = 15;
const P = 2;

/** The job's declarations and records as JSON lines. */
function jobLines(keys: number, p: number): string[] {
  const op = OPERATOR;
  const lines: object[] = [
    { type: 'operator', id: op, parallelism: p, maxParallelism: MAX_PARALLELISM, keySerializer: 'string' },
    { type: 'state', operator: op, name: 'count', kind: 'value', serializer: 'int32' },
    { type: 'state', operator: op, name: 'profile', kind: 'value' },
    { type: 'state', operator: op, name: 'events', kind: 'list', serializer: 'string' },
    { type: 'state', operator: op, name: 'attrs', kind: 'map', userKeySerializer: 'string', serializer: 'msgpack' },
    { type: 'state', operator: op, name: 'total', kind: 'reducing' },
    { type: 'state', operator: op, name: 'timers', kind: 'timers' },
    { type: 'state', operator: op, name: 'offsets', kind: 'split', serializer: 'string' },
    { type: 'state', operator: op, name: 'sources', kind: 'union', serializer: 'int32' },
    { type: 'state', operator: op, name: 'rules', kind: 'broadcast', keySerializer: 'string', serializer: 'msgpack' },
  ];
  for (let i = 0; i < keys; i++) {
    const key = `key-${i}`;
    lines.push({ operator: op, state: 'count', key, value: i });
    if (i % 3 === 0)
      lines.push({ operator: op, state: 'profile', key, value: { name: `n${i}`, tags: [`t${i % 5}`, 'x'] } });
    lines.push({ operator: op, state: 'events', key, namespace: 'w1', value: [`e${i}-c`, `e${i}-a`, `e${i}-b`] });
    if (i % 2 === 0) lines.push({ operator: op, state: 'events', key, namespace: 'w2', value: [`late-${i}`] });
    for (let j = 0; j < (i % 4) + 1; j++)
      lines.push({ operator: op, state: 'attrs', key, userKey: `z${j}-${i}`, value: { v: i * 10 + j } });
    lines.push({ operator: op, state: 'total', key, value: i + 1 });
    lines.push({ operator: op, state: 'timers', key, namespace: i % 2 === 0 ? 'w1' : 'w2', timestamp: 1000 + (i % 7) });
  }
  for (let s = 0; s < p; s++) {
    lines.push(
      { operator: op, state: 'offsets', value: `p${s}-a` },
      { operator: op, state: 'offsets', value: `p${s}-b` },
    );
    lines.push({ operator: op, state: 'sources', value: s * 100 });
  }
  lines.push(
    { operator: op, state: 'rules', key: 'threshold', value: 42 },
    { operator: op, state: 'rules', key: 'window', value: p },
  );
  return lines.map((l) => JSON.stringify(l));
}

async function input(lines: string[]): Promise<string> {
  const path = join(root, `in-${n++}.jsonl`);
  await writeFile(path, `${lines.join('\n')}\n`);
  return path;
}

describe('streamstate bootstrap', () => {
  it('writes a savepoint the job restores (memory, LevelDB) as what it would have written', async () => {
    const sp = join(root, `sp-${n++}`);
    const r = await cli(['bootstrap', await input(jobLines(KEYS, P)), sp]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^bootstrapped .*: canonical savepoint with 1 operator \(op-1@2\/16\), 9 states\n$/);
    expect((await cli(['verify', sp])).code).toBe(0);
    const want = jobModel(KEYS, P);
    expect(await readJob(new HeapStateBackend({ name: 'memory' }), sp, { parallelism: 3 })).toEqual(want);
    expect(await readJob(leveldb({ workingDir: join(root, `work-${n++}`) }), sp, { parallelism: 1 })).toEqual(want);
  }, 20_000);

  const header = jobLines(0, 1).slice(0, 10);
  const bad: [string, string[], number, RegExp][] = [
    ['not JSON', [...header, '{"operator": "op-1",'], 11, /not valid JSON/],
    [
      'a value that does not fit the declared serializer',
      [...header, JSON.stringify({ operator: OPERATOR, state: 'count', key: 'k', value: 'seven' })],
      11,
      /expected an integer in int32 range/,
    ],
    [
      'a key that does not fit the key serializer',
      [...header, JSON.stringify({ operator: OPERATOR, state: 'count', key: 7, value: 7 })],
      11,
      /expected a string/,
    ],
    [
      'a record before its declaration',
      [header[0], JSON.stringify({ operator: OPERATOR, state: 'count', key: 'k', value: 1 })],
      2,
      /state "count" of operator "op-1" is not declared/,
    ],
    [
      'an undeclared operator',
      [JSON.stringify({ operator: 'x', state: 'count', key: 'k', value: 1 })],
      1,
      /operator "x" is not declared/,
    ],
    [
      'an unknown field',
      [...header, JSON.stringify({ operator: OPERATOR, state: 'count', key: 'k', value: 1, colour: 'red' })],
      11,
      /unknown field "colour"/,
    ],
    [
      'a custom serializer name',
      [
        header[0],
        JSON.stringify({ type: 'state', operator: OPERATOR, name: 'c', kind: 'value', serializer: 'myapp.point' }),
      ],
      2,
      /not a built-in serializer/,
    ],
    [
      'a list record without an array',
      [...header, JSON.stringify({ operator: OPERATOR, state: 'events', key: 'k', value: 'x' })],
      11,
      /must be an array/,
    ],
    ['a line that is not an object', [...header, '[1,2]'], 11, /must be a JSON object/],
  ];
  it.each(bad)('%s: INVALID_INPUT naming the line, nothing written', async (_name, lines, line, message) => {
    const file = await input(lines);
    const sp = join(root, `bad-${n++}`);
    const before = await readdir(root);
    const r = await cli(['bootstrap', file, sp]);
    expect(r.code).toBe(2);
    const err = errorLine(r.stderr);
    expect(err).toContain(`streamstate bootstrap: error INVALID_INPUT: ${file}, line ${line}:`);
    expect(err).toMatch(message);
    expect(await readdir(root)).toEqual(before);
  });

  it('an existing destination is ALREADY_EXISTS and stays as it was', async () => {
    const sp = join(root, `exists-${n++}`);
    await mkdir(sp);
    await writeFile(join(sp, 'mine.txt'), 'x');
    const r = await cli(['bootstrap', await input(jobLines(2, 1)), sp]);
    expect(r.code).toBe(2);
    expect(errorLine(r.stderr)).toContain('error ALREADY_EXISTS');
    expect(await readdir(sp)).toEqual(['mine.txt']);
  });

  it("docs/CLI.md's example input bootstraps and dumps as written", async () => {
    const doc = await readFile(new URL('../../docs/CLI.md', import.meta.url), 'utf8');
    const block = /### `bootstrap[\s\S]*?```\n([\s\S]*?)```/.exec(doc)![1];
    const sp = join(root, `doc-${n++}`);
    const r = await cli(['bootstrap', await input(block.trim().split('\n')), sp]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const d = await cli(['dump', sp, '--operator', 'counter']);
    expect(d.code).toBe(0);
    const lines = d.stdout
      .split('\n')
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l) as { state: string });
    expect(lines.map((l) => l.state).sort()).toEqual(['attrs', 'count', 'offsets', 'rules', 'seen', 'timers']);
  });

  it('a missing input file is NOT_FOUND', async () => {
    const r = await cli(['bootstrap', join(root, 'nope.jsonl'), join(root, `sp-${n++}`)]);
    expect(r.code).toBe(3);
    expect(errorLine(r.stderr)).toContain('error NOT_FOUND');
  });
});
