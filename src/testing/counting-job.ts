import { stringSerializer, float64Serializer } from '../serializers/builtins.js';
import { reducingState, valueState } from '../state/descriptors.js';
import type { PipelineJob } from './pipeline.js';
import { SeededRandom } from './rng.js';

/**
 * A ready-made keyed counting job (the demo's, and the exactly-once tests'): per key it counts the
 * records and sums their values in keyed state, and emits (key, count, sum) for every record. With
 * exactly-once processing every key's committed counts are exactly 1..n.
 */
export interface CountInput {
  readonly key: string;
  readonly value: number;
}

export interface CountOutput {
  readonly key: string;
  readonly count: number;
  readonly sum: number;
}

export interface CountingInputOptions {
  readonly records: number;
  readonly keys: number;
  readonly partitions: number;
  readonly seed?: number;
}

/**
 * Records over `keys` keys spread over `partitions` partitions. A key lives in one partition only, so
 * its records are processed in a fixed order and its output sequence does not depend on scheduling.
 */
export function countingInput(opts: CountingInputOptions): CountInput[][] {
  const rng = new SeededRandom(opts.seed ?? 7);
  const partitions: CountInput[][] = Array.from({ length: opts.partitions }, () => []);
  for (let i = 0; i < opts.records; i++) {
    const k = rng.int(opts.keys);
    partitions[k % opts.partitions].push({ key: `key-${k}`, value: (i % 7) + 1 });
  }
  return partitions;
}

const countState = valueState<number>('count', { serializer: float64Serializer });
const sumState = reducingState<number>('sum', (a, b) => a + b, { serializer: float64Serializer });

export function countingJob(
  input: readonly (readonly CountInput[])[],
  opts: { parallelism: number; sourceParallelism?: number; maxParallelism?: number; jobId?: string },
): PipelineJob<CountInput, string, CountOutput> {
  return {
    ...opts,
    input,
    keyBy: (r) => r.key,
    keySerializer: stringSerializer,
    process(record, ctx) {
      const count = ctx.state(countState);
      const n = (count.value() ?? 0) + 1;
      count.update(n);
      const sum = ctx.state(sumState);
      sum.add(record.value);
      ctx.emit({ key: ctx.key, count: n, sum: sum.get() ?? 0 });
    },
  };
}

export interface CountCheck {
  readonly ok: boolean;
  /** Keys whose committed counts are exactly 1..n with the right final sum. */
  readonly keysOk: number;
  readonly keys: number;
  readonly expectedRecords: number;
  readonly committedRecords: number;
  /** The first few problems, readable. */
  readonly problems: readonly string[];
}

/** Checks committed output against the input: per key, counts exactly 1..n (no duplicates, no gaps) and the final sum. */
export function checkCounts(committed: readonly CountOutput[], input: readonly (readonly CountInput[])[]): CountCheck {
  const expected = new Map<string, { n: number; sum: number }>();
  let expectedRecords = 0;
  for (const part of input) {
    for (const r of part) {
      const e = expected.get(r.key) ?? { n: 0, sum: 0 };
      e.n++;
      e.sum += r.value;
      expected.set(r.key, e);
      expectedRecords++;
    }
  }
  const got = new Map<string, CountOutput[]>();
  for (const o of committed) {
    const list = got.get(o.key);
    if (list) list.push(o);
    else got.set(o.key, [o]);
  }
  const problems: string[] = [];
  const note = (p: string) => {
    if (problems.length < 10) problems.push(p);
  };
  let keysOk = 0;
  for (const [key, e] of expected) {
    const outs = (got.get(key) ?? []).slice().sort((a, b) => a.count - b.count);
    let ok = outs.length === e.n;
    if (!ok) note(`${key}: ${outs.length} committed records, expected ${e.n}`);
    for (let i = 0; ok && i < outs.length; i++) {
      if (outs[i].count !== i + 1) {
        ok = false;
        note(
          `${key}: committed counts are not 1..${e.n} (position ${i} holds ${outs[i].count}: a ${outs[i].count <= i ? 'duplicate' : 'gap'})`,
        );
      }
    }
    if (ok && outs.length > 0 && outs[outs.length - 1].sum !== e.sum) {
      ok = false;
      note(`${key}: final sum ${outs[outs.length - 1].sum}, expected ${e.sum}`);
    }
    if (ok) keysOk++;
  }
  for (const key of got.keys()) if (!expected.has(key)) note(`${key}: committed but not in the input`);
  return {
    ok: keysOk === expected.size && problems.length === 0 && committed.length === expectedRecords,
    keysOk,
    keys: expected.size,
    expectedRecords,
    committedRecords: committed.length,
    problems,
  };
}
