import { describe, expect, it } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import {
  checkCounts,
  countingInput,
  countingJob,
  runPipeline,
  type PipelineEvent,
  type PipelineEventType,
} from '../../src/testing/index.js';
import { expectDocumentedError } from '../conformance/parity/error-classes.js';

/**
 * RunOptions.eventTypes: onEvent hears only the listed types, and the runtime does not build the
 * per-record events nobody looks at. What a listener of some types hears must be exactly what a
 * listener of every type hears of those types; a crash predicate still sees every event.
 */
const input = countingInput({ records: 900, keys: 25, partitions: 3, seed: 4 });
const job = () => countingJob(input, { parallelism: 2, sourceParallelism: 2 });

async function heard(eventTypes?: readonly PipelineEventType[], crashAt?: (e: PipelineEvent) => boolean) {
  const events: PipelineEvent[] = [];
  const result = await runPipeline(job(), {
    backend: memory(),
    checkpointEvery: 100,
    seed: 9,
    onEvent: (e) => events.push(e),
    ...(eventTypes ? { eventTypes } : {}),
    ...(crashAt ? { crashAt } : {}),
  });
  return { result, events };
}

/** The fields of a record or emit event that do not depend on when asynchronous snapshot parts finish. */
function perRecord(events: readonly PipelineEvent[], type: 'record' | 'emit'): unknown[] {
  return events.flatMap((e) => {
    if (e.type === 'record' && type === 'record')
      return [[e.attempt, e.subtaskIndex, e.origin.partition, e.origin.offset, e.recordsProcessed]];
    if (e.type === 'emit' && type === 'emit')
      return [[e.attempt, e.subtaskIndex, e.origin.partition, e.origin.offset, e.target]];
    return [];
  });
}

describe('RunOptions.eventTypes', () => {
  it('onEvent hears only the listed types, and the same record events a listener of every type hears', async () => {
    const all = await heard();
    const some = await heard(['record', 'checkpoint-completed']);
    expect(new Set(some.events.map((e) => e.type))).toEqual(new Set(['record', 'checkpoint-completed']));
    expect(perRecord(some.events, 'record')).toEqual(perRecord(all.events, 'record'));
    expect(perRecord(some.events, 'record')).toHaveLength(input.flat().length);
    expect(checkCounts(some.result.committed, input).ok).toBe(true);
  });

  it('emit events, when listed, are the ones a listener of every type hears', async () => {
    const all = await heard();
    const emits = await heard(['emit']);
    expect(emits.events.every((e) => e.type === 'emit')).toBe(true);
    expect(perRecord(emits.events, 'emit')).toEqual(perRecord(all.events, 'emit'));
  });

  it('a crash predicate still sees every event, and the listener still hears the crash and the restore', async () => {
    const { result, events } = await heard(
      ['crash', 'restored'],
      (e) => e.type === 'emit' && e.attempt === 0 && e.origin.offset === 150,
    );
    expect(result.crashes).toBe(1);
    expect(events.map((e) => e.type)).toEqual(['crash', 'restored']);
    expect(checkCounts(result.committed, input).ok).toBe(true);
  });

  it('an empty list hears nothing; a numeric crashAt still crashes at that record', async () => {
    const events: PipelineEvent[] = [];
    const result = await runPipeline(job(), {
      backend: memory(),
      checkpointEvery: 100,
      onEvent: (e) => events.push(e),
      eventTypes: [],
      crashAt: 400,
    });
    expect(events).toEqual([]);
    expect(result.crashes).toBe(1);
    expect(checkCounts(result.committed, input).ok).toBe(true);
  });

  it('an unknown type is INVALID_ARGUMENT', async () => {
    const bad = ['record', 'records'] as unknown as PipelineEventType[];
    const err = await runPipeline(job(), { backend: memory(), checkpointEvery: 100, eventTypes: bad }).catch(
      (e: unknown) => e,
    );
    expectDocumentedError(err, 'INVALID_ARGUMENT');
  });
});
