/**
 * streamstate/kafka: Kafka (KafkaJS, an optional peer dependency) as a checkpointed source and a
 * two-phase-commit sink. Partitions are the source splits, kept with their offsets in operator state
 * and restored by seek; the sink produces each checkpoint's output when the checkpoint completes;
 * see docs/KAFKA.md.
 *
 *   const result = await runPipeline(
 *     { ...job, source: kafkaPipelineSource({ brokers, topics: ['words'], deserialize }),
 *       sink: kafkaSink({ brokers, topic: 'counts', serialize, guarantee: 'exactly-once' }) },
 *     options,
 *   );
 */
export { kafkaPipelineSource, type KafkaSourceOptions } from './pipeline-source.js';
export { KafkaSplitReader, type KafkaRecord, type SplitReaderOptions } from './split-reader.js';
export {
  planSplits,
  subtaskForNewPartition,
  KAFKA_SPLITS_STATE,
  KAFKA_KNOWN_PARTITIONS_STATE,
  type KafkaSplit,
  type PlannedSplit,
  type TopicPartitionCount,
} from './splits.js';
export { splitAssigner, assignClaims, SPLIT_ASSIGNER_NAME, type SplitClaim } from './assigner.js';
export {
  fetchTopics,
  resolveStartOffsets,
  type OffsetOutOfRangePolicy,
  type OffsetReset,
  type Watermarks,
  type TopicsSnapshot,
} from './topics.js';
export { toKafkaError } from './client-errors.js';
export {
  kafkaSink,
  KafkaSinkSubtask,
  KAFKA_SINK_PENDING_STATE,
  type KafkaSinkOptions,
  type KafkaSinkGuarantee,
  type KafkaSinkMessage,
} from './sink.js';
export {
  markerGroup,
  transactionMessages,
  SINK_HEADER_TRANSACTION,
  SINK_HEADER_SEQUENCE,
  SINK_HEADER_CHECKPOINT,
  type KafkaSinkTransaction,
} from './sink-committers.js';
