import { withCheckpointStorage, type StateBackendPreset } from '../../src/backend/preset.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { StreamStateError } from '../../src/errors.js';
import { type HeapSnapshotOptions, HeapStateBackend, snapshotOptions } from '../heap/heap-state-backend.js';

export interface FilesystemBackendOptions extends HeapSnapshotOptions {
  /** Directory for checkpoints and savepoints (created on first write). */
  readonly checkpointDir: string;
  /** Snapshot streams up to this many bytes are kept inline in _metadata. Default 20 KiB; 0 = always files. */
  readonly inlineThreshold?: number;
}

/** Keyed state on the JS heap, checkpoints as files in a local directory. */
export function filesystem(opts: FilesystemBackendOptions): StateBackendPreset<HeapStateBackend> {
  if (opts === undefined || typeof opts.checkpointDir !== 'string' || opts.checkpointDir.length === 0) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      'filesystem({ checkpointDir }) needs the directory to write checkpoints to.',
    );
  }
  const checkpointStorage = localCheckpointStorage(
    opts.checkpointDir,
    opts.inlineThreshold === undefined ? {} : { inlineThreshold: opts.inlineThreshold },
  );
  return withCheckpointStorage(
    new HeapStateBackend({ ...snapshotOptions(opts), name: 'filesystem' }),
    checkpointStorage,
  );
}
