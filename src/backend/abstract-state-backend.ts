import { hasChangelogHandles, restorePlainFromChangelog } from '../changelog/restore.js';
import { createHeapOperatorStateBackend } from '../operator/heap-operator-backend.js';
import type {
  KeyedBackendParams,
  KeyedStateBackend,
  OperatorBackendParams,
  OperatorStateBackend,
  StateBackend,
} from './contract.js';

/**
 * The base of a state backend (the abstract-level pattern): the public methods hold what every
 * backend shares, an implementation overrides the underscore hooks. Shared today:
 *  - a checkpoint taken with the changelog on restores with it off (Flink's deactivated
 *    changelog): the materialized part goes through `_createKeyedStateBackend`, which only ever
 *    sees the backend's own handles, and the log is replayed on top;
 *  - operator state on the heap, unless a backend overrides `createOperatorStateBackend`.
 * A backend that does not extend this class can get the first with `withChangelogRestore`.
 */
export abstract class AbstractStateBackend implements StateBackend {
  abstract readonly name: string;

  createKeyedStateBackend<K>(params: KeyedBackendParams<K>): Promise<KeyedStateBackend<K>> {
    if (hasChangelogHandles(params.restore))
      return restorePlainFromChangelog((p) => this._createKeyedStateBackend(p), this.name, params);
    return this._createKeyedStateBackend(params);
  }

  createOperatorStateBackend(params: OperatorBackendParams): Promise<OperatorStateBackend> {
    return createHeapOperatorStateBackend(params);
  }

  abstract supportsSavepointFormat(format: 'canonical' | 'native'): boolean;

  /** Creates (and restores, from the backend's own handles only) one keyed backend. */
  protected abstract _createKeyedStateBackend<K>(params: KeyedBackendParams<K>): Promise<KeyedStateBackend<K>>;
}
