import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import {
  bootstrapSavepoint,
  keyedValues,
  mapValues,
  mergeSavepoints,
  openSnapshot,
  transformSavepoint,
  type SavepointEdit,
} from '../../src/processor/index.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import { cli, tempDir } from '../cli/support.js';
import { OPERATOR, readJob, writeJob } from '../savepoint/support/job.js';
import { jobModel, readerContents, stable } from './support.js';

/**
 * Every transform writes a new savepoint, verified by `streamstate dump` against the source's
 * dump with the edit applied; the source's files are byte-identical afterwards.
 */

let root: string;
let cleanup: () => Promise<void>;
let source: string;
let sourceDigest: string;
let n = 0;
const P = 2;
const KEYS = 20;

type Line = Record<string, unknown>;

async function dump(dir: string, operator: string): Promise<Line[]> {
  const r = await cli(['dump', dir, '--operator', operator]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r.stdout
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Line);
}

const sorted = (lines: Line[]): string[] => lines.map((l) => stable(l)).sort();

async function digest(dir: string): Promise<string> {
  const h = createHash('sha256');
  for (const name of (await readdir(dir)).sort()) h.update(name).update(await readFile(join(dir, name)));
  return h.digest('hex');
}

const dst = (): string => join(root, `out-${n++}`);

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-processor-transform-'));
  source = await writeJob(new HeapStateBackend({ name: 'memory' }), {
    root: join(root, 'src'),
    parallelism: P,
    format: 'canonical',
    data: { keys: KEYS },
  });
  sourceDigest = await digest(source);
});
afterAll(async () => {
  // The source is only ever read.
  expect(await digest(source)).toBe(sourceDigest);
  await cleanup();
});

