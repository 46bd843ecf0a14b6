import { randomBytes } from 'node:crypto';
import { Kafka, logLevel, type Message } from 'kafkajs';
import { StreamStateError } from '../errors.js';
import type { OperatorListState } from '../state/types.js';
import { ExternalSinkSubtask, type PipelineSink, type PipelineSinkSubtaskContext } from '../testing/external-sink.js';
import { kafkaCall } from './client-errors.js';
import {
  AtLeastOnceCommitter,
  type KafkaSinkTransaction,
  type SinkCommitter,
  TransactionalCommitter,
  transactionMessages,
} from './sink-committers.js';
import { fetchTopics } from './topics.js';

/** Union-list operator state of the sink: every subtask's pre-committed transactions (a restore regroups them by owner). */
export const KAFKA_SINK_PENDING_STATE = 'kafka-sink-pending-transactions';

/**
 * 'exactly-once': each checkpoint's output in one Kafka transaction with a commit marker (brokers
 * with transactions). 'at-least-once': plain produce requests; a crash while a checkpoint's output
 * is produced duplicates it (records carry transaction id and sequence headers to de-duplicate).
 */
export type KafkaSinkGuarantee = 'exactly-once' | 'at-least-once';

/** A record as the sink writes it: KafkaJS's message (key, value, partition, headers, timestamp). */
export type KafkaSinkMessage = Message;

export interface KafkaSinkOptions<T> {
  /** host:port of one or more brokers. */
  readonly brokers: readonly string[];
  /** The output topic; it must exist (the sink never creates topics). */
  readonly topic: string;
  readonly serialize: (record: T) => KafkaSinkMessage;
  /** No default: say which one the broker allows (docs/KAFKA.md, "The sink"). */
  readonly guarantee: KafkaSinkGuarantee;
  /**
   * Prefix of the transactional ids (`<prefix>-<subtask>`) and commit-marker groups
   * (`<prefix>-committed-<subtask>`). Default `streamstate-<jobId>-sink`. Two jobs must not share it.
   */
  readonly transactionalIdPrefix?: string;
  readonly clientId?: string;
  /** Connection timeout, ms. Default 3000. */
  readonly connectionTimeout?: number;
  /** Retries of a failed request before the commit fails (and with it the attempt). Default 3. */
  readonly retries?: number;
  /** Your own KafkaJS client (TLS, SASL, logging); `brokers` then only names the cluster in error messages. */
  readonly kafka?: Kafka;
}

function checkOptions<T>(options: KafkaSinkOptions<T>): void {
  const bad = (what: string): never => {
    throw new StreamStateError('INVALID_ARGUMENT', `kafkaSink: ${what}`);
  };
  if (!Array.isArray(options.brokers) || options.brokers.length === 0) bad('brokers must list at least one host:port.');
  if (typeof options.topic !== 'string' || options.topic.length === 0) bad('topic must name the output topic.');
  if (typeof options.serialize !== 'function') bad('serialize must turn a record into a KafkaJS message.');
  if (options.guarantee !== 'exactly-once' && options.guarantee !== 'at-least-once') {
    bad(
      `guarantee must be 'exactly-once' (Kafka transactions) or 'at-least-once' (brokers without them), not ${JSON.stringify(options.guarantee)}.`,
    );
  }
  if (options.transactionalIdPrefix !== undefined && !/^[A-Za-z0-9._-]+$/.test(options.transactionalIdPrefix)) {
    bad(
      'transactionalIdPrefix may use letters, digits, ".", "_" and "-" only (it names transactional ids and groups).',
    );
  }
}

/**
 * A runPipeline sink (job.sink) that writes to a Kafka topic through the runtime's two-phase commit:
 * each epoch's output is pre-committed into operator state at the barrier and produced when its
 * checkpoint completes; a restore produces the restored transactions again unless Kafka already
 * has them (exactly-once mode reads the commit marker). See docs/KAFKA.md, "The sink".
 */
export function kafkaSink<T>(options: KafkaSinkOptions<T>): PipelineSink<T> {
  checkOptions(options);
  const kafka =
    options.kafka ??
    new Kafka({
      clientId: options.clientId ?? 'streamstate-sink',
      brokers: [...options.brokers],
      logLevel: logLevel.NOTHING,
      connectionTimeout: options.connectionTimeout ?? 3000,
      retry: { retries: options.retries ?? 3, initialRetryTime: 100 },
    });
  // Names this run's transactions: attempt numbers start at 0 again when a job is resumed by a new process.
  const run = randomBytes(4).toString('hex');
  let topicChecked = false;
  return {
    async createSubtask(ctx) {
      if (!topicChecked) {
        const admin = kafka.admin();
        await kafkaCall('connecting', options.brokers, () => admin.connect());
        try {
          await fetchTopics(admin, [options.topic], options.brokers); // KAFKA_TOPIC_MISSING before anything is staged
        } finally {
          await admin.disconnect().catch(() => undefined);
        }
        topicChecked = true;
      }
      const cfg = {
        kafka,
        brokers: options.brokers,
        topic: options.topic,
        idPrefix: options.transactionalIdPrefix ?? `streamstate-${ctx.jobId}-sink`,
        subtaskIndex: ctx.subtaskIndex,
      };
      const committer: SinkCommitter<T> =
        options.guarantee === 'exactly-once' ? new TransactionalCommitter(cfg) : new AtLeastOnceCommitter(cfg);
      try {
        await committer.connect();
      } catch (err) {
        await committer.close();
        throw err;
      }
      return new KafkaSinkSubtask<T>(ctx, committer, options.serialize, run);
    },
  };
}

