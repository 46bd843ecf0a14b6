/**
 * streamstate/kafka: Kafka (KafkaJS, an optional peer dependency) as a checkpointed source.
 * Partitions are the source splits, kept with their offsets in operator state and restored by seek;
 * see docs/KAFKA.md.
 *
 *   const result = await runPipeline({ ...job, source: kafkaPipelineSource({ brokers, topics: ['words'], deserialize }) }, options);
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
