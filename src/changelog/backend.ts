import type {
  KeyedBackendParams,
  KeyedStateBackend,
  OperatorBackendParams,
  OperatorStateBackend,
  StateBackend,
} from '../backend/contract.js';
import { presetStorage } from '../backend/preset.js';
import type { CheckpointStorage } from '../checkpoint/storage.js';
import { StreamStateError } from '../errors.js';
import { DEFAULT_LOG_MEMORY_BYTES } from './change-log.js';
import type { ChangelogKeyedStateBackend, ChangelogSettings } from './keyed-backend.js';
import { openChangelogKeyedBackend, restorePlainFromChangelog } from './restore.js';

export { restorePlainFromChangelog };

export interface ChangelogOptions {
  /** The backend that holds the state (memory(), filesystem(...), leveldb(...)). */
  readonly backend: StateBackend;
  /**
   * Where log segments go when uploaded outside a checkpoint (preemptive persist). Default: the
   * wrapped backend's checkpointStorage. Must be the storage the job checkpoints to.
   */
  readonly storage?: CheckpointStorage;
  /**
   * Minimum time between materializations (snapshots of the wrapped backend, started during a
   * checkpoint's synchronous phase and finished in the background). Default 10 minutes; 0 = at
   * every checkpoint that has changes; Infinity or a negative value = never on a timer.
   */
  readonly materializationIntervalMs?: number;
  /** Unpersisted log bytes that trigger an early upload. Default 2 MiB. */
  readonly preemptivePersistBytes?: number;
  /**
   * Log bytes kept in memory before those an early upload also holds are let go (oldest first).
   * Bytes in memory let a checkpoint that is declined be followed by one that uploads them again;
   * without them it materializes afresh. Default 64 MiB.
   */
  readonly maxLogMemoryBytes?: number;
  /** Clock for the materialization interval (tests). Default performance.now-like Date.now. */
  readonly now?: () => number;
}

export const DEFAULT_MATERIALIZATION_INTERVAL_MS = 10 * 60 * 1000;
export const DEFAULT_PREEMPTIVE_PERSIST_BYTES = 2 * 1024 * 1024;

export interface ChangelogStateBackend extends StateBackend {
  readonly inner: StateBackend;
  createKeyedStateBackend<K>(params: KeyedBackendParams<K>): Promise<ChangelogKeyedStateBackend<K>>;
}

/**
 * Wraps any backend so that checkpoints cost what changed, not what is stored: every state write
 * also goes to a state-change log persisted in segments; a checkpoint is the last materialization
 * of the wrapped backend plus the log since it. Operator state is the wrapped backend's, unchanged.
 */
export function changelog(opts: ChangelogOptions): ChangelogStateBackend {
  const inner = opts.backend;
  if (inner === undefined || inner === null || typeof inner.createKeyedStateBackend !== 'function') {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      'changelog({ backend }) needs the backend to wrap, e.g. changelog({ backend: memory() }).',
    );
  }
  const interval = opts.materializationIntervalMs ?? DEFAULT_MATERIALIZATION_INTERVAL_MS;
  const threshold = opts.preemptivePersistBytes ?? DEFAULT_PREEMPTIVE_PERSIST_BYTES;
  if (typeof interval !== 'number' || Number.isNaN(interval)) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `materializationIntervalMs must be a number of milliseconds; got ${String(interval)}.`,
    );
  }
  const maxLogMemoryBytes = opts.maxLogMemoryBytes ?? DEFAULT_LOG_MEMORY_BYTES;
  if (!(maxLogMemoryBytes >= 0)) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `maxLogMemoryBytes must be a number of bytes (0 or more); got ${String(maxLogMemoryBytes)}.`,
    );
  }
  if (!(threshold > 0)) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `preemptivePersistBytes must be a positive number of bytes; got ${String(threshold)}.`,
    );
  }
  const storage = opts.storage ?? presetStorage(inner);
  const name = `changelog(${inner.name})`;
  return {
    name,
    inner,
    ...(storage !== undefined ? { checkpointStorage: storage } : {}),
    createKeyedStateBackend<K>(params: KeyedBackendParams<K>): Promise<ChangelogKeyedStateBackend<K>> {
      const settings: ChangelogSettings = {
        materializationIntervalMs: interval,
        preemptivePersistBytes: threshold,
        maxLogMemoryBytes,
        // Only the shared scope is used: the checkpoint id in the path does not matter.
        backgroundStreams: storage === undefined ? null : storage.checkpointStreams(params.jobId, 0),
        now: opts.now ?? Date.now,
      };
      return openChangelogKeyedBackend({
        createInner: (p) => inner.createKeyedStateBackend(p),
        innerName: inner.name,
        params,
        settings,
        mode: 'log',
      });
    },
    createOperatorStateBackend(params: OperatorBackendParams): Promise<OperatorStateBackend> {
      return inner.createOperatorStateBackend(params);
    },
    supportsSavepointFormat(format: 'canonical' | 'native'): boolean {
      return inner.supportsSavepointFormat(format);
    },
  };
}

/**
 * Wraps a plain backend factory so it accepts changelog checkpoints (turning the changelog off
 * without changes to the plain backend): `withChangelogRestore(memory())`.
 */
export function withChangelogRestore(plain: StateBackend): StateBackend {
  const storage = presetStorage(plain);
  return {
    name: plain.name,
    ...(storage !== undefined ? { checkpointStorage: storage } : {}),
    createKeyedStateBackend<K>(params: KeyedBackendParams<K>): Promise<KeyedStateBackend<K>> {
      if (params.restore !== undefined && params.restore.handles.some((h) => h.type === 'changelog')) {
        return restorePlainFromChangelog((p) => plain.createKeyedStateBackend(p), plain.name, params);
      }
      return plain.createKeyedStateBackend(params);
    },
    createOperatorStateBackend: (params) => plain.createOperatorStateBackend(params),
    supportsSavepointFormat: (format) => plain.supportsSavepointFormat(format),
  };
}