/**
 * One sink subtask. Commits are serialized (one queue per subtask), so an owner's transactions reach
 * Kafka in checkpoint order — which is what lets one marker offset per owner say "everything up to
 * checkpoint n is in". A restore regroups the pre-committed transactions by owner (owner mod
 * parallelism), for the same reason.
 */
export class KafkaSinkSubtask<T> extends ExternalSinkSubtask<T> {
  private staged: T[] = [];
  /** The staged records serialized as they arrived (a record serialize rejects fails the attempt before any checkpoint holds it). */
  private stagedMessages: KafkaSinkMessage[] = [];
  /** transaction id -> its records serialized by this attempt (restored transactions are serialized again at commit). */
  private readonly serialized = new Map<string, KafkaSinkMessage[]>();
  /** Pre-committed, not yet known to be in Kafka; oldest first. */
  private pending: KafkaSinkTransaction<T>[] = [];
  private readonly restored: KafkaSinkTransaction<T>[];
  private readonly state: OperatorListState<KafkaSinkTransaction<T>>;
  private committing: Promise<void> = Promise.resolve();
  private readonly attempt: number;
  private readonly parallelism: number;

  constructor(
    ctx: PipelineSinkSubtaskContext<T>,
    private readonly committer: SinkCommitter<T>,
    private readonly serialize: (record: T) => KafkaSinkMessage,
    private readonly run: string,
  ) {
    super(ctx.operatorId, ctx.subtaskIndex, ctx.operatorBackend, ctx.gate);
    this.attempt = ctx.attempt;
    this.parallelism = ctx.parallelism;
    this.state = ctx.operatorBackend.getUnionListState<KafkaSinkTransaction<T>>(KAFKA_SINK_PENDING_STATE);
    this.restored = ctx.restoring
      ? this.state
          .get()
          .filter((tx) => tx.owner % ctx.parallelism === ctx.subtaskIndex)
          .sort((a, b) => a.owner - b.owner || a.checkpointId - b.checkpointId)
      : [];
  }

  write(record: T): void {
    this.stagedMessages.push(this.toMessage(record, () => 'a record written to the sink'));
    this.staged.push(record);
  }

  private toMessage(record: T, which: () => string): KafkaSinkMessage {
    try {
      return this.serialize(record);
    } catch (err) {
      throw new StreamStateError(
        'SERIALIZATION_FAILED',
        `kafkaSink: serialize threw for ${which()}: ${String(err)}; fix the serializer (or the record).`,
        { cause: err },
      );
    }
  }

  /** Produces `tx` with the sink's headers; afterwards it is no longer kept serialized. */
  private async commitOne(tx: KafkaSinkTransaction<T>): Promise<void> {
    const serialized =
      this.serialized.get(tx.transactionId) ??
      tx.records.map((r, i) => this.toMessage(r, () => `record ${i} of restored transaction ${tx.transactionId}`));
    await this.committer.commit(tx, transactionMessages(tx, serialized));
    this.serialized.delete(tx.transactionId);
  }

  /**
   * Transactions restored from the checkpoint: produced now, unless the owner's marker says Kafka has
   * them. An owner index this job no longer has is fenced first (a subtask that still has it fences
   * its predecessor when its own producer connects), so no leftover process can commit after the marker is read.
   */
  async commitRestored(): Promise<void> {
    const known = new Map<number, number | null>();
    for (const tx of this.restored) {
      if (!known.has(tx.owner)) {
        if (tx.owner >= this.parallelism) await this.committer.fence(tx.owner);
        known.set(tx.owner, await this.committer.committedUpTo(tx.owner));
      }
      const upTo = known.get(tx.owner) ?? null;
      if (upTo !== null && tx.checkpointId <= upTo) continue;
      await this.commitOne(tx);
    }
    this.restored.length = 0;
  }

  commitUpTo(checkpointId: number): Promise<void> {
    const next = this.committing.then(async () => {
      while (this.pending.length > 0 && this.pending[0].checkpointId <= checkpointId) {
        await this.commitOne(this.pending[0]);
        this.pending.shift();
      }
    });
    this.committing = next.catch(() => undefined); // the failure fails the attempt (the runner awaits `next`)
    return next;
  }

  protected prepareSnapshot(checkpointId: number): void {
    if (this.staged.length > 0) {
      const transactionId = `${this.run}-a${this.attempt}-c${checkpointId}-s${this.subtaskIndex}`;
      this.pending.push({ transactionId, owner: this.subtaskIndex, checkpointId, records: this.staged });
      this.serialized.set(transactionId, this.stagedMessages);
      this.staged = [];
      this.stagedMessages = [];
    }
    // A transaction being produced stays in the snapshot until it is in: a restore then produces it again (or skips it by marker).
    this.state.update(this.pending);
  }

  override async close(): Promise<void> {
    await this.committing;
    await this.committer.close();
    await super.close();
  }
}
