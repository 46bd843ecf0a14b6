import type { SnapshotReader } from '../../src/processor/index.js';
import type { JobContents } from '../savepoint/support/job.js';

/** readJob's normal form of a value (Maps as sorted entry lists). */
export function stable(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (x instanceof Map ? [...x].sort() : x));
}

/** What test/savepoint/support/job.ts's fill() writes for `keys` keys at `parallelism`, in readJob's normal form. */
export function jobModel(keys: number, parallelism: number): JobContents {
  const keyed: string[] = [];
  const timers: string[] = [];
  for (let i = 0; i < keys; i++) {
    const key = `key-${i}`;
    keyed.push(stable(['count', key, '', i]));
    if (i % 3 === 0) keyed.push(stable(['profile', key, '', { name: `n${i}`, tags: [`t${i % 5}`, 'x'] }]));
    keyed.push(stable(['events', key, 'w1', [`e${i}-c`, `e${i}-a`, `e${i}-b`]]));
    if (i % 2 === 0) keyed.push(stable(['events', key, 'w2', [`late-${i}`]]));
    const attrs: [string, { v: number }][] = [];
    for (let j = 0; j < (i % 4) + 1; j++) attrs.push([`z${j}-${i}`, { v: i * 10 + j }]);
    keyed.push(stable(['attrs', key, '', attrs.sort(([a], [b]) => (a < b ? -1 : 1))]));
    keyed.push(stable(['total', key, '', i + 1]));
    timers.push(stable([1000 + (i % 7), key, i % 2 === 0 ? 'w1' : 'w2']));
  }
  const split: string[] = [];
  const union: string[] = [];
  for (let s = 0; s < parallelism; s++) {
    split.push(`p${s}-a`, `p${s}-b`);
    union.push(String(s * 100));
  }
  return {
    keyed: keyed.sort(),
    timers: timers.sort(),
    split: split.sort(),
    union: union.sort(),
    broadcast: [
      stable(
        [
          ['threshold', 42],
          ['window', parallelism],
        ].sort(),
      ),
    ],
  };
}

/** The reader's view of the job's operator `op`, in readJob's normal form. */
export async function readerContents(reader: SnapshotReader, op: string): Promise<JobContents> {
  const o = reader.operator<string>(op);
  const out: JobContents = { keyed: [], timers: [], split: [], union: [], broadcast: [] };
  for (const state of ['count', 'profile', 'total'])
    for await (const e of o.values(state)) out.keyed.push(stable([state, e.key, e.namespace, e.value]));
  for await (const e of o.lists('events')) out.keyed.push(stable(['events', e.key, e.namespace, e.value]));
  const maps = new Map<string, [unknown, unknown][]>();
  for await (const e of o.mapEntries('attrs')) {
    const id = stable([e.key, e.namespace]);
    maps.set(id, [...(maps.get(id) ?? []), [e.userKey, e.value]]);
  }
  for (const [id, entries] of maps) {
    const [key, ns] = JSON.parse(id) as [string, string];
    out.keyed.push(stable(['attrs', key, ns, entries.sort(([a], [b]) => ((a as string) < (b as string) ? -1 : 1))]));
  }
  for await (const t of o.timers('timers')) out.timers.push(stable([t.timestamp, t.key, t.namespace]));
  for await (const e of o.operatorListState('offsets')) out.split.push(e.value as string);
  for await (const e of o.operatorListState('sources')) out.union.push(String(e.value));
  const rules: [unknown, unknown][] = [];
  for await (const e of o.broadcastState('rules')) rules.push([e.key, e.value]);
  out.broadcast.push(stable(rules.sort()));
  out.keyed.sort();
  out.timers.sort();
  out.split.sort();
  out.union = [...new Set(out.union)].sort();
  return out;
}
