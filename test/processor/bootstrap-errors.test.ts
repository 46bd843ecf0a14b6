import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootstrapSavepoint, keyedValues, type BootstrapOperator } from '../../src/processor/index.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import { tempDir } from '../cli/support.js';

/** bootstrapSavepoint refuses bad requests with typed errors before anything is written. */
let root: string;
let cleanup: () => Promise<void>;
beforeAll(async () => ({ dir: root, cleanup } = await tempDir('ss-processor-bootstrap-errors-')));
afterAll(async () => cleanup());

const count = valueState<number>('count', { serializer: int32Serializer });
const op = (over: Partial<BootstrapOperator<unknown>> = {}): BootstrapOperator<unknown> => ({
  operatorId: 'op',
  parallelism: 2,
  maxParallelism: 16,
  keySerializer: stringSerializer,
  keyed: [keyedValues(count, [{ key: 'a', value: 1 }])],
  ...over,
});

describe('bootstrap: bad input', () => {
  const cases: [string, BootstrapOperator<unknown>[], string][] = [
    ['parallelism above max parallelism', [op({ parallelism: 32 })], 'PARALLELISM_INVALID'],
    ['max parallelism above 32768', [op({ maxParallelism: 40_000 })], 'PARALLELISM_INVALID'],
    ['max parallelism 0', [op({ maxParallelism: 0 })], 'PARALLELISM_INVALID'],
    ['keyed state without a key serializer', [op({ keySerializer: undefined })], 'INVALID_ARGUMENT'],
    ['the same operator twice', [op(), op()], 'INVALID_ARGUMENT'],
    ['the same state twice', [op({ keyed: [keyedValues(count, []), keyedValues(count, [])] })], 'INVALID_ARGUMENT'],
    [
      'a value the serializer refuses',
      [op({ keyed: [keyedValues(count, [{ key: 'a', value: 1.5 }])] })],
      'SERIALIZATION_FAILED',
    ],
  ];
  it.each(cases)('%s', async (_name, operators, code) => {
    const before = await readdir(root);
    await expect(bootstrapSavepoint(join(root, 'sp'), operators)).rejects.toMatchObject({ code });
    expect(await readdir(root)).toEqual(before);
  });

  it('reports its temporary directory (so an interrupted CLI removes it) and forgets it once gone', async () => {
    const live = new Set<string>();
    const seen: string[] = [];
    const temporaryPaths = {
      add: (p: string) => void (live.add(p), seen.push(p)),
      delete: (p: string) => void live.delete(p),
    };
    await bootstrapSavepoint(join(root, 'tracked'), [op()], { temporaryPaths });
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatch(/\.tracked\.streamstate-convert-[0-9a-f]{12}$/);
    expect(live.size).toBe(0);
    await expect(
      bootstrapSavepoint(join(root, 'tracked-2'), [op({ keyed: [keyedValues(count, [{ key: 'a', value: 1.5 }])] })], {
        temporaryPaths,
      }),
    ).rejects.toMatchObject({ code: 'SERIALIZATION_FAILED' });
    expect(seen).toHaveLength(2);
    expect(live.size).toBe(0);
  });

  it('an existing destination is ALREADY_EXISTS; a missing parent NOT_FOUND', async () => {
    await mkdir(join(root, 'taken'));
    await expect(bootstrapSavepoint(join(root, 'taken'), [op()])).rejects.toMatchObject({ code: 'ALREADY_EXISTS' });
    expect(await readdir(join(root, 'taken'))).toEqual([]);
    await expect(bootstrapSavepoint(join(root, 'no', 'such', 'sp'), [op()])).rejects.toMatchObject({
      code: 'NOT_FOUND',
    });
  });
});
