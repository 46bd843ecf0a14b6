import { withCheckpointStorage, type StateBackendPreset } from '../../src/backend/preset.js';
import { DEFAULT_MAX_SNAPSHOT_BYTES, memoryCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { StreamStateError } from '../../src/errors.js';
import { type HeapSnapshotOptions, HeapStateBackend, snapshotOptions } from '../heap/heap-state-backend.js';

export interface MemoryBackendOptions extends HeapSnapshotOptions {
  /** Largest snapshot stream (per subtask and checkpoint) the in-process storage accepts. Default 5 MiB. */
  readonly maxSnapshotBytes?: number;
  /** Reuse the process-wide in-memory storage of this name (a job restarted in the same process finds its checkpoints). */
  readonly name?: string;
}

/**
 * Keyed state on the JS heap, checkpoints in process memory. For tests and small state; larger
 * snapshots fail with SNAPSHOT_TOO_LARGE (use `filesystem` then).
 */
export function memory(opts: MemoryBackendOptions = {}): StateBackendPreset<HeapStateBackend> {
  const maxSnapshotBytes = opts.maxSnapshotBytes ?? DEFAULT_MAX_SNAPSHOT_BYTES;
  if (!Number.isInteger(maxSnapshotBytes) || maxSnapshotBytes <= 0) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `memory({ maxSnapshotBytes }) must be a positive integer, got ${maxSnapshotBytes}.`,
    );
  }
  const checkpointStorage = memoryCheckpointStorage({
    maxSnapshotBytes,
    ...(opts.name === undefined ? {} : { name: opts.name }),
  });
  return withCheckpointStorage(new HeapStateBackend({ ...snapshotOptions(opts), name: 'memory' }), checkpointStorage);
}
