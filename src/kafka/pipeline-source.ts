import { Kafka, logLevel } from 'kafkajs';
import { StreamStateError } from '../errors.js';
import type { OperatorListState } from '../state/types.js';
import type { RecordOrigin } from '../testing/channels.js';
import {
  ExternalSourceSubtask,
  type PipelineSource,
  type PipelineSourceAttempt,
  type PipelineSourceSubtaskContext,
} from '../testing/external-source.js';
import { kafkaCall } from './client-errors.js';
import { KafkaSplitReader, type KafkaRecord } from './split-reader.js';
import {
  KAFKA_KNOWN_PARTITIONS_STATE,
  KAFKA_SPLITS_STATE,
  planSplits,
  type KafkaSplit,
  type TopicPartitionCount,
} from './splits.js';
import {
  fetchTopics,
  partitionKey,
  resolveStartOffsets,
  type OffsetOutOfRangePolicy,
  type OffsetReset,
  type TopicsSnapshot,
} from './topics.js';

export interface KafkaSourceOptions<T> {
  /** host:port of one or more brokers. */
  readonly brokers: readonly string[];
  readonly topics: readonly string[];
  readonly deserialize: (record: KafkaRecord) => T;
  /** The job's consumer group (offsets are committed there for monitoring). Default `streamstate-<jobId>`. */
  readonly groupId?: string;
  readonly clientId?: string;
  /**
   * true (default): each attempt reads up to the end the partitions had when it started, then the
   * source ends (the job finishes). false: read on forever (the run ends only by a failure).
   */
  readonly bounded?: boolean;
  /** A restored offset outside its partition's range (retention, a recreated topic). Default 'fail' (KAFKA_OFFSET_OUT_OF_RANGE). */
  readonly offsetOutOfRange?: OffsetOutOfRangePolicy;
  /** Hears of every reset under offsetOutOfRange 'earliest'. */
  readonly onOffsetReset?: (reset: OffsetReset) => void;
  /** Records buffered per partition before fetching it waits. Default 10000 (smaller buffers made fetching wait on the runtime: bench/kafka). */
  readonly maxBufferedPerPartition?: number;
  /** Consumer group session timeout, ms. Default 10000. */
  readonly sessionTimeout?: number;
  /** Default 500 ms. */
  readonly heartbeatInterval?: number;
  /** Connection timeout, ms. Default 3000. */
  readonly connectionTimeout?: number;
  /** Retries of a failed request before it fails the source. Default 3. */
  readonly retries?: number;
  /** Your own KafkaJS client (TLS, SASL, logging); `brokers` then only names the cluster in error messages. */
  readonly kafka?: Kafka;
}

/**
 * A runPipeline source that reads Kafka topics (job.source). The partitions are the splits, kept with
 * their offsets in split-list operator state; each attempt fetches the topics' partitions once and
 * every subtask plans its splits from that (planSplits), so a restore at another parallelism moves
 * the partitions with their offsets. Offsets go to the consumer group only when a checkpoint completes,
 * for monitoring.
 */
export function kafkaPipelineSource<T>(options: KafkaSourceOptions<T>): PipelineSource<T> {
  if (!Array.isArray(options.brokers) || options.brokers.length === 0) {
    throw new StreamStateError('INVALID_ARGUMENT', 'kafkaPipelineSource: brokers must list at least one host:port.');
  }
  if (
    !Array.isArray(options.topics) ||
    options.topics.length === 0 ||
    new Set(options.topics).size !== options.topics.length
  ) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      'kafkaPipelineSource: topics must list one or more distinct topic names.',
    );
  }
  const kafka =
    options.kafka ??
    new Kafka({
      clientId: options.clientId ?? 'streamstate',
      brokers: [...options.brokers],
      logLevel: logLevel.NOTHING,
      connectionTimeout: options.connectionTimeout ?? 3000,
      retry: { retries: options.retries ?? 3, initialRetryTime: 100 },
    });
  let attempt: { ctx: PipelineSourceAttempt; topics: TopicsSnapshot; epoch: number } | null = null;
  return {
    async openAttempt(ctx) {
      const admin = kafka.admin();
      await kafkaCall('connecting', options.brokers, () => admin.connect());
      try {
        attempt = { ctx, topics: await fetchTopics(admin, options.topics, options.brokers), epoch: Date.now() };
      } finally {
        await admin.disconnect().catch(() => undefined);
      }
    },
    async createSubtask(ctx) {
      if (!attempt || attempt.ctx.attempt !== ctx.attempt) {
        throw new StreamStateError(
          'INVALID_ARGUMENT',
          'kafkaPipelineSource: createSubtask before openAttempt; the runner opens each attempt first.',
        );
      }
      return new KafkaSourceSubtask<T>(ctx, kafka, options, attempt.topics, attempt.epoch);
    },
  };
}

