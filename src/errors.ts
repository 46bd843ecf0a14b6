/**
 * Every error streamstate throws on purpose is a StreamStateError with a stable `code`.
 * Codes are part of the public API (docs/ERRORS.md): match on `err.code`, not on messages.
 * Messages say what is wrong and what to do about it.
 */
export const ErrorCodes = [
  // state access and registration
  'NO_CURRENT_KEY',
  'KEY_OUT_OF_RANGE',
  'NULL_NOT_ALLOWED',
  'STATE_KIND_MISMATCH',
  'STATE_NOT_REGISTERED',
  'INVALID_ARGUMENT',
  'BACKEND_CLOSED',
  // serializers and schema
  'SERIALIZER_INCOMPATIBLE',
  'KEY_SERIALIZER_MISMATCH',
  'SERIALIZATION_FAILED',
  // snapshots and restore
  'SNAPSHOT_CANCELLED',
  'SNAPSHOT_TOO_LARGE',
  'SNAPSHOT_FAILED',
  'MAX_PARALLELISM_MISMATCH',
  'PARALLELISM_INVALID',
  'RESTORE_FAILED',
  // formats and files
  'NOT_FOUND',
  'METADATA_MISSING',
  'BAD_MAGIC',
  'UNSUPPORTED_VERSION',
  'CHECKSUM_MISMATCH',
  'TRUNCATED',
  'CORRUPT',
  'STORAGE_IO',
  'ALREADY_EXISTS',
  /** a local working directory is in use by another open database */
  'LOCKED',
  /** a line of an input file (streamstate bootstrap's JSON lines) does not match its declarations */
  'INVALID_INPUT',
  // coordination
  'CHECKPOINT_NOT_FOUND',
  'CHECKPOINT_DECLINED',
  /** a subtask acknowledged the same pending checkpoint twice */
  'DUPLICATE_ACKNOWLEDGEMENT',
  'UNKNOWN_OPERATOR',
  /** a newer instance of the job took over the job's checkpoint storage (docs/RUNTIME.md, "Fencing") */
  'FENCED',
  // Kafka (streamstate/kafka, docs/KAFKA.md)
  'KAFKA_UNREACHABLE',
  'KAFKA_TOPIC_MISSING',
  /** a restored split names a partition the topic does not have (any more) */
  'KAFKA_PARTITION_MISSING',
  'KAFKA_OFFSET_OUT_OF_RANGE',
  'KAFKA_CLIENT_FAILED',
  // savepoints anywhere and stop-with-savepoint (docs/RUNTIME.md, "Savepoints")
  /** a savepoint target directory exists and holds files */
  'SAVEPOINT_TARGET_NOT_EMPTY',
  /** a restore pointer is neither a checkpoint nor a savepoint */
  'NOT_A_SNAPSHOT',
  /** the savepoint of a stop-with-savepoint failed; the job keeps running */
  'STOP_WITH_SAVEPOINT_FAILED',
  /** an optional peer dependency (AWS SDK, classic-level) a feature needs is not installed */
  'DEPENDENCY_MISSING',
  // checkpoint scheduling (docs/RUNTIME.md, "Scheduling checkpoints")
  /** a checkpoint scheduler option is out of range, not an integer, or inconsistent */
  'INVALID_CHECKPOINT_OPTION',
  /** more consecutive checkpoints failed than tolerableFailures allows: the job must fail */
  'TOLERABLE_FAILURES_EXCEEDED',
  // channel state of unaligned checkpoints (docs/RUNTIME.md, "Checkpointing modes")
  /** channel state names a channel the subtask does not have */
  'CHANNEL_STATE_UNKNOWN_CHANNEL',
  /** the in-flight records of a channel skip a sequence number */
  'CHANNEL_STATE_SEQUENCE_GAP',
  /** in-flight records a restore cannot hand to any subtask */
  'CHANNEL_STATE_UNPLACEABLE',
] as const;

export type ErrorCode = (typeof ErrorCodes)[number];

export class StreamStateError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Wrong use of the state API by operator code (no current key, null where none is allowed, ...). */
export class StateAccessError extends StreamStateError {}

/** A state name registered again with another kind, or a state used before registration. */
export class StateRegistrationError extends StreamStateError {}

/** A recorded serializer does not match the one now in use and cannot be migrated. */
export class StateMigrationError extends StreamStateError {}

/** A snapshot or checkpoint could not be taken (cancelled, too large, I/O failure). */
export class SnapshotError extends StreamStateError {}

/** A snapshot file or _metadata is missing, truncated, corrupt, or of an unknown format or version. */
export class FormatError extends StreamStateError {}

/** A restore cannot proceed (parallelism mismatch, missing handles, ...). */
export class RestoreError extends StreamStateError {}

/**
 * In-flight records of an unaligned checkpoint (channel state) that cannot be written or restored
 * as given: an unknown channel, a gap in a channel's sequence numbers, records no subtask can take.
 */
export class ChannelStateError extends StreamStateError {}

/** A storage operation failed (the file system or object store answered with an error). */
export class StorageError extends StreamStateError {}

/** This instance was fenced: a newer instance of the job holds the lease on its checkpoint storage. */
export class FencedError extends StreamStateError {}

/** Kafka could not be reached, a topic or partition is missing, an offset is out of range, or the client failed (streamstate/kafka). */
export class KafkaError extends StreamStateError {}

export function isStreamStateError(err: unknown, code?: ErrorCode): err is StreamStateError {
  return err instanceof StreamStateError && (code === undefined || err.code === code);
}
