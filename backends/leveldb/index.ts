import { AbstractStateBackend } from '../../src/backend/abstract-state-backend.js';
import type { KeyedBackendParams, KeyedStateBackend } from '../../src/backend/contract.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { withCheckpointStorage, type StateBackendPreset } from '../../src/backend/preset.js';
import { LevelDbKeyedStateBackend, type LevelDbBackendOptions } from './backend.js';
import { checkLevelDbOptions } from './options.js';

export {
  LevelDbKeyedStateBackend,
  DEFAULT_CACHE_SIZE,
  DEFAULT_WRITE_BUFFER_BYTES,
  type LevelDbBackendOptions,
} from './backend.js';
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
export function leveldb(opts: LevelDbOptions = {}): StateBackendPreset<LevelDbStateBackend> {
  const backend = new LevelDbStateBackend(opts);
  return opts.checkpointDir === undefined
    ? backend
    : withCheckpointStorage(backend, localCheckpointStorage(opts.checkpointDir));
}

/** The `leveldb` backend factory (shared behaviour, such as restoring changelog checkpoints, comes from AbstractStateBackend). */
export class LevelDbStateBackend extends AbstractStateBackend {
  readonly name = 'leveldb';

  constructor(private readonly opts: LevelDbBackendOptions = {}) {
    super();
    checkLevelDbOptions(opts);
  }

  protected _createKeyedStateBackend<K>(params: KeyedBackendParams<K>): Promise<KeyedStateBackend<K>> {
    return LevelDbKeyedStateBackend.create(params, this.opts);
  }

  supportsSavepointFormat(format: 'canonical' | 'native'): boolean {
    return format === 'canonical' || format === 'native';
  }
}
