import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { withCheckpointStorage } from '../../src/backend/preset.js';
import { leveldb } from '../../backends/leveldb/index.js';
import type { StateBackend } from '../../src/backend/contract.js';
import { changelog } from '../../src/changelog/index.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import { StreamStateError } from '../../src/errors.js';
import type { BlobStore } from '../../src/storage/blob-store.js';

/** Backends the proof suites run against (memory only where snapshots may die with the process). */
export const PROOF_BACKENDS = ['filesystem', 'leveldb', 'changelog-filesystem', 'memory'] as const;
export type ProofBackendKind = (typeof PROOF_BACKENDS)[number];
/** memory is excluded from the crash suite: its checkpoints live in the killed process. */
export const CRASH_BACKENDS: readonly ProofBackendKind[] = ['filesystem', 'leveldb', 'changelog-filesystem'];

export function isProofBackendKind(s: string): s is ProofBackendKind {
  return (PROOF_BACKENDS as readonly string[]).includes(s);
}

export interface ProofBackendOptions {
  /** Where checkpoints go: a wrapped store (kill switch, faults) or a plain one. */
  readonly checkpointStorage: CheckpointStorage;
  /** LevelDB database directories (leveldb only). */
  readonly workingDir: string;
  /** changelog: minimum ms between materializations (default 200: several per run, so truncation and cleanup are exercised). */
  readonly materializationIntervalMs?: number;
  /** changelog: unpersisted log bytes that trigger an early segment upload (default 16 KiB). */
  readonly preemptivePersistBytes?: number;
  /** leveldb: native incremental checkpoints (default true). */
  readonly incremental?: boolean;
}

/**
 * The backend presets of the proof suites, built over a given checkpoint storage so that a kill
 * switch or fault injector can sit between the backend and the disk. `filesystem` is exactly what
 * filesystem() builds, with the storage swapped; `changelog-filesystem` logs through the same storage.
 */
export function makeProofBackend(kind: ProofBackendKind, opts: ProofBackendOptions): StateBackend {
  const checkpointStorage = opts.checkpointStorage;
  switch (kind) {
    case 'filesystem':
      return withCheckpointStorage(new HeapStateBackend({ name: 'filesystem' }), checkpointStorage);
    case 'memory':
      return withCheckpointStorage(new HeapStateBackend({ name: 'memory' }), checkpointStorage);
    case 'leveldb':
      return withCheckpointStorage(
        leveldb({
          workingDir: opts.workingDir,
          incremental: opts.incremental ?? true,
          writeBufferBytes: 256 * 1024,
          memtableBytes: 256 * 1024,
        }),
        checkpointStorage,
      );
    case 'changelog-filesystem':
      return changelog({
        backend: new HeapStateBackend({ name: 'filesystem' }),
        storage: checkpointStorage,
        materializationIntervalMs: opts.materializationIntervalMs ?? 200,
        preemptivePersistBytes: opts.preemptivePersistBytes ?? 16 * 1024,
      });
    default:
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `unknown proof backend ${String(kind)}; use one of ${PROOF_BACKENDS.join(', ')}.`,
      );
  }
}

/** Checkpoint storage over `store` (every stream a file unless `inlineThreshold` says otherwise). */
export function proofStorage(store: BlobStore, inlineThreshold = 0): BlobCheckpointStorage {
  return new BlobCheckpointStorage(store, { inlineThreshold });
}
