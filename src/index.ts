export * from './errors.js';
export * from './serializers/serializer.js';
export * from './serializers/builtins.js';
export * from './keygroups/murmur3.js';
export * from './keygroups/key-groups.js';
export * from './state/descriptors.js';
export * from './state/types.js';
export * from './backend/handles.js';
export * from './backend/contract.js';
export { AbstractStateBackend } from './backend/abstract-state-backend.js';
export { DiscardableStreams, SnapshotFlights, type StopSnapshot } from './backend/snapshot-flights.js';
export { presetStorage, withCheckpointStorage, type StateBackendPreset } from './backend/preset.js';
export * from './storage/blob-store.js';
export * from './checkpoint/metadata.js';
export * from './checkpoint/storage.js';
export { ForwardingBlobStore } from './storage/forwarding-blob-store.js';
export { LocalBlobStore, type LocalBlobStoreOptions, type DurabilityEvent } from './storage/local-blob-store.js';
export { MemoryBlobStore, type MemoryBlobStoreOptions } from './storage/memory-blob-store.js';
export {
  BlobCheckpointStorage,
  localCheckpointStorage,
  memoryCheckpointStorage,
  METADATA_FILE,
  SHARED_DIR,
  TASK_OWNED_DIR,
  CHECKPOINT_DIR_PREFIX,
  DEFAULT_MAX_SNAPSHOT_BYTES,
} from './checkpoint/checkpoint-storage.js';
export {
  BlobCheckpointStreamFactory,
  BlobStateFileReader,
  readStreamHandle,
  DEFAULT_INLINE_THRESHOLD,
} from './checkpoint/streams.js';
export { encodeMetadata, decodeMetadata, METADATA_MAGIC, METADATA_VERSION } from './checkpoint/metadata-codec.js';
export * from './checkpoint/coordinator.js';
export {
  CheckpointDeclinedError,
  type AcknowledgeResult,
  type CheckpointFailureReason,
} from './checkpoint/acknowledgement.js';
// [scheduler] periodic checkpoints, guards, failure policy and statistics (docs/RUNTIME.md, "Scheduling checkpoints")
export {
  CHECKPOINT_FAILURE_REASONS,
  countsAgainstTolerableFailures,
  type SubtaskCheckpointMetrics,
} from './checkpoint/acknowledgement.js';
export {
  CheckpointScheduler,
  type CheckpointTriggerHandler,
  type TriggerDecline,
  type CheckpointRequestOutcome,
} from './checkpoint/scheduler.js';
export {
  InvalidCheckpointOptionError,
  SCHEDULER_DEFAULTS,
  resolveSchedulerOptions,
  type CheckpointSchedulerOptions,
  type ResolvedSchedulerOptions,
} from './checkpoint/scheduler-options.js';
export { ManualClock, systemClock, type SchedulerClock, type TimerHandle } from './checkpoint/scheduler-clock.js';
export { CheckpointFailurePolicy, TolerableFailuresExceededError } from './checkpoint/failure-policy.js';
export {
  CHECKPOINT_CHANNELS,
  CheckpointStatsTracker,
  DEFAULT_STATS_HISTORY_SIZE,
  type CheckpointEvent,
  type CheckpointEventType,
  type CheckpointListener,
  type CheckpointStats,
  type CheckpointStatsCounts,
  type CheckpointStatsSnapshot,
  type CheckpointStatus,
  type RestoredCheckpointStats,
} from './checkpoint/checkpoint-stats.js';
export type { CheckpointMetadataStats, SubtaskStatsRecord } from './checkpoint/metadata.js';
export { assignKeyedState, assignOperatorState } from './checkpoint/assignment.js';
export { SharedStateRegistry, type SharedFileEntry, type RestoreMode } from './checkpoint/shared-registry.js';
export { readLease, LEASE_DIR, type LeaseInfo } from './checkpoint/lease.js';
export { DEFAULT_FENCING_MIN_AGE_MS } from './checkpoint/fencing-gc.js';
export {
  stopWithSavepoint,
  type StopMode,
  type StopWithSavepointOptions,
  type StopWithSavepointRuntime,
} from './checkpoint/stop-with-savepoint.js';
export type { SavepointTriggerOptions } from './checkpoint/external-snapshots.js';
export type { SavepointLocationOptions, S3Connection } from './checkpoint/savepoint-location.js';
export * from './operator/index.js';
// S3 storage is `streamstate/s3` (src/s3.ts): the core never loads the AWS SDK (an optional peer dependency).
export type { EntropyOptions } from './storage/s3/key-layout.js';
export * from './changelog/index.js';
export * from './savepoint/index.js';
