import { join } from 'node:path';
import { filesystem } from '../../backends/filesystem/index.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { memory } from '../../backends/memory/index.js';
import type { StateBackend } from '../../src/backend/contract.js';
import { changelog } from '../../src/changelog/index.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';

/**
 * The backend variants the lifecycle test drives. Every variant checkpoints to local disk under
 * `<root>/cp` (inline threshold 0: every stream is a file, so every file's lifetime is exercised).
 * `verifier` builds a second backend of the same kind whose working files live elsewhere: the
 * checks restore into it and never write into the job's storage.
 */
export interface LifecycleVariant {
  readonly name: string;
  /** The job's backend and storage. `root` is the run's temp directory. */
  make(root: string): { readonly backend: StateBackend; readonly storage: CheckpointStorage };
  /** A backend of the same kind for read-only restores (working files under `<root>/verify`). */
  verifier(root: string): StateBackend;
  /**
   * Set while a known finding breaks restores at another parallelism (names the finding): every
   * restart and every check then restores at the job's current parallelism.
   */
  readonly knownRescaleBug?: string;
  /**
   * Runs and commands per run in `npm test` when LIFECYCLE_RUNS / LIFECYCLE_MAX_COMMANDS are not
   * set (default 15 and 20), for a variant whose path needs longer interleavings to show up.
   */
  readonly defaultRuns?: { readonly numRuns: number; readonly maxCommands: number };
}

export const STORAGE_DIR = 'cp';
export const VERIFY_DIR = 'verify';

const storageOf = (root: string): CheckpointStorage =>
  localCheckpointStorage(join(root, STORAGE_DIR), { inlineThreshold: 0 });
// Small LevelDB buffers: a few writes already flush table files, so shared files come and go.
const leveldbOpts = (dir: string) => ({
  workingDir: dir,
  incremental: true,
  writeBufferBytes: 16 * 1024,
  memtableBytes: 16 * 1024,
});
// Changelog settings: materialize at every checkpoint with changes, upload the log early past 4 KiB.
const changelogOpts = { materializationIntervalMs: 0, preemptivePersistBytes: 4096 } as const;
// The bounded log: no timed materialization, tiny early uploads, no log bytes kept once an early
// upload holds them (maxLogMemoryBytes 0), so checkpoints reference spares the log has no bytes
// for, and one that is declined or lost leaves the next to materialize afresh.
const boundedLogOpts = {
  materializationIntervalMs: Number.POSITIVE_INFINITY,
  preemptivePersistBytes: 64,
  maxLogMemoryBytes: 0,
} as const;

export const LIFECYCLE_VARIANTS: readonly LifecycleVariant[] = [
  {
    name: 'memory',
    make: (root) => ({ backend: memory(), storage: storageOf(root) }),
    verifier: () => memory(),
  },
  {
    name: 'filesystem',
    make: (root) => ({
      backend: filesystem({ checkpointDir: join(root, STORAGE_DIR), inlineThreshold: 0 }),
      storage: storageOf(root),
    }),
    verifier: (root) => filesystem({ checkpointDir: join(root, VERIFY_DIR, 'cp'), inlineThreshold: 0 }),
  },
  {
    name: 'leveldb',
    make: (root) => ({ backend: leveldb(leveldbOpts(join(root, 'work'))), storage: storageOf(root) }),
    verifier: (root) => leveldb(leveldbOpts(join(root, VERIFY_DIR, 'work'))),
  },
  {
    name: 'changelog(memory)',
    make: (root) => {
      const storage = storageOf(root);
      return { backend: changelog({ backend: memory(), storage, ...changelogOpts }), storage };
    },
    verifier: (root) =>
      changelog({ backend: memory(), storage: localCheckpointStorage(join(root, VERIFY_DIR, 'cp')), ...changelogOpts }),
  },
  {
    name: 'changelog(memory), log memory bound 0',
    // 40 x 40: about one checkpoint per run references an early upload whose bytes the log let go,
    // and a declined one of those is followed by a fresh materialization in some runs (deterministic
    // cases: test/changelog/log-memory.test.ts).
    defaultRuns: { numRuns: 40, maxCommands: 40 },
    make: (root) => {
      const storage = storageOf(root);
      return { backend: changelog({ backend: memory(), storage, ...boundedLogOpts }), storage };
    },
    verifier: (root) =>
      changelog({
        backend: memory(),
        storage: localCheckpointStorage(join(root, VERIFY_DIR, 'cp')),
        ...boundedLogOpts,
      }),
  },
  {
    name: 'changelog(filesystem)',
    make: (root) => {
      const storage = storageOf(root);
      return {
        backend: changelog({
          backend: filesystem({ checkpointDir: join(root, STORAGE_DIR), inlineThreshold: 0 }),
          storage,
          ...changelogOpts,
        }),
        storage,
      };
    },
    verifier: (root) => {
      const dir = join(root, VERIFY_DIR, 'cp');
      return changelog({
        backend: filesystem({ checkpointDir: dir, inlineThreshold: 0 }),
        storage: localCheckpointStorage(dir),
        ...changelogOpts,
      });
    },
  },
  {
    name: 'changelog(leveldb)',
    make: (root) => {
      const storage = storageOf(root);
      return {
        backend: changelog({ backend: leveldb(leveldbOpts(join(root, 'work'))), storage, ...changelogOpts }),
        storage,
      };
    },
    verifier: (root) =>
      changelog({
        backend: leveldb(leveldbOpts(join(root, VERIFY_DIR, 'work'))),
        storage: localCheckpointStorage(join(root, VERIFY_DIR, 'cp')),
        ...changelogOpts,
      }),
  },
];

export function variantByName(name: string): LifecycleVariant {
  const v = LIFECYCLE_VARIANTS.find((x) => x.name === name);
  if (v === undefined)
    throw new Error(`no lifecycle variant ${name}; known: ${LIFECYCLE_VARIANTS.map((x) => x.name).join(', ')}`);
  return v;
}
