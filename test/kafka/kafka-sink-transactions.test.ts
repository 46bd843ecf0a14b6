import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Message } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import { memory } from '../../backends/memory/index.js';
import type { OperatorStateBackend } from '../../src/backend/contract.js';
import { isStreamStateError } from '../../src/errors.js';
import {
  KafkaSinkSubtask,
  kafkaSink,
  markerGroup,
  type KafkaSinkGuarantee,
  type KafkaSinkOptions,
  type KafkaSinkTransaction,
} from '../../src/kafka/index.js';
import { AtLeastOnceCommitter, TransactionalCommitter } from '../../src/kafka/sink-committers.js';
import {
  CommittedOutput,
  checkCounts,
  countingInput,
  countingJob,
  InputGate,
  runPipeline,
  type CountOutput,
  type PipelineEvent,
} from '../../src/testing/index.js';
import { type RecordedCall, RecordingKafka } from './support/recording-kafka.js';

/**
 * The sink's transactional path with a recording client in place of a cluster (the mock cluster cannot
 * run KafkaJS transactions: docs/KAFKA.md). These tests check what the sink asks Kafka for and the
 * logic that makes it exactly once — markers, skipping on restore, regrouping by owner, failures —
 * not Kafka's side of it.
 */
const OUT = 'counts';
const INPUT = countingInput({ records: 2000, keys: 40, partitions: 4, seed: 3 });

function sinkOn(
  kafka: RecordingKafka,
  guarantee: KafkaSinkGuarantee,
  extra: Partial<KafkaSinkOptions<CountOutput>> = {},
) {
  return kafkaSink<CountOutput>({
    brokers: ['recording:9092'],
    topic: OUT,
    guarantee,
    serialize: (o) => ({ key: o.key, value: JSON.stringify(o) }),
    kafka: kafka.client,
    ...extra,
  });
}

function counts(messages: readonly Message[]): CountOutput[] {
  return messages.map((m) => JSON.parse(String(m.value)) as CountOutput);
}

function header(m: Message, name: string): string {
  return String((m.headers ?? {})[name]);
}

function duplicates(messages: readonly Message[]): number {
  const ids = messages.map((m) => `${header(m, 'streamstate-transaction')}/${header(m, 'streamstate-sequence')}`);
  return ids.length - new Set(ids).size;
}

