import type { Batch, Consumer, Kafka } from 'kafkajs';
import { StreamStateError } from '../errors.js';
import type { RecordOrigin } from '../testing/channels.js';
import { splitAssigner, type SplitClaim } from './assigner.js';
import { toKafkaError } from './client-errors.js';
import type { KafkaSplit } from './splits.js';

/** What a deserializer sees of a Kafka record. */
export interface KafkaRecord {
  readonly topic: string;
  readonly partition: number;
  readonly offset: number;
  readonly key: Buffer | null;
  readonly value: Buffer | null;
  readonly timestamp: string;
  readonly headers: Readonly<Record<string, unknown>>;
}

export interface SplitReaderOptions<T> {
  readonly kafka: Kafka;
  readonly brokers: readonly string[];
  readonly groupId: string;
  /** The splits to read, each from its offset (resolved: no 'earliest' left). */
  readonly splits: readonly KafkaSplit[];
  /** Per split (same order): stop before this offset (a bounded read), or null to read on forever. */
  readonly stopAt: readonly (number | null)[];
  readonly claim: SplitClaim;
  readonly deserialize: (record: KafkaRecord) => T;
  /** Records buffered per partition before its fetching waits for the runtime to take them. */
  readonly maxBuffered: number;
  readonly sessionTimeout: number;
  readonly heartbeatInterval: number;
}

const MAX_CONSUMER_RESTARTS = 5;

/**
 * The records of one fetched batch, in offset order, taken one by one. Kept per batch (two arrays),
 * not per record: a wrapper object per buffered record cost an allocation each and lengthened every
 * young-generation GC while up to maxBuffered records per partition wait in the buffer (bench/kafka).
 */
interface Chunk<T> {
  readonly values: T[];
  readonly offsets: number[];
  /** The split's position once the chunk's last entry is taken: past the offsets after its last record that hold none (transaction markers, compaction). */
  readonly end: number;
  /** The index of the next record to take. */
  next: number;
}

class SplitCursor<T> {
  /** The offset of the next record the runtime takes (what a checkpoint stores). */
  position: number;
  /** The offset of the next record to buffer (ahead of position by what is buffered). */
  fetchPosition: number;
  /** Taken chunks before head are cleared (undefined) until the array is compacted. */
  readonly chunks: (Chunk<T> | undefined)[] = [];
  head = 0;
  /** Records buffered, plus one per chunk that holds only a skip. */
  buffered = 0;
  drained: (() => void) | null = null;

  constructor(
    readonly topic: string,
    readonly partition: number,
    offset: number,
    readonly stopAt: number | null,
  ) {
    this.position = offset;
    this.fetchPosition = offset;
  }

  /** Everything up to the stop offset is buffered: fetching more would only be dropped. */
  get fetchDone(): boolean {
    return this.stopAt !== null && this.fetchPosition >= this.stopAt;
  }

  get finished(): boolean {
    return this.stopAt !== null && this.position >= this.stopAt;
  }
}

/**
 * Reads a fixed set of splits (partition + offset) with a KafkaJS consumer and buffers their records
 * for a runtime that takes them one at a time (poll), so a checkpoint barrier can go between any two
 * records. The position of each split advances only when the runtime takes a record; that position,
 * not Kafka's committed offset, is the source of truth (it goes into checkpoints).
 *
 * KafkaJS has no manual assignment: the reader joins the job's consumer group with splitAssigner,
 * which hands every member exactly the partitions it claims. After every (re)join the reader seeks
 * its partitions to its fetch positions (KafkaJS would resume from the committed offset, which lags),
 * and drops any record below a fetch position, so a rebalance neither duplicates nor skips records.
 */
