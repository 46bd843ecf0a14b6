import { randomBytes } from 'node:crypto';
import { mkdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type {
  KeyedBackendParams,
  KeyedStateBackend,
  SnapshotOptions,
  SnapshotTask,
  SubtaskInfo,
} from '../../src/backend/contract.js';
import type { KeyedStateHandle } from '../../src/backend/handles.js';
import { stateKindMismatch } from '../../src/backend/keyed-rules.js';
import { StateAccessError, StateRegistrationError, StreamStateError } from '../../src/errors.js';
import { SnapshotFlights } from '../../src/backend/snapshot-flights.js';
import { KeyGroupRange } from '../../src/keygroups/key-groups.js';
import { defaultNamespaceSerializer, restoredNamespaceSerializer } from '../../src/serializers/builtins.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import type { StateDescriptor } from '../../src/state/descriptors.js';
import { createTtlState } from '../../src/state/ttl.js';
import type { KeyedState, StateFor, TimerQueue } from '../../src/state/types.js';
import { backendClosed, BufferedStore, type LevelDb } from './buffered-store.js';
import { StateCatalog } from './catalog.js';
import { IncrementalChain } from './chain.js';
import { takeFullSnapshot } from './full-snapshot.js';
import { takeIncrementalSnapshot } from './incremental-snapshot.js';
import { KeyContext } from './key-context.js';
import { openLevelDb } from './open-db.js';
import { ManifestTracker } from './native-checkpoint.js';
import { restoreLevelDb } from './restore.js';
import { decodeRowKey, isCountRowStateId, keyGroupPrefix, stateInKeyGroupPrefix } from './row-keys.js';
import {
  LevelAggregatingState,
  LevelListState,
  LevelMapState,
  LevelReducingState,
  LevelValueState,
  type LevelState,
  type MapTtl,
} from './states.js';
import type { Instance, RegisteredInfo } from './snapshot-source.js';
import { HeapTimerQueue, type RawTimer } from './timer-queue.js';
import { TtlSweeper, type SweepResult, type SweepTarget, type TtlCleanupOptions } from './ttl-sweep.js';
import type { ValueCodec } from './value-codec.js';

export interface LevelDbBackendOptions {
  /** Parent of the per-backend database directories. Default: a directory under os.tmpdir(). */
  readonly workingDir?: string;
  /** Native incremental checkpoints (default true); false writes full key-groups streams. */
  readonly incremental?: boolean;
  /** LevelDB block cache in bytes (default 8 MiB). */
  readonly cacheSize?: number;
  /**
   * Most bytes a write-buffer layer holds before it is written to LevelDB (default 4 MiB). An idle
   * LevelDB gets a layer already at 1/16 of this; while a write is in flight the layer grows.
   */
  readonly writeBufferBytes?: number;
  /**
   * LevelDB's memtable size (default 16 MiB). Checkpoints copy the write-ahead log of the memtable
   * instead of flushing it, so this bounds the private bytes each checkpoint uploads; smaller
   * memtables make more level-0 tables, which every point read probes and compaction rewrites.
   * LevelDB itself clips it to 64 KiB - 1 GiB.
   */
  readonly memtableBytes?: number;
  /**
   * Keep LevelDB's info log (LOG in the database directory), for debugging LevelDB itself. Off by
   * default: LevelDB never trims it while the database is open, so it grows without bound.
   */
  readonly infoLog?: boolean;
  /** Chooses the database directory of one backend; default `<workingDir>/<job>-<operator>-<subtask>-<random>`. */
  readonly instanceDir?: (info: SubtaskInfo) => string;
  /**
   * Physical removal of expired TTL rows (ttl-sweep.ts): a background sweep over a bounded number
   * of rows after every so many accesses of TTL states, resuming where it stopped. On by default;
   * false turns it off (expired values are then removed only when read or left out of full snapshots).
   */
  readonly ttlCleanup?: false | TtlCleanupOptions;
}

export const DEFAULT_WRITE_BUFFER_BYTES = 4 * 1024 * 1024;
export const DEFAULT_CACHE_SIZE = 8 * 1024 * 1024;
/**
 * 16 MiB, not LevelDB's 4 MiB or the 2 MiB used before: with random keys every level-0 table spans
 * the key range, so each one costs every getSync a probe and each level-0 compaction rewrites all
 * of level 1. At 300 MB of random-key state (read + update per record) 16 MiB took 0.70x the main
 * thread's CPU per record and 0.77x LevelDB's background CPU of 2 MiB (3 alternating rounds).
 */
export const DEFAULT_MEMTABLE_BYTES = 16 * 1024 * 1024;
/** How long close() waits for cancelled snapshots to clean up after themselves. */
const CLOSE_GRACE_MS = 5000;

/** Where a database lives and how it is opened. */
export type { Instance } from './snapshot-source.js';

interface Registered {
  readonly kind: string;
  readonly handle: KeyedState<unknown>;
  /** The codec of the (inner) state, for full snapshots that convert old generations. */
  readonly codec: ValueCodec<unknown> | null;
  readonly ttlMs: number | null;
  /** TTL config's cleanupInFullSnapshot (default true): full snapshots drop expired values. */
  readonly cleanupInFullSnapshot: boolean;
  readonly namespaceSerializer: Serializer<unknown>;
}

function safe(s: string): string {
  return s.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 60);
}