class KafkaSourceSubtask<T> extends ExternalSourceSubtask<T> {
  private readonly splitsState: OperatorListState<KafkaSplit>;
  private readonly knownState: OperatorListState<TopicPartitionCount>;
  private readonly known: readonly TopicPartitionCount[];
  private readonly reader: KafkaSplitReader<T>;
  /** Positions snapshotted per checkpoint, committed to the group when it completes. */
  private readonly snapshotted = new Map<number, KafkaSplit[]>();

  constructor(
    ctx: PipelineSourceSubtaskContext,
    kafka: Kafka,
    options: KafkaSourceOptions<T>,
    topics: TopicsSnapshot,
    epoch: number,
  ) {
    super(ctx.operatorId, ctx.subtaskIndex, ctx.operatorBackend);
    this.splitsState = ctx.operatorBackend.getListState<KafkaSplit>(KAFKA_SPLITS_STATE);
    this.knownState = ctx.operatorBackend.getUnionListState<TopicPartitionCount>(KAFKA_KNOWN_PARTITIONS_STATE);
    const planned = planSplits({
      restored: ctx.restoring ? this.splitsState.get() : null,
      known: ctx.restoring ? this.knownState.get() : [],
      current: topics.counts,
      subtaskIndex: ctx.subtaskIndex,
      parallelism: ctx.parallelism,
    });
    const splits = resolveStartOffsets(
      planned,
      topics,
      options.offsetOutOfRange ?? 'fail',
      options.onOffsetReset ?? (() => undefined),
    );
    this.known = topics.counts;
    const bounded = options.bounded ?? true;
    const claim: Record<string, number[]> = {};
    for (const s of splits) (claim[s.topic] ??= []).push(s.partition);
    this.reader = new KafkaSplitReader<T>({
      kafka,
      brokers: options.brokers,
      groupId: options.groupId ?? `streamstate-${ctx.jobId}`,
      splits,
      stopAt: splits.map((s) => (bounded ? topics.watermarks.get(partitionKey(s.topic, s.partition))!.high : null)),
      claim: { epoch, subtaskIndex: ctx.subtaskIndex, partitions: claim },
      deserialize: options.deserialize,
      maxBuffered: options.maxBufferedPerPartition ?? 10_000,
      sessionTimeout: options.sessionTimeout ?? 10_000,
      heartbeatInterval: options.heartbeatInterval ?? 500,
    });
    this.reader.start();
  }

  /** The splits this subtask reads, with the offset of the next record of each. */
  get splits(): readonly KafkaSplit[] {
    return this.reader.positions();
  }

  get exhausted(): boolean {
    return this.reader.buffered === 0;
  }

  /** The reader's record as it is: its origin (partition and offset; topics are not told apart) is what pipeline events carry. */
  next(): { value: T; origin: RecordOrigin } | null {
    return this.reader.poll();
  }

  waitForInput(): Promise<void> | null {
    return this.reader.waitForInput();
  }

  protected prepareSnapshot(checkpointId: number): void {
    const positions = this.reader.positions();
    this.splitsState.update(positions);
    this.knownState.update([...this.known]);
    this.snapshotted.set(checkpointId, positions);
  }

  override async notifyCheckpointComplete(checkpointId: number): Promise<void> {
    await super.notifyCheckpointComplete(checkpointId);
    const positions = this.snapshotted.get(checkpointId);
    for (const id of [...this.snapshotted.keys()]) if (id <= checkpointId) this.snapshotted.delete(id);
    if (positions) await this.reader.commitForMonitoring(positions);
  }

  override async notifyCheckpointAborted(checkpointId: number): Promise<void> {
    this.snapshotted.delete(checkpointId);
    await super.notifyCheckpointAborted(checkpointId);
  }

  override async close(): Promise<void> {
    await this.reader.close();
    await super.close();
  }
}