export class KafkaSplitReader<T> {
  private readonly cursors: SplitCursor<T>[];
  private readonly byKey = new Map<string, SplitCursor<T>>();
  private rr = 0;
  private totalBuffered = 0;
  private consumer: Consumer | null = null;
  private started: Promise<void> | null = null;
  private failure: StreamStateError | null = null;
  private waiter: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } | null = null;
  private closed = false;
  private restarts = 0;
  private joins = 0;

  constructor(private readonly options: SplitReaderOptions<T>) {
    this.cursors = options.splits.map(
      (s, i) => new SplitCursor<T>(s.topic, s.partition, s.offset, options.stopAt[i] ?? null),
    );
    for (const c of this.cursors) this.byKey.set(key(c.topic, c.partition), c);
  }

  /** Starts fetching in the background (joining the group takes a while; subtasks join together). */
  start(): void {
    if (this.started || this.cursors.every((c) => c.fetchDone)) return;
    this.started = this.run().catch((err: unknown) => {
      this.fail(err, 'starting the consumer');
    });
  }

  /** The offsets of the next records to take, per split: what a checkpoint stores. */
  positions(): KafkaSplit[] {
    return this.cursors.map((c) => ({ topic: c.topic, partition: c.partition, offset: c.position }));
  }

  get buffered(): number {
    return this.totalBuffered;
  }

  /** How often the consumer (re)joined its group: 1 without rebalances. */
  get groupJoins(): number {
    return this.joins;
  }

  /** How often a consumer KafkaJS gave up on (a non-retriable error) was replaced by a new one. */
  get consumerRestarts(): number {
    return this.restarts;
  }

  /** Every split reached its stop offset (never for an unbounded read). */
  get finished(): boolean {
    return this.cursors.every((c) => c.finished);
  }

  /**
   * Takes the next buffered record (round-robin over the splits), or null. Returned in the shape a
   * source subtask hands the runtime (value and origin), so no second object is built per record.
   */
  poll(): { value: T; origin: RecordOrigin } | null {
    const n = this.cursors.length;
    for (let i = 0; i < n && this.totalBuffered > 0; i++) {
      const c = this.cursors[(this.rr + i) % n];
      while (c.buffered > 0) {
        const chunk = c.chunks[c.head]!;
        const k = chunk.next++;
        const last = chunk.next >= chunk.values.length;
        if (last) {
          // The chunk is used up: drop it (compacting the array now and then, not on every chunk).
          c.chunks[c.head++] = undefined;
          if (c.head > 64 && c.head * 2 > c.chunks.length) {
            c.chunks.splice(0, c.head);
            c.head = 0;
          }
        }
        c.buffered--;
        this.totalBuffered--;
        c.position = last ? chunk.end : chunk.offsets[k] + 1;
        if (c.drained && c.buffered <= this.options.maxBuffered / 2) {
          c.drained();
          c.drained = null;
        }
        if (k >= chunk.values.length) continue; // a chunk of a skip only: just the position moves
        this.rr = (this.rr + i + 1) % n;
        return { value: chunk.values[k], origin: { partition: c.partition, offset: chunk.offsets[k] } };
      }
    }
    return null;
  }

  /** null: finished for good; else settles when a record is buffered or the read finished; rejects when reading failed. */
  waitForInput(): Promise<void> | null {
    if (this.failure) return Promise.reject(this.failure);
    if (this.totalBuffered > 0) return Promise.resolve();
    if (this.finished) return null;
    if (!this.waiter) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => undefined);
      this.waiter = { promise, resolve, reject };
    }
    return this.waiter.promise;
  }

  /** Commits `positions` to the consumer group, for monitoring (lag); never read back. Failures are ignored on purpose. */
  async commitForMonitoring(positions: readonly KafkaSplit[]): Promise<void> {
    const consumer = this.consumer;
    if (!consumer || this.closed || positions.length === 0) return;
    try {
      await consumer.commitOffsets(
        positions.map((p) => ({ topic: p.topic, partition: p.partition, offset: String(p.offset) })),
      );
    } catch {
      // The partition may be mid-rebalance: the next checkpoint commits again. Offsets in Kafka are not the source of truth.
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const c of this.cursors) c.drained?.();
    const consumer = this.consumer;
    this.consumer = null;
    if (consumer) await consumer.disconnect().catch(() => undefined);
    this.wake();
  }

  private async run(): Promise<void> {
    const o = this.options;
    const consumer = o.kafka.consumer({
      groupId: o.groupId,
      partitionAssigners: [splitAssigner(o.claim)],
      sessionTimeout: o.sessionTimeout,
      heartbeatInterval: o.heartbeatInterval,
      allowAutoTopicCreation: false,
      // KafkaJS runs one fetcher per broker and heartbeats only between fetches; a fetcher whose broker
      // has nothing new (or leads none of our partitions) waits maxWaitTime. With KafkaJS's 5 s default
      // a rebalance could not start until that wait ended, and a member with a shorter session timeout
      // was dropped from the group meanwhile (seen: 20 s per rebalance on librdkafka's mock cluster).
      maxWaitTimeInMs: o.heartbeatInterval,
      retry: { retries: 5 },
    });
    this.consumer = consumer;
    consumer.on(consumer.events.GROUP_JOIN, () => {
      this.joins++;
      this.seekAll();
    });
    consumer.on(consumer.events.CRASH, (e: { payload: { error: Error; restart: boolean } }) => {
      // KafkaJS restarts by itself after retriable errors; after others the consumer is gone.
      if (!e.payload.restart && this.consumer === consumer) this.restartAfter(e.payload.error);
    });
    const topics = [...new Set(this.cursors.map((c) => c.topic))];
    await consumer.connect();
    if (this.closed) return void (await consumer.disconnect());
    await consumer.subscribe({ topics, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: Math.max(1, this.cursors.length),
      eachBatch: async ({ batch, resolveOffset, heartbeat, pause, isRunning, isStale }) => {
        this.take(batch);
        resolveOffset(batch.lastOffset());
        if (this.byKey.get(key(batch.topic, batch.partition))?.fetchDone) pause(); // nothing more to fetch for this read
        await this.backpressure(batch, heartbeat, () => isRunning() && !isStale());
      },
    });
  }

  /**
   * A consumer that KafkaJS gave up on (a non-retriable error, e.g. a group coordinator refusing a
   * late SyncGroup during a rebalance, which librdkafka's mock cluster does) is replaced by a new
   * one, up to MAX_CONSUMER_RESTARTS times; its buffered records and positions are kept, and the
   * new consumer seeks to them when it joins. Then the source fails with the last error.
   */
  private restartAfter(error: unknown): void {
    if (this.closed) return;
    if (++this.restarts > MAX_CONSUMER_RESTARTS) {
      this.fail(error, `reading (after ${MAX_CONSUMER_RESTARTS} consumer restarts)`);
      return;
    }
    const old = this.consumer;
    this.consumer = null;
    this.started = (async () => {
      await old?.disconnect().catch(() => undefined);
      if (!this.closed) await this.run();
    })().catch((err: unknown) => {
      this.fail(err, 'restarting the consumer');
    });
  }

  /**
   * Re-seeks after every (re)join, before the first fetch of the new generation (KafkaJS emits
   * GROUP_JOIN synchronously), and pauses the splits that fetched everything up to their stop offset
   * (else KafkaJS would fetch them again from the group's committed offset, only for take to drop it).
   */
  private seekAll(): void {
    const consumer = this.consumer;
    if (!consumer) return;
    for (const c of this.cursors) {
      consumer.seek({ topic: c.topic, partition: c.partition, offset: String(c.fetchPosition) });
      if (c.fetchDone) consumer.pause([{ topic: c.topic, partitions: [c.partition] }]);
    }
  }

  private take(batch: Batch): void {
    const c = this.byKey.get(key(batch.topic, batch.partition));
    if (!c || batch.isEmpty()) return;
    const { topic, partition, messages } = batch;
    const deserialize = this.options.deserialize;
    const values: T[] = [];
    const offsets: number[] = [];
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i];
      const offset = Number(m.offset);
      // Below the fetch position: a re-delivery after a rebalance or seek. At or past the stop offset: not part of this read.
      if (offset < c.fetchPosition || (c.stopAt !== null && offset >= c.stopAt)) continue;
      let value: T;
      try {
        value = deserialize({
          topic,
          partition,
          offset,
          key: m.key ?? null,
          value: m.value ?? null,
          timestamp: m.timestamp,
          headers: m.headers ?? {},
        });
      } catch (err) {
        // The records before this one stay buffered: the runtime takes them, then sees the failure.
        if (values.length > 0) this.buffer(c, values, offsets, c.fetchPosition);
        throw this.fail(
          new StreamStateError(
            'SERIALIZATION_FAILED',
            `could not deserialize ${topic}[${partition}]@${offset}: ${String(err)}; fix the deserializer or the record.`,
            {
              cause: err,
            },
          ),
          'deserializing',
        );
      }
      values.push(value);
      offsets.push(offset);
      c.fetchPosition = offset + 1;
    }
    // Offsets after the last record that hold no record (a transaction marker): step over them, but not past the stop offset.
    const last = Number(batch.lastOffset()) + 1;
    const skipTo = c.stopAt === null ? last : Math.min(last, c.stopAt);
    const end = Math.max(skipTo, c.fetchPosition);
    if (values.length > 0 || end > c.fetchPosition) this.buffer(c, values, offsets, end);
    else if (this.finishedAfterBuffer()) this.wake();
  }

  /** Appends a chunk (records, or none and a skip to `end`) to the split's buffer and wakes the runtime. */
  private buffer(c: SplitCursor<T>, values: T[], offsets: number[], end: number): void {
    const entries = values.length > 0 ? values.length : 1;
    c.chunks.push({ values, offsets, end, next: 0 });
    c.fetchPosition = end;
    c.buffered += entries;
    this.totalBuffered += entries;
    this.wake();
  }

  /** Holds the batch (and so the partition's next fetch) until the runtime took about half of the buffer, heartbeating meanwhile. */
  private async backpressure(batch: Batch, heartbeat: () => Promise<void>, live: () => boolean): Promise<void> {
    const c = this.byKey.get(key(batch.topic, batch.partition));
    if (!c) return;
    while (!this.closed && c.buffered > this.options.maxBuffered && live()) {
      const drained = new Promise<void>((resolve) => (c.drained = resolve));
      let timer: NodeJS.Timeout | undefined;
      const beat = new Promise<void>((resolve) => (timer = setTimeout(resolve, this.options.heartbeatInterval)));
      await Promise.race([drained, beat]);
      clearTimeout(timer);
      try {
        await heartbeat();
      } catch {
        return; // the group is rebalancing: let KafkaJS rejoin now (the buffered records stay; the rejoin seeks past them)
      }
    }
  }

  private finishedAfterBuffer(): boolean {
    return this.cursors.every((c) => c.fetchDone);
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.resolve();
  }

  private fail(err: unknown, doing: string): StreamStateError {
    const e = toKafkaError(err, doing, this.options.brokers);
    if (!this.failure && !this.closed) {
      this.failure = e;
      const w = this.waiter;
      this.waiter = null;
      w?.reject(e);
    }
    return e;
  }
}

function key(topic: string, partition: number): string {
  return `${topic}\u0000${partition}`;
}
