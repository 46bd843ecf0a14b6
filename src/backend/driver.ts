import type { KeyedStateHandle } from './handles.js';
import type { StateBackend, StateFileReader } from './contract.js';
import type { SerializerSnapshot } from '../serializers/serializer.js';

/**
 * How offline tools (the CLI's convert, dump, verify; the savepoint processor) reach a state
 * backend by the name a `_metadata` records: one driver per backend, found in a registry
 * (src/cli/backends.ts), so the tools need no switch over backends and no backend internals.
 */
export interface BackendDriver {
  /** The backend names it creates, as recorded in `_metadata` (`memory`, `leveldb`, ...). */
  readonly names: readonly string[];
  /** The names `streamstate convert --to` offers (a subset of `names`). */
  readonly convertTargets: readonly string[];
  /**
   * A backend without checkpoint storage (the tools restore and snapshot with explicit streams);
   * `workDir` is where it may keep local files. Must not load a native addon or SDK before the
   * backend is used (the leveldb driver loads classic-level on open).
   */
  create(name: string, workDir: string): StateBackend;
  /** Keyed handle types whose key serializer lives outside the handle, and how to read it. */
  readonly handleTypes?: readonly string[];
  keySerializerOf?(handle: KeyedStateHandle, files: StateFileReader): Promise<SerializerSnapshot | undefined>;
}