export class LevelDbKeyedStateBackend<K> implements KeyedStateBackend<K> {
  readonly keyGroupRange: KeyGroupRange;
  readonly maxParallelism: number;
  readonly keySerializer: Serializer<K>;
  private readonly ctx: KeyContext<K>;
  private readonly registered = new Map<string, Registered>();
  private readonly timerQueues = new Map<string, HeapTimerQueue<K, unknown>>();
  private closed = false;
  private readonly flights = new SnapshotFlights('the LevelDB backend', CLOSE_GRACE_MS);
  /** Registered TTL states by state id: what the TTL sweep may clean. */
  private readonly ttlTargets = new Map<number, SweepTarget>();
  private readonly sweeper: TtlSweeper | null;
  /** This database's MANIFEST as parsed by the last checkpoint (each parses only what was appended since). */
  /** @internal */
  readonly manifests = new ManifestTracker();

  private constructor(
    private readonly params: KeyedBackendParams<K>,
    /** @internal */ readonly instance: Instance,
    /** @internal */ readonly db: LevelDb,
    /** @internal */ readonly store: BufferedStore,
    /** @internal */ readonly catalog: StateCatalog,
    /** Restored timers of queues not registered again yet. */
    private readonly pendingTimers: Map<string, RawTimer[]>,
    /** @internal */ readonly chain: IncrementalChain,
    private readonly incremental: boolean,
    ttlCleanup: false | TtlCleanupOptions,
  ) {
    this.keyGroupRange = KeyGroupRange.of(params.keyGroupRange);
    this.maxParallelism = params.maxParallelism;
    this.keySerializer = params.keySerializer;
    this.ctx = new KeyContext(store, params.keySerializer, params.maxParallelism, this.keyGroupRange);
    this.sweeper =
      ttlCleanup === false
        ? null
        : new TtlSweeper(store, this.keyGroupRange, this.ttlTargets, () => this.clock(), ttlCleanup);
  }

