import { isStreamStateError, type ErrorCode } from '../errors.js';

/** Exit codes of the `streamstate` CLI (docs/CLI.md). Stable: scripts depend on them. */
export const ExitCode = {
  OK: 0,
  /** An unexpected failure (I/O error, bug). */
  FAILURE: 1,
  /** Bad arguments: unknown option, missing argument, impossible request (e.g. parallelism above maxParallelism), destination exists. */
  USAGE: 2,
  /** The path, a snapshot's _metadata or a file it references does not exist. */
  NOT_FOUND: 3,
  /** A file is corrupt: bad magic, truncated, checksum mismatch, inconsistent structure. */
  CORRUPT: 4,
  /** Files are intact but a record does not decode with its recorded serializer. */
  DECODE: 5,
  /** Written by a newer streamstate (unknown format version or flags). */
  UNSUPPORTED_VERSION: 6,
  /** In use: gc found a job whose lease a live instance holds, and deleted nothing of it. */
  IN_USE: 7,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

const BY_CODE: Partial<Record<ErrorCode, ExitCodeValue>> = {
  NOT_FOUND: ExitCode.NOT_FOUND,
  METADATA_MISSING: ExitCode.NOT_FOUND,
  CHECKPOINT_NOT_FOUND: ExitCode.NOT_FOUND,
  BAD_MAGIC: ExitCode.CORRUPT,
  CHECKSUM_MISMATCH: ExitCode.CORRUPT,
  TRUNCATED: ExitCode.CORRUPT,
  CORRUPT: ExitCode.CORRUPT,
  SERIALIZATION_FAILED: ExitCode.DECODE,
  UNSUPPORTED_VERSION: ExitCode.UNSUPPORTED_VERSION,
  INVALID_ARGUMENT: ExitCode.USAGE,
  PARALLELISM_INVALID: ExitCode.USAGE,
  MAX_PARALLELISM_MISMATCH: ExitCode.USAGE,
  UNKNOWN_OPERATOR: ExitCode.USAGE,
  STATE_NOT_REGISTERED: ExitCode.USAGE,
  ALREADY_EXISTS: ExitCode.USAGE,
  INVALID_INPUT: ExitCode.USAGE,
  LOCKED: ExitCode.IN_USE,
};

export function exitCodeFor(err: unknown): ExitCodeValue {
  return isStreamStateError(err) ? (BY_CODE[err.code] ?? ExitCode.FAILURE) : ExitCode.FAILURE;
}
