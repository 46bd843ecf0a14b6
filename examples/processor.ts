/**
 * The State Processor API (streamstate/processor) end to end, without a running job:
 *
 *   1. bootstrap a canonical savepoint from plain data (a job can start from it),
 *   2. read it back as typed async iterables, and one key with a ranged read of its key group,
 *   3. transform it into a new savepoint (rename an operator, rewrite values, drop a state),
 *   4. read the result.
 *
 * Run: `npm run build && node dist/examples/processor.js [dir]` (default: a temporary directory,
 * removed afterwards). In an application, import from 'streamstate' and 'streamstate/processor'.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  bootstrapSavepoint,
  keyedLists,
  keyedValues,
  mapValues,
  openSnapshot,
  operatorList,
  transformSavepoint,
} from '../src/processor/index.js';
import { float64Serializer, listState, stringSerializer, valueState } from '../src/index.js';

/** The descriptors the job uses; bootstrap records their serializers, so the job restores the state as its own. */
const count = valueState<number>('count', { serializer: float64Serializer, defaultValue: 0 });
const seen = listState<string>('seen', { serializer: stringSerializer });

export async function main(dir: string, log: (line: string) => void = console.log): Promise<void> {
  // 1. Bootstrap: operator "counter", parallelism 2, max parallelism 128, keyed by strings.
  await bootstrapSavepoint(join(dir, 'bootstrapped'), [
    {
      operatorId: 'counter',
      parallelism: 2,
      maxParallelism: 128,
      keySerializer: stringSerializer,
      keyed: [
        keyedValues(count, [
          { key: 'user-1', value: 3 },
          { key: 'user-2', value: 5 },
        ]),
        keyedLists(seen, [{ key: 'user-1', value: ['page-1', 'page-7'] }]),
      ],
      operatorState: [operatorList('offsets', stringSerializer, ['partition-0:100', 'partition-1:250'])],
    },
  ]);

  // 2. Read: serializers come from the snapshot (built-in ones decode without the job's code).
  const snapshot = await openSnapshot(join(dir, 'bootstrapped'));
  try {
    const counter = snapshot.operator<string>('counter');
    for await (const { key, value } of counter.values<number>('count')) log(`count ${String(key)} = ${String(value)}`);
    for await (const { key, value } of counter.lists<string>('seen')) log(`seen ${String(key)} = ${value.join(', ')}`);
    for await (const { value } of counter.operatorListState<string>('offsets')) log(`offset ${String(value)}`);
    const one = await snapshot.operator('counter', { keySerializer: stringSerializer }).readKey('user-1');
    log(`user-1 (key group ${one.keyGroup}): ${one.records.map((r) => r.state).join(', ')}`);
  } finally {
    await snapshot.close();
  }

  // 3. Transform into a NEW savepoint; the source is only read.
  await transformSavepoint(join(dir, 'bootstrapped'), join(dir, 'transformed'), [
    { type: 'rename-operator', from: 'counter', to: 'visits' },
    mapValues<number>('visits', 'count', (n) => n * 10),
    { type: 'drop-state', operatorId: 'visits', state: 'seen' },
  ]);

  // 4. Read the result.
  const transformed = await openSnapshot(join(dir, 'transformed'));
  try {
    for await (const { key, value } of transformed.operator<string>('visits').values<number>('count'))
      log(`visits.count ${String(key)} = ${String(value)}`);
    log(
      `states of visits: ${transformed
        .describe()[0]
        .keyedStates.map((s) => s.name)
        .join(', ')}`,
    );
  } finally {
    await transformed.close();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const given = process.argv[2];
  const dir = given ?? (await mkdtemp(join(tmpdir(), 'streamstate-processor-')));
  try {
    await main(dir);
  } finally {
    if (given === undefined) await rm(dir, { recursive: true, force: true });
  }
}
