import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  assignClaims,
  planSplits,
  resolveStartOffsets,
  type KafkaSplit,
  type TopicPartitionCount,
} from '../../src/kafka/index.js';
import { KafkaError } from '../../src/errors.js';

/** Split planning and assignment, against a plain model: every partition is read by exactly one subtask, from the right offset. */
describe('planSplits', () => {
  /** Redistributes split-list elements round-robin, as a rescaled restore of split-list operator state does. */
  function redistribute(all: readonly KafkaSplit[], parallelism: number): KafkaSplit[][] {
    const out: KafkaSplit[][] = Array.from({ length: parallelism }, () => []);
    all.forEach((s, i) => out[i % parallelism].push(s));
    return out;
  }

  it('a fresh start, a rescaled restore and grown topics: each partition read by exactly one subtask, restored ones from their offsets, new ones from the log start', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 3 }),
        fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 3, maxLength: 3 }),
        fc.integer({ min: 0, max: 2 }),
        (p1, p2, counts, growth, newTopics) => {
          const before: TopicPartitionCount[] = counts.map((n, i) => ({ topic: `t${i}`, partitions: n }));
          // Fresh start at p1.
          const fresh = Array.from({ length: p1 }, (_, i) =>
            planSplits({ restored: null, known: [], current: before, subtaskIndex: i, parallelism: p1 }),
          );
          const flat = fresh.flat();
          expect(flat.length).toBe(counts.reduce((a, b) => a + b, 0));
          expect(new Set(flat.map((s) => `${s.topic}/${s.partition}`)).size).toBe(flat.length);
          // Checkpoint: some offsets; restore at p2 after the topics grew and new topics appeared.
          const checkpointed: KafkaSplit[] = flat.map((s, i) => ({
            topic: s.topic,
            partition: s.partition,
            offset: i * 3,
          }));
          const after: TopicPartitionCount[] = [
            ...before.map((t, i) => ({ topic: t.topic, partitions: t.partitions + (growth[i] ?? 0) })),
            ...Array.from({ length: newTopics }, (_, i) => ({ topic: `new${i}`, partitions: 2 + i })),
          ];
          const shares = redistribute(checkpointed, p2);
          const restored = shares.flatMap((share, i) =>
            planSplits({ restored: share, known: before, current: after, subtaskIndex: i, parallelism: p2 }),
          );
          const offsetOf = new Map(checkpointed.map((s) => [`${s.topic}/${s.partition}`, s.offset]));
          const expected = after
            .flatMap((t) => Array.from({ length: t.partitions }, (_, p) => `${t.topic}/${p}`))
            .sort();
          expect(restored.map((s) => `${s.topic}/${s.partition}`).sort()).toEqual(expected);
          for (const s of restored) expect(s.offset).toBe(offsetOf.get(`${s.topic}/${s.partition}`) ?? 'earliest');
        },
      ),
    );
  });

  it('a restored split for a partition the topic no longer has, or a topic no longer read, is KAFKA_PARTITION_MISSING', () => {
    const restored = [{ topic: 'a', partition: 6, offset: 40 }];
    const fail = (current: TopicPartitionCount[]) => () =>
      planSplits({ restored, known: [{ topic: 'a', partitions: 8 }], current, subtaskIndex: 0, parallelism: 1 });
    expect(fail([{ topic: 'a', partitions: 4 }])).toThrow(expect.objectContaining({ code: 'KAFKA_PARTITION_MISSING' }));
    expect(fail([{ topic: 'b', partitions: 8 }])).toThrow(KafkaError);
  });
});

describe('assignClaims (the group leader hands out what members claim)', () => {
  it('gives each claimed partition to the newest epoch, members claiming nothing get nothing', () => {
    const out = assignClaims([
      { memberId: 'old', claim: { epoch: 1, subtaskIndex: 0, partitions: { t: [0, 1, 2] } } },
      { memberId: 'new0', claim: { epoch: 2, subtaskIndex: 0, partitions: { t: [0, 2] } } },
      { memberId: 'new1', claim: { epoch: 2, subtaskIndex: 1, partitions: { t: [1] } } },
      { memberId: 'foreign', claim: null },
    ]);
    expect(Object.fromEntries(out)).toEqual({ old: {}, new0: { t: [0, 2] }, new1: { t: [1] }, foreign: {} });
  });
});

describe('resolveStartOffsets (offsets out of range)', () => {
  const snapshot = {
    counts: [{ topic: 't', partitions: 1 }],
    watermarks: new Map([['t\u00000', { low: 100, high: 250 }]]),
  };

  it('fails with KAFKA_OFFSET_OUT_OF_RANGE below the log start (retention) or past the end, by default', () => {
    for (const offset of [40, 251]) {
      expect(() =>
        resolveStartOffsets([{ topic: 't', partition: 0, offset }], snapshot, 'fail', () => undefined),
      ).toThrow(expect.objectContaining({ code: 'KAFKA_OFFSET_OUT_OF_RANGE' }));
    }
  });

  it("with 'earliest', starts at the log start and reports the reset", () => {
    const resets: unknown[] = [];
    const splits = resolveStartOffsets(
      [
        { topic: 't', partition: 0, offset: 40 },
        { topic: 't', partition: 0, offset: 'earliest' },
        { topic: 't', partition: 0, offset: 180 },
      ],
      snapshot,
      'earliest',
      (r) => resets.push(r),
    );
    expect(splits.map((s) => s.offset)).toEqual([100, 100, 180]);
    expect(resets).toEqual([
      { topic: 't', partition: 0, restoredOffset: 40, resetTo: 100, watermarks: { low: 100, high: 250 } },
    ]);
  });
});