describe('streamstate/kafka sink, transactional path (recording client)', () => {
  let scratch = '';
  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'streamstate-kafka-sink-'));
  });
  afterAll(async () => {
    if (scratch !== '') await rm(scratch, { recursive: true, force: true });
  });

  it('each completed checkpoint is one Kafka transaction per subtask: send, marker by sendOffsets (offset = checkpoint id), commit', async () => {
    const kafka = new RecordingKafka({ [OUT]: 4 });
    const job = countingJob(INPUT, { parallelism: 2, jobId: 'shapes' });
    const result = await runPipeline(
      { ...job, sink: sinkOn(kafka, 'exactly-once') },
      {
        backend: memory(),
        checkpointEvery: 300,
      },
    );
    expect(result.committed).toEqual([]);
    const producers = kafka.calls.filter((c) => c.op === 'producer').map((c) => c.config);
    expect(producers).toEqual([
      expect.objectContaining({
        transactionalId: 'streamstate-shapes-sink-0',
        idempotent: true,
        maxInFlightRequests: 1,
      }),
      expect.objectContaining({
        transactionalId: 'streamstate-shapes-sink-1',
        idempotent: true,
        maxInFlightRequests: 1,
      }),
    ]);
    for (const subtask of [0, 1]) {
      const txId = `streamstate-shapes-sink-${subtask}`;
      const mine = kafka.calls.filter(
        (c) => 'transactionalId' in c && c.transactionalId === txId && c.op !== 'connect',
      );
      expect(mine.length).toBeGreaterThan(0);
      // send, sendOffsets, commit — per transaction, in that order, nothing else.
      const ops = mine.map((c) => c.op).join(' ');
      expect(ops).toMatch(/^(send sendOffsets commit ?)+$/);
      const markers = mine.filter((c): c is Extract<RecordedCall, { op: 'sendOffsets' }> => c.op === 'sendOffsets');
      for (const m of markers) {
        expect(m.consumerGroupId).toBe(markerGroup('streamstate-shapes-sink', subtask));
        expect(m.topics).toEqual([{ topic: OUT, partitions: [{ partition: 0, offset: expect.any(String) }] }]);
      }
      const ids = markers.map((m) => Number(m.topics[0].partitions[0].offset));
      expect(ids).toEqual([...ids].sort((a, b) => a - b)); // an owner's checkpoints reach Kafka in order
      expect(kafka.markers.get(markerGroup('streamstate-shapes-sink', subtask))).toBe(ids.at(-1));
    }
    const out = kafka.topics.get(OUT)!;
    for (const m of out) expect(header(m, 'streamstate-transaction')).toMatch(/^[0-9a-f]{8}-a0-c\d+-s[01]$/);
    expect(checkCounts(counts(out), INPUT)).toMatchObject({ ok: true, committedRecords: 2000, problems: [] });
  });

  for (const guarantee of ['exactly-once', 'at-least-once'] as const) {
    it(`${guarantee}: crash between a checkpoint's completion and its commit, restored at parallelism 3: the restore commits it; ${guarantee === 'exactly-once' ? 'no record twice' : 'exact once de-duplicated by header'}`, async () => {
      const kafka = new RecordingKafka({ [OUT]: 4 });
      const job = countingJob(INPUT, { parallelism: 2, jobId: `crash-${guarantee}` });
      let completed = 0;
      const crashAt = (e: PipelineEvent) => e.type === 'checkpoint-completed' && e.attempt === 0 && ++completed === 3;
      const result = await runPipeline(
        { ...job, sink: sinkOn(kafka, guarantee) },
        {
          backend: memory(),
          checkpointEvery: 300,
          crashAt,
          recoverWithParallelism: 3,
        },
      );
      expect(result.crashes).toBe(1);
      const out = kafka.topics.get(OUT)!;
      if (guarantee === 'exactly-once') expect(duplicates(out)).toBe(0);
      const seen = new Set<string>();
      const unique = out.filter((m) => {
        const id = `${header(m, 'streamstate-transaction')}/${header(m, 'streamstate-sequence')}`;
        return seen.has(id) ? false : (seen.add(id), true);
      });
      expect(checkCounts(counts(unique), INPUT)).toMatchObject({ ok: true, committedRecords: 2000, problems: [] });
      // The restored checkpoint's own output went out after the restore, under the id it was pre-committed with.
      const restored = result.restoredFrom[0].checkpointId!;
      expect(out.some((m) => header(m, 'streamstate-transaction').includes(`-a0-c${restored}-`))).toBe(true);
    });
  }

  /** A sink subtask over restored pre-committed transactions (an operator state backend that holds just them). */
  function restoredSubtask(
    committer: TransactionalCommitter<CountOutput> | AtLeastOnceCommitter<CountOutput>,
    restored: KafkaSinkTransaction<CountOutput>[],
    subtaskIndex: number,
    parallelism: number,
  ): KafkaSinkSubtask<CountOutput> {
    const list = { get: () => restored, update: () => undefined, add: () => undefined, clear: () => undefined };
    const backend = { getUnionListState: () => list } as unknown as OperatorStateBackend;
    return new KafkaSinkSubtask<CountOutput>(
      {
        jobId: 'j',
        attempt: 1,
        operatorId: 'sink',
        subtaskIndex,
        parallelism,
        restoring: true,
        operatorBackend: backend,
        gate: new InputGate<CountOutput>([], () => 0),
      },
      committer,
      (o) => ({ value: JSON.stringify(o) }),
      'run2',
    );
  }

  const tx = (owner: number, checkpointId: number): KafkaSinkTransaction<CountOutput> => ({
    transactionId: `run1-a0-c${checkpointId}-s${owner}`,
    owner,
    checkpointId,
    records: [{ key: `k${owner}`, count: checkpointId, sum: 0 }],
  });
  const pending = [tx(1, 5), tx(0, 6), tx(2, 5), tx(0, 5), tx(1, 6)];

  it('restore: owners are regrouped (owner mod parallelism), each owner in checkpoint order, and what its marker covers is skipped', async () => {
    const kafka = new RecordingKafka({ [OUT]: 1 });
    kafka.markers.set(markerGroup('p', 0), 5); // owner 0's checkpoint 5 is in Kafka, its 6 is not
    kafka.markers.set(markerGroup('p', 1), 6); // owner 1: both in
    const cfg = (subtaskIndex: number) => ({
      kafka: kafka.client,
      brokers: ['recording:9092'],
      topic: OUT,
      idPrefix: 'p',
      subtaskIndex,
    });
    await restoredSubtask(new TransactionalCommitter(cfg(0)), pending, 0, 2).commitRestored();
    await restoredSubtask(new TransactionalCommitter(cfg(1)), pending, 1, 2).commitRestored();
    const produced = kafka.topics.get(OUT)!.map((m) => header(m, 'streamstate-transaction'));
    expect(produced).toEqual(['run1-a0-c6-s0', 'run1-a0-c5-s2']); // subtask 0: owners 0 and 2; subtask 1: owner 1, all in
    expect(kafka.markers.get(markerGroup('p', 0))).toBe(6);
    expect(kafka.markers.get(markerGroup('p', 2))).toBe(5);
    // Owner 2 has no subtask at parallelism 2: its transactional id is fenced (connected once) before its marker is read.
    const fenced = kafka.calls.findIndex((c) => c.op === 'connect' && c.transactionalId === 'p-2');
    const owner2Marker = kafka.calls.findIndex((c) => c.op === 'fetchOffsets' && c.groupId === markerGroup('p', 2));
    expect(fenced).toBeGreaterThanOrEqual(0);
    expect(fenced).toBeLessThan(owner2Marker);
    expect(
      kafka.calls.some((c) => c.op === 'connect' && (c.transactionalId === 'p-0' || c.transactionalId === 'p-1')),
    ).toBe(false); // the subtasks' own ids are registered by their own producers' connect, not by the restore
    expect(kafka.calls.filter((c) => c.op === 'fetchOffsets').map((c) => c.groupId)).toEqual([
      markerGroup('p', 0),
      markerGroup('p', 2),
      markerGroup('p', 1),
    ]);

    // At least once has no marker: every restored transaction is produced again.
    const plain = new RecordingKafka({ [OUT]: 1 });
    const alo = { ...cfg(0), kafka: plain.client };
    await restoredSubtask(new AtLeastOnceCommitter(alo), pending, 0, 1).commitRestored();
    expect(plain.topics.get(OUT)!.map((m) => header(m, 'streamstate-transaction'))).toEqual([
      'run1-a0-c5-s0',
      'run1-a0-c6-s0',
      'run1-a0-c5-s1',
      'run1-a0-c6-s1',
      'run1-a0-c5-s2',
    ]);
  });

  it('a failed send aborts the Kafka transaction and fails the run (KAFKA_CLIENT_FAILED); resuming commits everything exactly once', async () => {
    const kafka = new RecordingKafka({ [OUT]: 4 });
    const dir = join(scratch, 'failed-send');
    const job = countingJob(INPUT, { parallelism: 2, jobId: 'failed-send' });
    let completed = 0;
    const failOnThird = (e: PipelineEvent) => {
      if (e.type === 'checkpoint-completed' && ++completed === 3)
        kafka.failNextSend = Object.assign(new Error('broker said no'), { name: 'KafkaJSProtocolError' });
    };
    const err = await runPipeline(
      { ...job, sink: sinkOn(kafka, 'exactly-once') },
      {
        backend: filesystem({ checkpointDir: dir }),
        checkpointEvery: 300,
        onEvent: failOnThird,
      },
    ).catch((e: unknown) => e);
    expect(isStreamStateError(err, 'KAFKA_CLIENT_FAILED'), String(err)).toBe(true);
    expect(String((err as Error).message)).toMatch(/broker said no/);
    const sendIndex = kafka.calls.findLastIndex((c) => c.op === 'send');
    expect(kafka.calls[sendIndex + 1]).toMatchObject({ op: 'abort' });

    await runPipeline(
      { ...job, sink: sinkOn(kafka, 'exactly-once') },
      {
        backend: filesystem({ checkpointDir: dir }),
        checkpointEvery: 300,
        resume: true,
      },
    );
    const out = kafka.topics.get(OUT)!;
    expect(duplicates(out)).toBe(0);
    expect(checkCounts(counts(out), INPUT)).toMatchObject({ ok: true, committedRecords: 2000, problems: [] });
  });

  it('a record serialize rejects is SERIALIZATION_FAILED at write, before any checkpoint holds it: that record is never produced', async () => {
    const kafka = new RecordingKafka({ [OUT]: 1 });
    const job = countingJob(INPUT, { parallelism: 1 });
    const sink = sinkOn(kafka, 'exactly-once', {
      serialize: (o) => {
        if (o.key === 'key-7' && o.count === 3) throw new Error('no key-7 thrice');
        return { key: o.key, value: JSON.stringify(o) };
      },
    });
    const err = await runPipeline({ ...job, sink }, { backend: memory(), checkpointEvery: 300 }).catch(
      (e: unknown) => e,
    );
    expect(isStreamStateError(err, 'SERIALIZATION_FAILED'), String(err)).toBe(true);
    expect((err as Error).message).toMatch(/no key-7 thrice.*fix the serializer/);
    // Checkpoints completed before it may have been produced; the record itself is in no transaction.
    expect(counts(kafka.topics.get(OUT)!).some((o) => o.key === 'key-7' && o.count >= 3)).toBe(false);
  });

  it('an unreachable broker is KAFKA_UNREACHABLE when the sink starts', async () => {
    const job = countingJob(INPUT, { parallelism: 1 });
    const sink = kafkaSink<CountOutput>({
      brokers: ['127.0.0.1:1'],
      topic: OUT,
      guarantee: 'at-least-once',
      serialize: (o) => ({ value: JSON.stringify(o) }),
      connectionTimeout: 300,
      retries: 0,
    });
    const err = await runPipeline({ ...job, sink }, { backend: memory(), checkpointEvery: 300 }).catch(
      (e: unknown) => e,
    );
    expect(isStreamStateError(err, 'KAFKA_UNREACHABLE'), String(err)).toBe(true);
    expect((err as Error).message).toMatch(/127\.0\.0\.1:1/);
  });

  it('bad options are INVALID_ARGUMENT naming what to give; a missing output topic is KAFKA_TOPIC_MISSING; job.sink with options.output is INVALID_ARGUMENT', async () => {
    const kafka = new RecordingKafka({ [OUT]: 1 });
    const base = {
      brokers: ['b:9092'],
      topic: OUT,
      guarantee: 'exactly-once' as const,
      serialize: () => ({ value: 'x' }),
      kafka: kafka.client,
    };
    const bad: [Partial<KafkaSinkOptions<unknown>>, RegExp][] = [
      [{ brokers: [] }, /brokers/],
      [{ topic: '' }, /topic/],
      [{ guarantee: 'exactly_once' as unknown as KafkaSinkGuarantee }, /guarantee must be 'exactly-once'/],
      [{ guarantee: undefined as unknown as KafkaSinkGuarantee }, /guarantee/],
      [{ transactionalIdPrefix: 'a b' }, /transactionalIdPrefix/],
      [{ serialize: undefined as unknown as () => Message }, /serialize/],
    ];
    for (const [change, message] of bad) {
      let thrown: unknown;
      try {
        kafkaSink({ ...base, ...change });
      } catch (e) {
        thrown = e;
      }
      expect(isStreamStateError(thrown, 'INVALID_ARGUMENT'), JSON.stringify(change)).toBe(true);
      expect((thrown as Error).message).toMatch(message);
    }

    const job = countingJob(INPUT, { parallelism: 1 });
    const missing = await runPipeline(
      { ...job, sink: sinkOn(new RecordingKafka({}), 'exactly-once') },
      {
        backend: memory(),
        checkpointEvery: 300,
      },
    ).catch((e: unknown) => e);
    expect(isStreamStateError(missing, 'KAFKA_TOPIC_MISSING'), String(missing)).toBe(true);

    const both = await runPipeline(
      { ...job, sink: sinkOn(kafka, 'exactly-once') },
      {
        backend: memory(),
        checkpointEvery: 300,
        output: new CommittedOutput<CountOutput>(),
      },
    ).catch((e: unknown) => e);
    expect(isStreamStateError(both, 'INVALID_ARGUMENT'), String(both)).toBe(true);
  });
});
