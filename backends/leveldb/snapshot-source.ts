import type { KeyGroupRange } from '../../src/keygroups/key-groups.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import type { BufferedStore, LevelDb } from './buffered-store.js';
import type { StateCatalog } from './catalog.js';
import type { IncrementalChain } from './chain.js';
import type { ManifestTracker } from './native-checkpoint.js';
import type { RawTimer } from './timer-queue.js';
import type { ValueCodec } from './value-codec.js';

/** Where one keyed LevelDB backend keeps its files (its own folder; the database in `dbDir`). */
export interface Instance {
  readonly dir: string;
  readonly dbDir: string;
  readonly cacheSize: number;
  readonly memtableBytes: number;
  readonly infoLog: boolean;
}

/** How a full snapshot reads a registered state's rows. */
export interface RegisteredInfo {
  readonly codec: ValueCodec<unknown> | null;
  readonly ttlMs: number | null;
  readonly cleanupInFullSnapshot: boolean;
}

/**
 * What the snapshot modules (full-snapshot.ts, incremental-snapshot.ts) may see of a keyed
 * LevelDB backend: its database and buffers, state catalog, incremental chain and timers, and
 * nothing else. The backend hands this view in; the modules never import the backend class.
 */
export interface LevelDbSnapshotSource {
  readonly keyGroupRange: KeyGroupRange;
  readonly maxParallelism: number;
  readonly keySerializer: Serializer<unknown>;
  readonly instance: Instance;
  readonly db: LevelDb;
  readonly store: BufferedStore;
  readonly catalog: StateCatalog;
  readonly chain: IncrementalChain;
  readonly manifests: ManifestTracker;
  readonly clock: () => number;
  isClosed(): boolean;
  /** Every timer by queue name (registered queues and restored ones not registered again). */
  timersSnapshot(): Map<string, RawTimer[]>;
  registeredInfo(name: string): RegisteredInfo | undefined;
}
