import type { CheckpointStorage } from '../checkpoint/storage.js';
import type { StateBackend } from './contract.js';

/**
 * A state backend bundled with the checkpoint storage it is usually used with: what the presets
 * `memory()`, `filesystem({ checkpointDir })` and `leveldb({ checkpointDir })` return, for the
 * two-line set-up. The backend itself never uses the storage (Flink's split between state backend
 * and checkpoint storage): the coordinator and the runtime take it from here, or from their own
 * option, which wins.
 */
export type StateBackendPreset<B extends StateBackend = StateBackend> = B & {
  readonly checkpointStorage?: CheckpointStorage;
};

/** Bundles `storage` with `backend` (the same object, with a `checkpointStorage` property). */
export function withCheckpointStorage<B extends StateBackend>(
  backend: B,
  storage: CheckpointStorage,
): B & { readonly checkpointStorage: CheckpointStorage } {
  return Object.assign(backend, { checkpointStorage: storage });
}

/** The checkpoint storage a preset brings, if any. */
export function presetStorage(backend: StateBackend): CheckpointStorage | undefined {
  const storage = (backend as StateBackendPreset).checkpointStorage;
  return storage ?? undefined;
}