describe('transforms, verified by dump', () => {
  it('rename-operator', async () => {
    const out = dst();
    await transformSavepoint(source, out, [{ type: 'rename-operator', from: OPERATOR, to: 'counter-v2' }]);
    expect(sorted(await dump(out, 'counter-v2'))).toEqual(sorted(await dump(source, OPERATOR)));
    expect((await cli(['dump', out, '--operator', OPERATOR])).code).toBe(2);
  });

  it('drop-state (keyed and operator state)', async () => {
    const out = dst();
    await transformSavepoint(source, out, [
      { type: 'drop-state', operatorId: OPERATOR, state: 'events' },
      { type: 'drop-state', operatorId: OPERATOR, state: 'offsets' },
    ]);
    const want = (await dump(source, OPERATOR)).filter((l) => l.state !== 'events' && l.state !== 'offsets');
    expect(sorted(await dump(out, OPERATOR))).toEqual(sorted(want));
  });

  it('rename-state (keyed and operator state)', async () => {
    const out = dst();
    await transformSavepoint(source, out, [
      { type: 'rename-state', operatorId: OPERATOR, from: 'count', to: 'a-count' },
      { type: 'rename-state', operatorId: OPERATOR, from: 'rules', to: 'rules-v2' },
    ]);
    const names: Record<string, string> = { count: 'a-count', rules: 'rules-v2' };
    const want = (await dump(source, OPERATOR)).map((l) => ({ ...l, state: names[l.state as string] ?? l.state }));
    expect(sorted(await dump(out, OPERATOR))).toEqual(sorted(want));
  });

  it('map-values on value, list and map states; undefined removes', async () => {
    const out = dst();
    await transformSavepoint(source, out, [
      mapValues<number>(OPERATOR, 'count', (v) => (v === 0 ? undefined : v * 2)),
      mapValues<string>(OPERATOR, 'events', (e) => (e.startsWith('late') ? undefined : e.toUpperCase())),
      mapValues<{ v: number }>(OPERATOR, 'attrs', (a, ctx) => ({ v: a.v + 1, of: ctx.userKey })),
    ]);
    const want = (await dump(source, OPERATOR)).flatMap((l): Line[] => {
      if (l.state === 'count') return l.value === 0 ? [] : [{ ...l, value: (l.value as number) * 2 }];
      if (l.state === 'events') {
        const els = (l.value as string[]).filter((e) => !e.startsWith('late')).map((e) => e.toUpperCase());
        return els.length === 0 ? [] : [{ ...l, value: els }];
      }
      if (l.state === 'attrs') return [{ ...l, value: { v: (l.value as { v: number }).v + 1, of: l.userKey } }];
      return [l];
    });
    expect(sorted(await dump(out, OPERATOR))).toEqual(sorted(want));
  });

  it('a rewritten savepoint restores into LevelDB at another parallelism', async () => {
    const out = dst();
    await transformSavepoint(source, out, [mapValues<number>(OPERATOR, 'count', (v) => v + 1000)]);
    const want = jobModel(KEYS, P);
    want.keyed = want.keyed
      .map((l) =>
        l.startsWith('["count"')
          ? stable(['count', ...(JSON.parse(l) as unknown[]).slice(1, 3), (JSON.parse(l) as number[])[3] + 1000])
          : l,
      )
      .sort();
    expect(await readJob(leveldb({ workingDir: join(root, `work-${n++}`) }), out, { parallelism: 3 })).toEqual(want);
  }, 20_000);

  it('merge two savepoints, then drop-operator', async () => {
    const other = dst();
    await bootstrapSavepoint(other, [
      {
        operatorId: 'geo',
        parallelism: 1,
        maxParallelism: 64,
        keySerializer: stringSerializer,
        keyed: [
          keyedValues(valueState<string>('city', { serializer: stringSerializer }), [{ key: 'u1', value: 'Oslo' }]),
        ],
      },
    ]);
    const merged = dst();
    await mergeSavepoints([source, other], merged);
    const reader = await openSnapshot(merged);
    try {
      expect(reader.operatorIds.sort()).toEqual(['geo', OPERATOR]);
      expect(await readerContents(reader, OPERATOR)).toEqual(jobModel(KEYS, P));
      expect(reader.describe().find((o) => o.operatorId === 'geo')?.maxParallelism).toBe(64);
    } finally {
      await reader.close();
    }
    expect(await dump(merged, 'geo')).toEqual([
      { state: 'city', kind: 'value', keyGroup: expect.any(Number) as number, key: 'u1', namespace: '', value: 'Oslo' },
    ]);
    const dropped = dst();
    await transformSavepoint(merged, dropped, [{ type: 'drop-operator', operatorId: 'geo' }]);
    expect(sorted(await dump(dropped, OPERATOR))).toEqual(sorted(await dump(source, OPERATOR)));
    expect((await cli(['dump', dropped, '--operator', 'geo'])).code).toBe(2);
    // The same operator id in two sources is refused.
    await expect(mergeSavepoints([source, source], dst())).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});

describe('bad edits: typed errors, nothing written', () => {
  const cases: [string, SavepointEdit, string][] = [
    ['unknown operator (rename)', { type: 'rename-operator', from: 'nope', to: 'x' }, 'UNKNOWN_OPERATOR'],
    ['unknown operator (drop)', { type: 'drop-operator', operatorId: 'nope' }, 'UNKNOWN_OPERATOR'],
    ['unknown state (drop)', { type: 'drop-state', operatorId: OPERATOR, state: 'nope' }, 'STATE_NOT_REGISTERED'],
    [
      'unknown state (rename)',
      { type: 'rename-state', operatorId: OPERATOR, from: 'nope', to: 'x' },
      'STATE_NOT_REGISTERED',
    ],
    [
      'rename onto an existing state',
      { type: 'rename-state', operatorId: OPERATOR, from: 'count', to: 'total' },
      'INVALID_ARGUMENT',
    ],
    ['map-values on a timer queue', mapValues(OPERATOR, 'timers', (v) => v), 'STATE_KIND_MISMATCH'],
    ['map-values of an unknown operator', mapValues('nope', 'count', (v) => v), 'UNKNOWN_OPERATOR'],
    ['map-values of an unknown state', mapValues(OPERATOR, 'nope', (v) => v), 'STATE_NOT_REGISTERED'],
  ];
  it.each(cases)('%s', async (_name, edit, code) => {
    const out = dst();
    const before = await readdir(root);
    await expect(transformSavepoint(source, out, [edit])).rejects.toMatchObject({ code });
    expect(await readdir(root)).toEqual(before);
  });

  it('an existing destination is ALREADY_EXISTS and stays untouched', async () => {
    const out = dst();
    await transformSavepoint(source, out, []);
    const d = await digest(out);
    await expect(
      transformSavepoint(source, out, [{ type: 'drop-operator', operatorId: OPERATOR }]),
    ).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
    expect(await digest(out)).toBe(d);
  });
});
