import { hasChangelogHandles, restorePlainFromChangelog } from '../../src/changelog/index.js';
import type { KeyedBackendParams, KeyedStateBackend, OperatorBackendParams, OperatorStateBackend, StateBackend } from '../../src/backend/contract.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import { createHeapOperatorStateBackend } from '../../src/operator/heap-operator-backend.js';
import { LevelDbKeyedStateBackend, type LevelDbBackendOptions } from './backend.js';

export { LevelDbKeyedStateBackend, DEFAULT_CACHE_SIZE, DEFAULT_WRITE_BUFFER_BYTES, type LevelDbBackendOptions } from './backend.js';
export { INCREMENTAL_HANDLE_TYPE, isIncrementalHandle, type LevelDbIncrementalHandle } from './incremental-snapshot.js';
export { LEVELDB_FULL_LAYOUT } from './full-snapshot.js';

export interface LevelDbOptions extends LevelDbBackendOptions {
  /** When given, the backend brings local checkpoint storage in this directory. */
  readonly checkpointDir?: string;
}

/**
 * The `leveldb` state backend: keyed state in one LevelDB (classic-level) database per keyed
 * backend under `workingDir`, native incremental checkpoints that upload only new table files
 * (`incremental: false` writes full key-groups streams). Operator state stays on the heap.
 */
export function leveldb(opts: LevelDbOptions = {}): StateBackend {
  const checkpointStorage: CheckpointStorage | undefined = opts.checkpointDir === undefined ? undefined : localCheckpointStorage(opts.checkpointDir);
  return {
    name: 'leveldb',
    ...(checkpointStorage ? { checkpointStorage } : {}),
    createKeyedStateBackend<K>(params: KeyedBackendParams<K>): Promise<KeyedStateBackend<K>> {
      // A checkpoint taken with the changelog on: restore its materialization and replay its log (changelog off).
      if (hasChangelogHandles(params.restore)) {
        return restorePlainFromChangelog((p) => LevelDbKeyedStateBackend.create(p, opts), 'leveldb', params);
      }
      return LevelDbKeyedStateBackend.create(params, opts);
    },
    createOperatorStateBackend(params: OperatorBackendParams): Promise<OperatorStateBackend> {
      return createHeapOperatorStateBackend(params);
    },
    supportsSavepointFormat: (format) => format === 'canonical' || format === 'native',
  };
}