  static async create<K>(
    params: KeyedBackendParams<K>,
    opts: LevelDbBackendOptions = {},
  ): Promise<LevelDbKeyedStateBackend<K>> {
    const dir =
      opts.instanceDir?.(params) ??
      join(
        opts.workingDir ?? join(tmpdir(), 'streamstate-leveldb'),
        `${safe(params.jobId)}-${safe(params.operatorId)}-${params.subtaskIndex}-${randomBytes(4).toString('hex')}`,
      );
    const instance: Instance = {
      dir,
      dbDir: join(dir, 'db'),
      cacheSize: opts.cacheSize ?? DEFAULT_CACHE_SIZE,
      memtableBytes: opts.memtableBytes ?? DEFAULT_MEMTABLE_BYTES,
      infoLog: opts.infoLog ?? false,
    };
    await claimDirectory(instance);
    const describe = `LevelDB backend of ${params.operatorId}[${params.subtaskIndex}] in ${dir}`;
    let db: LevelDb | null = null;
    try {
      const catalog = new StateCatalog(describe);
      const pendingTimers = new Map<string, RawTimer[]>();
      let chain = IncrementalChain.fresh();
      const handles = params.restore?.handles ?? [];
      if (handles.length > 0 && params.restore) {
        const restored = await restoreLevelDb(params, params.restore, instance, catalog);
        db = restored.db;
        for (const [name, timers] of restored.timers) pendingTimers.set(name, timers);
        chain = restored.chain;
      } else {
        db = await openLevelDb(instance.dbDir, {
          cacheSize: instance.cacheSize,
          writeBufferSize: instance.memtableBytes,
          infoLog: instance.infoLog,
        });
      }
      const store = new BufferedStore(db, opts.writeBufferBytes ?? DEFAULT_WRITE_BUFFER_BYTES, describe);
      return new LevelDbKeyedStateBackend(
        params,
        instance,
        db,
        store,
        catalog,
        pendingTimers,
        chain,
        opts.incremental ?? true,
        opts.ttlCleanup ?? {},
      );
    } catch (err) {
      if (db !== null) await db.close().catch(() => undefined);
      await rm(dir, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
  }

  /** How errors name this backend. */
  private get describe(): string {
    return `the LevelDB keyed state backend of ${this.params.operatorId}[${this.params.subtaskIndex}]`;
  }

  private checkOpen(): void {
    if (this.closed) throw backendClosed(this.describe);
  }

  // ------------------------------------------------------------------ keys

  setCurrentKey(key: K): void {
    this.ctx.setCurrentKey(key);
  }

  getCurrentKey(): K {
    return this.ctx.getCurrentKey();
  }

  get currentKeyGroup(): number {
    this.ctx.getCurrentKey();
    return this.ctx.keyGroup;
  }

  // ------------------------------------------------------------------ states

  getState<D extends StateDescriptor<unknown>>(descriptor: D): StateFor<D> {
    this.checkOpen();
    if (descriptor === null || descriptor === undefined)
      throw new StateAccessError('NULL_NOT_ALLOWED', 'getState(null): pass a state descriptor.');
    if (descriptor.namespaceSerializer === null || descriptor.namespaceSerializer === undefined) {
      throw new StateAccessError(
        'NULL_NOT_ALLOWED',
        `state "${descriptor.name}": the namespace serializer is null; omit it to use the default.`,
      );
    }
    const existing = this.registered.get(descriptor.name);
    if (existing !== undefined) {
      if (existing.kind !== descriptor.kind) {
        throw stateKindMismatch(descriptor.name, existing.kind, descriptor.kind);
      }
      return existing.handle as StateFor<D>;
    }
    let codec: ValueCodec<unknown> | null = null;
    const registerInner = (
      d: StateDescriptor<unknown>,
      withTtl: boolean,
      mapTtl: MapTtl | null,
    ): KeyedState<unknown> => {
      const made = this.createState(d, withTtl, mapTtl);
      codec = made.codec;
      if (withTtl && descriptor.ttl !== undefined) {
        const stateId = this.catalog.get(d.name)?.stateId as number;
        this.ttlTargets.set(stateId, { kind: d.kind, ttlMs: descriptor.ttl.ttlMs, countsTimestamps: mapTtl !== null });
        if (this.sweeper !== null) made.handle.onAccess = this.sweeper.accessed;
      }
      return made.handle;
    };
    const ttl = descriptor.ttl;
    const mapTtl =
      ttl !== undefined && ttl.visibility !== 'returnExpiredIfNotCleanedUp'
        ? { ttlMs: ttl.ttlMs, clock: this.clock }
        : null;
    const handle =
      ttl !== undefined
        ? createTtlState(descriptor, (inner) => registerInner(inner, true, mapTtl), this.clock)
        : registerInner(descriptor, false, null);
    this.registered.set(descriptor.name, {
      kind: descriptor.kind,
      handle,
      codec,
      ttlMs: descriptor.ttl?.ttlMs ?? null,
      cleanupInFullSnapshot: descriptor.ttl?.cleanupInFullSnapshot !== false,
      namespaceSerializer: descriptor.namespaceSerializer,
    });
    return handle as StateFor<D>;
  }

  private createState(
    d: StateDescriptor<unknown>,
    ttl: boolean,
    mapTtl: MapTtl | null,
  ): { handle: LevelState<unknown>; codec: ValueCodec<unknown> } {
    const ctx = this.ctx as KeyContext<unknown>;
    const ns = d.namespaceSerializer;
    switch (d.kind) {
      case 'value': {
        const { meta, codec } = this.catalog.registerState(d.name, 'value', ns, d.serializer, undefined, ttl);
        return { handle: new LevelValueState(ctx, meta.stateId, ns, codec, d.defaultValue ?? undefined), codec };
      }
      case 'list': {
        const { meta, codec } = this.catalog.registerState(d.name, 'list', ns, d.elementSerializer, undefined, ttl);
        return { handle: new LevelListState(ctx, meta.stateId, ns, codec), codec };
      }
      case 'map': {
        const { meta, codec } = this.catalog.registerState(
          d.name,
          'map',
          ns,
          d.valueSerializer,
          d.userKeySerializer,
          ttl,
        );
        return { handle: new LevelMapState(ctx, meta.stateId, ns, d.userKeySerializer, codec, mapTtl), codec };
      }
      case 'reducing': {
        const { meta, codec } = this.catalog.registerState(d.name, 'reducing', ns, d.serializer, undefined, ttl);
        return { handle: new LevelReducingState(ctx, meta.stateId, ns, codec, d.reduce), codec };
      }
      case 'aggregating': {
        const { meta, codec } = this.catalog.registerState(
          d.name,
          'aggregating',
          ns,
          d.accumulatorSerializer,
          undefined,
          ttl,
        );
        return { handle: new LevelAggregatingState(ctx, meta.stateId, ns, codec, d.aggregate), codec };
      }
    }
  }

  getTimerQueue<N = string>(name: string, namespaceSerializer?: Serializer<N>): TimerQueue<K, N> {
    this.checkOpen();
    const existing = this.timerQueues.get(name);
    if (existing !== undefined) return existing as unknown as TimerQueue<K, N>;
    const ns = (namespaceSerializer ?? defaultNamespaceSerializer) as Serializer<unknown>;
    this.catalog.registerTimers(name, ns);
    const q = new HeapTimerQueue<K, unknown>(
      name,
      this.keySerializer,
      ns,
      this.maxParallelism,
      this.keyGroupRange,
      () => this.checkOpen(),
    );
    for (const t of this.pendingTimers.get(name) ?? []) q.addRaw(t);
    this.pendingTimers.delete(name);
    this.timerQueues.set(name, q);
    return q as unknown as TimerQueue<K, N>;
  }

  /** @internal Every timer by queue name (registered queues and restored ones not registered again). */
  timersSnapshot(): Map<string, RawTimer[]> {
    const out = new Map<string, RawTimer[]>();
    for (const [name, q] of this.timerQueues) out.set(name, q.raw());
    for (const [name, t] of this.pendingTimers) out.set(name, [...t]);
    return out;
  }

  /** @internal How a full snapshot reads a state's rows: codec (registered states) and TTL. */
  registeredInfo(name: string): RegisteredInfo | undefined {
    const r = this.registered.get(name);
    return r === undefined
      ? undefined
      : { codec: r.codec, ttlMs: r.ttlMs, cleanupInFullSnapshot: r.cleanupInFullSnapshot };
  }

  get clock(): () => number {
    return this.params.clock ?? Date.now;
  }

  stateNames(): string[] {
    this.checkOpen();
    return this.catalog
      .all()
      .filter((s) => s.kind !== 'timers')
      .map((s) => s.name);
  }

  // ------------------------------------------------------------------ scans

  /** Rows of one state in key-group order: [decoded row key, value]. */
  private async *stateRows(stateId: number): AsyncGenerator<[ReturnType<typeof decodeRowKey>, Buffer]> {
    for (const kg of this.keyGroupRange) {
      const gte = stateInKeyGroupPrefix(kg, stateId);
      const lt = stateInKeyGroupPrefix(kg, stateId + 1);
      for await (const [k, v] of this.store.range(gte, lt)) yield [decodeRowKey(k), v];
    }
  }

  /** The state id of a registered or restored keyed state; STATE_NOT_REGISTERED when there is none (as on the heap backends). */
  private stateIdOf(stateName: string): number {
    const meta = this.catalog.get(stateName);
    if (meta === undefined || meta.kind === 'timers') {
      throw new StateRegistrationError(
        'STATE_NOT_REGISTERED',
        `no keyed state named "${stateName}" is registered or restored; register it with getState(descriptor).`,
      );
    }
    return meta.stateId;
  }

  async *getKeys<N>(stateName: string, namespace: N): AsyncIterable<K> {
    this.checkOpen();
    const id = this.stateIdOf(stateName);
    const nsSerializer = this.nsSerializerOf(stateName) as Serializer<N>;
    const nsBytes = Buffer.from(nsSerializer.serialize(namespace));
    let last: Buffer | null = null;
    for await (const [row] of this.stateRows(id)) {
      if (!row.namespace.equals(nsBytes)) continue;
      if (last !== null && last.equals(row.key)) continue;
      last = Buffer.from(row.key);
      yield this.keySerializer.deserialize(row.key);
    }
  }

  async *getKeysAndNamespaces<N>(stateName: string): AsyncIterable<[K, N]> {
    this.checkOpen();
    const id = this.stateIdOf(stateName);
    const nsSerializer = this.nsSerializerOf(stateName) as Serializer<N>;
    let lastKey: Buffer | null = null;
    let lastNs: Buffer | null = null;
    for await (const [row] of this.stateRows(id)) {
      if (lastKey !== null && lastNs !== null && lastKey.equals(row.key) && lastNs.equals(row.namespace)) continue;
      lastKey = Buffer.from(row.key);
      lastNs = Buffer.from(row.namespace);
      yield [this.keySerializer.deserialize(row.key), nsSerializer.deserialize(row.namespace)];
    }
  }

  /**
   * The namespace serializer of a registered state; for a restored state not registered again, the
   * built-in serializer its meta info names (as the heap backends do), else STATE_NOT_REGISTERED.
   */
  private nsSerializerOf(stateName: string): Serializer<unknown> {
    const registered = this.registered.get(stateName)?.namespaceSerializer;
    if (registered !== undefined) return registered;
    return restoredNamespaceSerializer(stateName, this.catalog.get(stateName)?.namespaceSerializer);
  }

  async applyToAllKeys<D extends StateDescriptor<unknown>>(
    namespace: unknown,
    descriptor: D,
    fn: (key: K, state: StateFor<D>) => void | Promise<void>,
  ): Promise<void> {
    this.checkOpen();
    const state = this.getState(descriptor);
    const keys: K[] = [];
    for await (const k of this.getKeys(descriptor.name, namespace)) keys.push(k);
    for (const k of keys) {
      this.setCurrentKey(k);
      state.setCurrentNamespace(namespace as never);
      await fn(k, state);
    }
  }

  /** Entries as the heap backends count them: a value, a list (its base row and chunk rows together), a map entry. */
  async numEntries(): Promise<number> {
    this.checkOpen();
    let n = 0;
    const gte = keyGroupPrefix(this.keyGroupRange.start);
    const lt = keyGroupPrefix(this.keyGroupRange.end + 1);
    let lastList: Buffer | null = null;
    for await (const [k] of this.store.range(gte, lt)) {
      const sid = k.readUInt16BE(2);
      if (isCountRowStateId(sid)) continue;
      if (this.catalog.byStateId(sid)?.kind === 'list') {
        const row = decodeRowKey(k);
        const listKey = k.subarray(0, k.length - row.userKey.length);
        if (lastList !== null && lastList.equals(listKey)) continue;
        lastList = Buffer.from(listKey);
      }
      n++;
    }
    return n;
  }

  // ------------------------------------------------------------------ snapshots

  async snapshot(checkpointId: number, options: SnapshotOptions): Promise<SnapshotTask<KeyedStateHandle>> {
    this.checkOpen();
    const canonical = options.type === 'savepoint' && options.format === 'canonical';
    const task =
      !this.incremental || canonical
        ? await takeFullSnapshot(this, checkpointId, options, canonical)
        : await takeIncrementalSnapshot(this, checkpointId, options);
    return this.track(task);
  }

  /** Lets close() and abort notices cancel a running asynchronous part: `done` rejects at once with SNAPSHOT_CANCELLED. */
  private track(task: SnapshotTask<KeyedStateHandle> & { cancel?: () => void }): SnapshotTask<KeyedStateHandle> {
    return {
      checkpointId: task.checkpointId,
      done: this.flights.track(task.checkpointId, task.done, () => task.cancel?.()),
    };
  }

  async notifyCheckpointComplete(checkpointId: number): Promise<void> {
    this.chain.complete(checkpointId);
  }

  async notifyCheckpointAborted(checkpointId: number): Promise<void> {
    this.chain.abort(checkpointId);
    await this.flights.cancel(checkpointId);
  }

  /**
   * One step of the TTL sweep over at most `maxRows` rows (default: the configured step size),
   * starting where the last step stopped: expired rows of registered TTL states are removed.
   * Steps also run in the background as TTL states are accessed (option ttlCleanup).
   */
  async sweepExpiredRows(maxRows?: number): Promise<SweepResult> {
    this.checkOpen();
    if (this.sweeper === null) return { scanned: 0, removed: 0, rewritten: 0, wrapped: true };
    return this.sweeper.sweep(maxRows);
  }

  /** Writes the in-memory write buffer to LevelDB and waits for it (benchmarks, tests). */
  async flush(): Promise<void> {
    this.checkOpen();
    await this.store.flush();
  }

  isClosed(): boolean {
    return this.closed;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.store.markClosed(this.describe);
    // Cancelled uploads delete what they wrote (blocked I/O is aborted by discard()); waits at most the grace period.
    await this.flights.cancelAll();
    await this.sweeper?.idle();
    await this.store.settle();
    await this.db.close().catch(() => undefined);
    await rm(this.instance.dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/**
 * Makes `instance.dir` ours: refuses a directory whose database is open elsewhere (LOCKED) and
 * wipes what a crashed run left behind.
 */
async function claimDirectory(instance: Instance): Promise<void> {
  const exists = await stat(instance.dbDir).then(
    () => true,
    () => false,
  );
  if (exists) {
    try {
      const probe = await openLevelDb(instance.dbDir, { createIfMissing: false });
      await probe.close();
    } catch (err) {
      if (err instanceof StreamStateError && err.code === 'LOCKED') throw err;
    }
  }
  await rm(instance.dir, { recursive: true, force: true });
  await mkdir(instance.dir, { recursive: true });
}
