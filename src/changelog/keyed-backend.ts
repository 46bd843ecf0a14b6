import { randomUUID } from 'node:crypto';
import type {
  CheckpointStreamFactory,
  KeyedBackendParams,
  KeyedStateBackend,
  SnapshotOptions,
  SnapshotTask,
  StateOutputStream,
  StateScope,
} from '../backend/contract.js';
import { referencedFiles, type KeyedStateHandle } from '../backend/handles.js';
import { backendClosedError, stateKindMismatch } from '../backend/keyed-rules.js';
import { DiscardableStreams, SnapshotFlights } from '../backend/snapshot-flights.js';
import { opaqueDescriptor } from './opaque-descriptor.js';
import { memoryCheckpointStorage } from '../checkpoint/checkpoint-storage.js';
import { BlobStateFileReader } from '../checkpoint/streams.js';
import { StateRegistrationError } from '../errors.js';
import { ByteWriter } from '../format/bytes.js';
import { keyGroupForKey, type KeyGroupRange } from '../keygroups/key-groups.js';
import { defaultNamespaceSerializer, restoredNamespaceSerializer } from '../serializers/builtins.js';
import { snapshotOf, type Serializer } from '../serializers/serializer.js';
import type { StateDescriptor } from '../state/descriptors.js';
import type { KeyedState, StateFor, TimerQueue } from '../state/types.js';
import { cancelled, ChangeLog, writeStream, type UsedSegment } from './change-log.js';
import {
  CHANGELOG_HANDLE_TYPE,
  CHANGELOG_HANDLE_VERSION,
  type ChangelogLogIdentity,
  type ChangelogLogRef,
  type ChangelogSegmentRef,
  type ChangelogStateHandle,
} from './handle.js';
import { FunctionHooks } from './hooks.js';
import { RecordBuilder, type ChangeOpCode, type StateMetaRecord } from './records.js';
import {
  checkRegistration,
  PendingChanges,
  replayKeyedState,
  replayTimers,
  valueSerializerOf,
  type PendingState,
  type ReplayCursor,
} from './replay.js';
import { encodeSegment } from './segment-format.js';
import {
  loggedStateFor,
  LoggingFoldingState,
  LoggingListState,
  LoggingMapState,
  LoggingTimerQueue,
  LoggingValueState,
  type ChangeSink,
  type LoggedState,
} from './state-wrappers.js';

/** Tuning of one changelog keyed backend (see ChangelogOptions for the documented defaults). */
export interface ChangelogSettings {
  readonly materializationIntervalMs: number;
  readonly preemptivePersistBytes: number;
  /** Log bytes kept in memory before those a preemptive upload also holds are let go. */
  readonly maxLogMemoryBytes?: number;
  /** Where segments go when persisted outside a checkpoint (null: only at checkpoints). */
  readonly backgroundStreams: CheckpointStreamFactory | null;
  /** Monotonic-ish time for the materialization interval. */
  readonly now: () => number;
}

/**
 * A materialized snapshot of the wrapped backend plus the logs to replay on top of it, covering
 * this backend's own log up to `seq`. Created when a materialization starts; filled when it ends.
 */
export class Materialization {
  handles: readonly KeyedStateHandle[] = [];
  logs: readonly ChangelogLogRef[] = [];
  status: 'running' | 'done' | 'failed' = 'running';
  /** Part of a completed checkpoint (by a completion notice, or restored): its files are tracked by the shared-state registry. */
  confirmed = false;
  /** The checkpoint whose completion notice confirmed it (null: not by a notice). */
  confirmedBy: number | null = null;
  /** Its files may be gone (its writer was aborted or subsumed, or a checkpoint reusing it was declined): never use it again. */
  revoked = false;

  constructor(
    readonly id: number,
    readonly seq: number,
    /** Every file is in the job's shared dir, so later checkpoints may reference it. */
    readonly shareable: boolean,
    /** Written by this backend's wrapped backend (it is told when it is confirmed). */
    readonly own: boolean,
  ) {}

  static restored(
    id: number,
    handles: readonly KeyedStateHandle[],
    logs: readonly ChangelogLogRef[],
    shareable: boolean,
  ): Materialization {
    const m = new Materialization(id, 0, shareable, false);
    m.handles = handles;
    m.logs = logs;
    m.status = 'done';
    m.confirmed = true;
    return m;
  }

  get isEmpty(): boolean {
    return this.handles.length === 0 && this.logs.length === 0;
  }
}

interface CheckpointRecord {
  readonly base: Materialization;
  /** The checkpoint wrote `base` (a materializing checkpoint): its files are this checkpoint's own uploads. */
  readonly writer: boolean;
  /** Whether what it reuses was vouched for by SnapshotOptions.mayReuse (else by completion notices alone). */
  readonly verified: boolean;
  /** The segment copy each chunk was referenced with (filled when the snapshot's handle is ready). */
  used: readonly UsedSegment[];
}

interface RegisteredState {
  readonly kind: StateMetaRecord['kind'];
  readonly handle: unknown;
  readonly hooks: FunctionHooks;
  readonly innerDescriptor: StateDescriptor<unknown>;
}

/** Lets the changelog pin the wrapped backend's TTL clock to a logged time (live writes and replay). */
export class ClockControl {
  pinned = Number.NaN;
  constructor(readonly user: () => number) {}
  readonly clock = (): number => (Number.isNaN(this.pinned) ? this.user() : this.pinned);
}

export interface ChangelogKeyedInit<K> {
  readonly inner: KeyedStateBackend<K>;
  readonly innerName: string;
  readonly jobId: string;
  readonly operatorId: string;
  readonly subtaskIndex: number;
  readonly clock: ClockControl;
  readonly settings: ChangelogSettings;
  readonly pending: PendingChanges;
  readonly base: Materialization;
  /**
   * `log`: every write is logged (the changelog backend). `passthrough`: nothing is logged and
   * snapshots are the wrapped backend's own (a plain backend restored from a changelog checkpoint).
   */
  readonly mode: 'log' | 'passthrough';
  /**
   * Creates a wrapped backend like `inner` (without restore in `params`): queries and canonical
   * savepoints that must see restored changes not replayed yet build a replayed copy with it.
   */
  readonly createInner?: (params: KeyedBackendParams<K>) => Promise<KeyedStateBackend<K>>;
  readonly params?: KeyedBackendParams<K>;
  /** Restores a plain backend from changelog handles (restore.ts's restorePlainFromChangelog; passed in, not imported, as restore.ts imports this module). */
  readonly restorePlain?: (
    createPlain: (params: KeyedBackendParams<K>) => Promise<KeyedStateBackend<K>>,
    backendName: string,
    params: KeyedBackendParams<K>,
  ) => Promise<KeyedStateBackend<K>>;
}

/**
 * The changelog keyed backend: state lives in the wrapped backend; every write is also appended to
 * a state-change log. A checkpoint is the last materialization + the log segments since it, so
 * taking one only persists the log tail. Uploads (segment copies, materializations) are shared by
 * later checkpoints only once a completed checkpoint references them: the coordinator deletes the
 * files of a checkpoint that is aborted or subsumed, and the backend may hear of that late or never.
 */
export class ChangelogKeyedStateBackend<K> implements KeyedStateBackend<K>, ChangeSink, ReplayCursor {
  readonly inner: KeyedStateBackend<K>;
  private readonly log: ChangeLog;
  private readonly builder = new RecordBuilder();
  private readonly states = new Map<string, RegisteredState>();
  private readonly logged = new Map<string, LoggedState>();
  private nextStateId = 1;
  /** Bumped at each materialization start: every state logs METADATA again before its next change. */
  private epoch = 0;
  private cachedKey: unknown = undefined;
  private cachedKeyBytes: Uint8Array | null = null;

  /** Finished materializations that may still be reused, oldest first (the restored one included). */
  private materializations: Materialization[] = [];
  /** The newest materialization a completion notice confirmed (null: none can be trusted). */
  private confirmedBase: Materialization | null;
  /** The newest completion notice acted upon: older and equal ones are ignored. */
  private newestNotice = Number.NEGATIVE_INFINITY;
  private materializing: Materialization | null = null;
  private lastMaterializationAt: number;
  private readonly checkpoints = new Map<number, CheckpointRecord>();
  private readonly flights = new SnapshotFlights('the changelog keyed backend');
  private readonly activeStreams = new Set<StateOutputStream>();
  private closed = false;
  private rejectClosed!: (err: unknown) => void;
  private readonly closedSignal: Promise<never>;
  /** Last background failure (preemptive persist or materialization), for diagnostics. */
  lastBackgroundError: unknown = null;

  constructor(private readonly init: ChangelogKeyedInit<K>) {
    this.inner = init.inner;
    this.materializations = [init.base];
    this.confirmedBase = init.base;
    this.lastMaterializationAt = init.settings.now();
    this.closedSignal = new Promise<never>((_, reject) => (this.rejectClosed = reject));
    this.closedSignal.catch(() => undefined);
    this.log = new ChangeLog({
      logId: randomUUID(),
      jobId: init.jobId,
      operatorId: init.operatorId,
      subtaskIndex: init.subtaskIndex,
      backend: init.innerName,
      maxParallelism: init.inner.maxParallelism,
      keyGroupRange: init.inner.keyGroupRange.toJSON(),
      ...(init.settings.maxLogMemoryBytes !== undefined ? { maxMemoryBytes: init.settings.maxLogMemoryBytes } : {}),
    });
  }

  // ------------------------------------------------------------------ KeyedStateBackend: delegation

  get keyGroupRange(): KeyGroupRange {
    return this.inner.keyGroupRange;
  }
  get maxParallelism(): number {
    return this.inner.maxParallelism;
  }
  get keySerializer(): Serializer<K> {
    return this.inner.keySerializer;
  }
  get currentKeyGroup(): number {
    return this.inner.currentKeyGroup;
  }
  setCurrentKey(key: K): void {
    this.inner.setCurrentKey(key);
  }
  getCurrentKey(): K {
    return this.inner.getCurrentKey();
  }
  async *getKeys<N>(stateName: string, namespace: N): AsyncIterable<K> {
    this.checkOpen();
    if (
      this.init.pending.get(stateName)?.meta.kind !== undefined &&
      this.init.pending.get(stateName)?.meta.kind !== 'timers'
    ) {
      const nsBytes = Buffer.from(this.pendingNamespaceSerializer(stateName).serialize(namespace));
      const keys = await this.withReplayedCopy(async (copy) => {
        const out: K[] = [];
        for await (const [k, ns] of copy.getKeysAndNamespaces<Uint8Array>(stateName))
          if (nsBytes.equals(ns)) out.push(k);
        return out;
      });
      yield* keys;
      return;
    }
    yield* this.inner.getKeys(stateName, namespace);
  }
  async *getKeysAndNamespaces<N>(stateName: string): AsyncIterable<[K, N]> {
    this.checkOpen();
    if (
      this.init.pending.get(stateName)?.meta.kind !== undefined &&
      this.init.pending.get(stateName)?.meta.kind !== 'timers'
    ) {
      const nsSer = this.pendingNamespaceSerializer(stateName) as Serializer<N>;
      const pairs = await this.withReplayedCopy(async (copy) => {
        const out: [K, N][] = [];
        for await (const [k, ns] of copy.getKeysAndNamespaces<Uint8Array>(stateName))
          out.push([k, nsSer.deserialize(ns)]);
        return out;
      });
      yield* pairs;
      return;
    }
    yield* this.inner.getKeysAndNamespaces<N>(stateName);
  }
  async numEntries(): Promise<number> {
    this.checkOpen();
    if (this.hasPendingKeyedState()) return this.withReplayedCopy((copy) => copy.numEntries());
    return this.inner.numEntries();
  }

  /** Restored keyed states (not timers) whose logged changes wait for registration. */
  private hasPendingKeyedState(): boolean {
    return this.init.pending.names().some((n) => this.init.pending.get(n)?.meta.kind !== 'timers');
  }

  /**
   * The namespace serializer of a restored state not registered again: the built-in one its
   * metadata names (as the heap backends decode such states), else STATE_NOT_REGISTERED.
   */
  private pendingNamespaceSerializer(stateName: string): Serializer<unknown> {
    return restoredNamespaceSerializer(stateName, this.init.pending.get(stateName)?.meta.namespaceSerializer);
  }

  /**
   * Runs `fn` on a plain copy of this backend's state with every restored change replayed (states
   * not registered again are registered in the copy with opaque descriptors, as offline tools do):
   * the wrapped backend's canonical snapshot plus the waiting changes, restored into a fresh wrapped
   * backend through scratch in-memory storage. Only needed while restored changes wait (until every
   * state is registered again); the copy is closed afterwards.
   */
  private async withReplayedCopy<T>(fn: (copy: KeyedStateBackend<K>) => Promise<T>): Promise<T> {
    const { createInner, params } = this.init;
    const restorePlain = this.init.restorePlain;
    if (createInner === undefined || params === undefined || restorePlain === undefined) {
      throw new StateRegistrationError(
        'STATE_NOT_REGISTERED',
        `the changelog(${this.init.innerName}) backend holds restored changes of states not registered again; register them with getState(descriptor) first.`,
      );
    }
    const scratch = memoryCheckpointStorage({ inlineThreshold: 0, maxSnapshotBytes: Number.MAX_SAFE_INTEGER });
    const scratchJob = 'replayed-copy';
    const id = 1;
    const streams = scratch.checkpointStreams(scratchJob, id);
    const pendingNow = this.init.pending.snapshot();
    const task = await this.inner.snapshot(id, { type: 'savepoint', format: 'canonical', streams });
    const handle = await task.done;
    const carried = await this.writeCarried(pendingNow, streams, 'exclusive');
    const restored = this.handleFor(
      Materialization.restored(id, handle === null ? [] : [handle], [carried], false),
      [],
    );
    const files = new BlobStateFileReader(scratch.store, scratch.checkpointPointer(scratchJob, id));
    const copy = await restorePlain(createInner, this.init.innerName, {
      ...params,
      restore: { handles: restored === null ? [] : [restored], files, checkpointId: id },
    });
    try {
      if (copy instanceof ChangelogKeyedStateBackend) {
        for (const name of copy.pendingStateNames()) {
          const meta = copy.pendingStateMeta(name);
          if (meta !== undefined && meta.kind !== 'timers') copy.getState(opaqueDescriptor(meta));
        }
      }
      return await fn(copy);
    } finally {
      await copy.close().catch(() => undefined);
    }
  }
  stateNames(): string[] {
    const names = new Set(this.inner.stateNames());
    for (const n of this.init.pending.names()) if (this.init.pending.get(n)?.meta.kind !== 'timers') names.add(n);
    return [...names];
  }

  /** Names of restored states whose changes wait for registration (replayed by getState/getTimerQueue). */
  pendingStateNames(): string[] {
    return this.init.pending.names();
  }

  /** What the log recorded about a pending state (kind, serializers, TTL): offline tools register it from this. */
  pendingStateMeta(name: string): StateMetaRecord | undefined {
    return this.init.pending.get(name)?.meta;
  }

  // ------------------------------------------------------------------ registration + replay

  getState<D extends StateDescriptor<unknown>>(descriptor: D): StateFor<D> {
    this.checkOpen();
    const d = descriptor as StateDescriptor<unknown>;
    const existing = this.states.get(d.name);
    if (existing !== undefined) {
      if (existing.kind === d.kind) return existing.handle as StateFor<D>;
      this.inner.getState(d); // the wrapped backend reports the mismatch in its words
      throw stateKindMismatch(d.name, existing.kind, d.kind);
    }
    const pending = this.init.pending.get(d.name);
    const userKey = d.kind === 'map' ? d.userKeySerializer : null;
    if (pending !== undefined)
      checkRegistration(
        pending.meta,
        d.kind,
        d.ttl !== undefined,
        d.namespaceSerializer,
        valueSerializerOf(d),
        userKey,
      );
    const hooks = new FunctionHooks();
    const innerDescriptor = hooks.descriptorFor(d);
    const innerHandle = this.inner.getState(innerDescriptor) as unknown as KeyedState<unknown>;
    if (pending !== undefined) {
      this.init.pending.take(d.name);
      this.withKeyRestored(() =>
        replayKeyedState(pending, innerHandle, this, hooks, (meta) =>
          checkRegistration(meta, d.kind, d.ttl !== undefined, d.namespaceSerializer, valueSerializerOf(d), userKey),
        ),
      );
    }
    const handle = this.init.mode === 'passthrough' ? innerHandle : this.wrap(d, innerHandle, hooks);
    this.states.set(d.name, { kind: d.kind, handle, hooks, innerDescriptor });
    return handle as StateFor<D>;
  }

  private wrap(d: StateDescriptor<unknown>, inner: KeyedState<unknown>, hooks: FunctionHooks): KeyedState<unknown> {
    const st = this.loggedState(d.name, metaOf(d), d.ttl);
    switch (d.kind) {
      case 'value':
        return new LoggingValueState(inner as never, st, this, d);
      case 'list':
        return new LoggingListState(inner as never, st, this, d);
      case 'map':
        return new LoggingMapState(inner as never, st, this, d);
      case 'reducing':
      case 'aggregating':
        return new LoggingFoldingState(inner as never, st, this, d, hooks);
    }
  }

  private loggedState(name: string, meta: StateMetaRecord, ttl: StateDescriptor<unknown>['ttl']): LoggedState {
    let st = this.logged.get(name);
    if (st === undefined) this.logged.set(name, (st = loggedStateFor(this.nextStateId++, meta, ttl)));
    return st;
  }

  getTimerQueue<N = string>(name: string, namespaceSerializer?: Serializer<N>): TimerQueue<K, N> {
    this.checkOpen();
    const existing = this.states.get(name);
    if (existing !== undefined) {
      if (existing.kind === 'timers') return existing.handle as TimerQueue<K, N>;
      throw stateKindMismatch(name, existing.kind, 'timers');
    }
    const nsSer = (namespaceSerializer ?? defaultNamespaceSerializer) as Serializer<unknown>;
    const pending = this.init.pending.get(name);
    const readers = pending === undefined ? null : checkRegistration(pending.meta, 'timers', false, nsSer, null, null);
    const inner = this.inner.getTimerQueue<N>(name, namespaceSerializer) as unknown as TimerQueue<unknown, unknown>;
    if (pending !== undefined && readers !== null) {
      this.init.pending.take(name);
      replayTimers(pending, inner, this.keySerializer as Serializer<unknown>, readers.namespace);
    }
    let handle: TimerQueue<unknown, unknown> = inner;
    if (this.init.mode === 'log') {
      const meta: StateMetaRecord = { name, kind: 'timers', namespaceSerializer: snapshotOf(nsSer), ttl: false };
      const keySer = this.keySerializer as Serializer<unknown>;
      const maxP = this.maxParallelism;
      handle = new LoggingTimerQueue(inner, this.loggedState(name, meta, undefined), this, keySer, nsSer, (k) =>
        keyGroupForKey(k, keySer, maxP),
      );
    }
    this.states.set(name, { kind: 'timers', handle, hooks: new FunctionHooks(), innerDescriptor: undefined as never });
    return handle as unknown as TimerQueue<K, N>;
  }

  async applyToAllKeys<D extends StateDescriptor<unknown>>(
    namespace: unknown,
    descriptor: D,
    fn: (key: K, state: StateFor<D>) => void | Promise<void>,
  ): Promise<void> {
    const handle = this.getState(descriptor);
    const reg = this.states.get(descriptor.name) as RegisteredState;
    await this.inner.applyToAllKeys(namespace, reg.innerDescriptor, (key) => fn(key, handle));
  }

  /** Replay moves the current key; put the caller's back afterwards. */
  private withKeyRestored(fn: () => void): void {
    let key: { k: K } | null = null;
    try {
      key = { k: this.inner.getCurrentKey() };
    } catch {
      key = null;
    }
    try {
      fn();
    } finally {
      if (key !== null) this.inner.setCurrentKey(key.k);
    }
  }

  // ReplayCursor
  private replayKeyBytes: Buffer | null = null;
  setKey(keyBytes: Buffer): void {
    if (this.replayKeyBytes !== null && this.replayKeyBytes.equals(keyBytes)) return;
    this.inner.setCurrentKey(this.keySerializer.deserialize(keyBytes));
    this.replayKeyBytes = keyBytes;
  }
  setTime(time: number): void {
    this.init.clock.pinned = time;
    if (Number.isNaN(time)) this.replayKeyBytes = null; // end of a replay run
  }

  // ------------------------------------------------------------------ ChangeSink (hot path)

  time(st: LoggedState): number {
    return st.timed ? this.init.clock.user() : Number.NaN;
  }

  at<T>(time: number, fn: () => T): T {
    if (Number.isNaN(time)) return fn();
    const clock = this.init.clock;
    const prev = clock.pinned;
    clock.pinned = time;
    try {
      return fn();
    } finally {
      clock.pinned = prev;
    }
  }

  begin(st: LoggedState, op: ChangeOpCode, namespace: Uint8Array, time: number): ByteWriter {
    this.ensureMetadata(st);
    return this.builder.begin(op, st.id, this.inner.currentKeyGroup, time, this.keyBytes(), namespace);
  }

  beginFor(st: LoggedState, op: ChangeOpCode, keyGroup: number, key: Uint8Array, namespace: Uint8Array): ByteWriter {
    this.ensureMetadata(st);
    return this.builder.begin(op, st.id, keyGroup, Number.NaN, key, namespace);
  }

  commit(): void {
    this.log.append(this.builder.w.view());
    if (this.log.openBytes >= this.init.settings.preemptivePersistBytes) this.persistEarly();
  }

  private ensureMetadata(st: LoggedState): void {
    if (st.loggedEpoch === this.epoch) return;
    this.log.append(this.builder.metadata(st.id, st.meta).view());
    st.loggedEpoch = this.epoch;
  }

  currentKeyBytes(): Uint8Array {
    return this.keyBytes();
  }

  private keyBytes(): Uint8Array {
    const k = this.inner.getCurrentKey();
    if (this.cachedKeyBytes === null || !Object.is(k, this.cachedKey)) {
      this.cachedKeyBytes = this.keySerializer.serialize(k);
      this.cachedKey = k;
    }
    return this.cachedKeyBytes;
  }

  /** Past the size threshold the tail is uploaded right away, so a checkpoint rarely has to wait for it. */
  private persistEarly(): void {
    const streams = this.init.settings.backgroundStreams;
    if (streams === null || this.closed) return;
    const chunk = this.log.cut();
    if (chunk !== null) {
      this.log.persistEarly(chunk, streams).catch((err: unknown) => {
        this.lastBackgroundError = err; // the next checkpoint retries it
      });
    }
  }

  // ------------------------------------------------------------------ snapshots
  //
  // What a checkpoint may reference (docs/ARCHITECTURE.md, "Files and their lifetime"): files its
  // own streams write, this backend's preemptive uploads (spares: no checkpoint referenced them,
  // nothing but this backend deletes them), and earlier uploads it may reuse:
  //  - with SnapshotOptions.mayReuse, every earlier upload is asked for in the synchronous part, by
  //    its path as it appears in the handle. A materialization is reused only if every one of its
  //    files is; a refused segment copy is uploaded again from memory, and where the bytes are gone
  //    (dropped once a completion notice confirmed a copy) the checkpoint materializes afresh;
  //  - without it, only what completion notices confirmed: the newest notice wins, late,
  //    duplicated and unknown ids (savepoints) are ignored, and an abort of a checkpoint that reused
  //    confirmed uploads without asking withdraws their confirmation (the coordinator declines
  //    exactly when one is gone), so the next checkpoint uploads again or materializes afresh
  //    instead of being declined forever.
  // A materialization is first referenced by the checkpoint that writes it (its asynchronous part
  // waits for the materialization): its files are that checkpoint's own uploads, registered when it
  // completes, deleted by the coordinator when it is aborted or subsumed. Referenced only by later
  // checkpoints, as before, a materialization belonged to nobody: the wrapped backend's reuse was
  // vouched for only until its writer completed (retention then deleted reused table files), and
  // one that no checkpoint referenced stayed in shared/ after close.

  async snapshot(checkpointId: number, options: SnapshotOptions): Promise<SnapshotTask<KeyedStateHandle>> {
    this.checkOpen();
    if (this.init.mode === 'passthrough' || options.type === 'savepoint')
      return this.selfContainedSnapshot(checkpointId, options);
    if (options.full === true) return this.materializingSnapshot(checkpointId, options, true);
    const mayReuse = options.mayReuse;
    const base = this.usableBase(mayReuse);
    if (base === null || this.materializationDue(base)) return this.materializingSnapshot(checkpointId, options, false);
    this.log.cut();
    const planned = this.log.plan(base.seq, mayReuse);
    if (planned === null) return this.materializingSnapshot(checkpointId, options, false);
    const record = this.track(checkpointId, { base, writer: false, verified: mayReuse !== undefined, used: [] });
    // An abort notice discards the segment copies still being written (see notifyCheckpointAborted).
    const streams = new DiscardableStreams(options.streams);
    const background = this.init.settings.backgroundStreams;
    const guarded = this.guard(
      (async () => {
        const settled = await this.log.persistAll(planned, streams, background);
        const used = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
        const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed !== undefined || this.closed || streams.discarded) {
          // Never acknowledged: the coordinator does not know these copies, so they can be reused.
          // Unless the checkpoint was aborted: the coordinator deleted what its streams wrote.
          this.snapshotFailed(checkpointId, record);
          await this.log.giveBack(used, !streams.discarded);
          throw failed !== undefined ? failed.reason : cancelled();
        }
        record.used = used;
        this.log.recordCopies(checkpointId, used);
        return this.handleFor(
          base,
          used.map((u) => u.copy.ref),
        );
      })(),
    );
    return { checkpointId, done: this.flights.track(checkpointId, guarded, () => streams.discardAll()) };
  }

  /**
   * A checkpoint that references a materialization it writes now (and no log): when nothing
   * earlier may be reused, a full snapshot was asked for, or a materialization is due.
   */
  private async materializingSnapshot(
    checkpointId: number,
    options: SnapshotOptions,
    full: boolean,
  ): Promise<SnapshotTask<KeyedStateHandle>> {
    const m = await this.startMaterialization(checkpointId, options, full);
    const record = this.track(checkpointId, { base: m, writer: true, verified: true, used: [] });
    const done = this.guard(
      (async () => {
        try {
          await this.materialized(m);
        } catch (err) {
          this.snapshotFailed(checkpointId, record);
          throw err;
        }
        return this.handleFor(m, []);
      })(),
    );
    return { checkpointId, done };
  }

  /**
   * The newest materialization a checkpoint may build on: with mayReuse, the newest finished one
   * whose every file the coordinator vouches for; without, the one the newest notice confirmed.
   */
  private usableBase(mayReuse: ((path: string) => boolean) | undefined): Materialization | null {
    if (mayReuse === undefined) {
      const m = this.confirmedBase;
      return m !== null && m.shareable && !m.revoked ? m : null;
    }
    for (let i = this.materializations.length - 1; i >= 0; i--) {
      const m = this.materializations[i];
      if (m.revoked || !m.shareable || m.status !== 'done') continue;
      if (referencedFiles([m.handles, m.logs]).every((f) => mayReuse(f.path))) return m;
    }
    return null;
  }

  /** A snapshot that failed before its handle was handed out: forget it; a materialization it wrote is not reused. */
  private snapshotFailed(checkpointId: number, record: CheckpointRecord): void {
    if (this.checkpoints.get(checkpointId) === record) this.checkpoints.delete(checkpointId);
    if (record.writer) record.base.revoked = true;
  }

  /** Ask for a materialization at the next checkpoint, whatever the interval. */
  requestMaterialization(): void {
    this.lastMaterializationAt = Number.NEGATIVE_INFINITY;
  }

  /** The id of the newest finished materialization (0: none). */
  get materializationId(): number {
    return this.materializations.at(-1)?.id ?? 0;
  }

  /** Resolves when the materialization in progress (if any) has ended. */
  async awaitMaterialization(): Promise<void> {
    const m = this.materializing;
    if (m !== null) await this.materialized(m).catch(() => undefined);
  }

  private track(checkpointId: number, record: CheckpointRecord): CheckpointRecord {
    this.checkpoints.set(checkpointId, record);
    // Notices may never come: forget the oldest open checkpoints beyond a bound (as if subsumed).
    while (this.checkpoints.size > MAX_OPEN_CHECKPOINTS) {
      const oldest = Math.min(...this.checkpoints.keys());
      const rec = this.checkpoints.get(oldest)!;
      this.checkpoints.delete(oldest);
      void this.forget(oldest, rec, false).catch(() => undefined);
    }
    return record;
  }

  /** Due when the interval has passed (or one was requested) and something changed since the base. */
  private materializationDue(base: Materialization): boolean {
    if (this.materializing !== null) return false;
    if (this.log.lastSeq <= base.seq) return false; // nothing changed: skip
    if (this.lastMaterializationAt === Number.NEGATIVE_INFINITY) return true;
    const interval = this.init.settings.materializationIntervalMs;
    if (!(interval >= 0) || !Number.isFinite(interval)) return false;
    return this.init.settings.now() - this.lastMaterializationAt >= interval;
  }

  private readonly materializationDone = new WeakMap<Materialization, Promise<void>>();

  private materialized(m: Materialization): Promise<void> {
    return this.materializationDone.get(m) ?? Promise.resolve();
  }

  /**
   * Starts a materialization at the current end of the log (runs in a snapshot's synchronous
   * phase, when the runtime does not touch state), written through checkpoint `id`'s streams (in
   * shared scope: later checkpoints reference it too). The wrapped backend asks the same mayReuse
   * for what it reuses. When it ends it is a candidate base for later checkpoints.
   */
  private async startMaterialization(id: number, options: SnapshotOptions, full: boolean): Promise<Materialization> {
    this.log.cut();
    const m = new Materialization(id, this.log.lastSeq, true, true);
    const pendingNow = this.init.pending.snapshot();
    this.epoch++;
    this.lastMaterializationAt = this.init.settings.now();
    this.materializing = m;
    const streams = options.streams;
    let task: SnapshotTask<KeyedStateHandle>;
    try {
      task = await this.inner.snapshot(id, {
        type: 'checkpoint',
        streams: sharedOnly(streams),
        ...(full ? { full: true } : {}),
        ...(options.mayReuse !== undefined ? { mayReuse: options.mayReuse } : {}),
      });
    } catch (err) {
      if (this.materializing === m) this.materializing = null;
      m.status = 'failed';
      throw err;
    }
    const done = (async () => {
      try {
        const handle = await task.done;
        const carried = pendingNow.length > 0 ? [await this.writeCarried(pendingNow, streams, 'shared')] : [];
        m.handles = handle === null ? [] : [handle];
        m.logs = carried;
        m.status = 'done';
        if (!m.revoked && !this.closed) {
          this.materializations.push(m);
          this.materializations.sort((a, b) => a.id - b.id);
          this.pruneMaterializations();
        }
      } catch (err) {
        m.status = 'failed';
        this.lastBackgroundError = err;
        await this.inner.notifyCheckpointAborted(id).catch(() => undefined);
        throw err;
      } finally {
        if (this.materializing === m) this.materializing = null;
      }
    })();
    done.catch(() => undefined);
    this.materializationDone.set(m, done);
    return m;
  }

  /** Keeps the confirmed base and the few newest candidates (notices may never come: the list must not grow). */
  private pruneMaterializations(): void {
    const keep = 4;
    this.materializations = this.materializations.filter(
      (m, i) =>
        !m.revoked &&
        (m === this.confirmedBase ||
          (i >= this.materializations.length - keep && (this.confirmedBase === null || m.id > this.confirmedBase.id))),
    );
  }

  /** Savepoints (and every snapshot in passthrough mode): the wrapped backend's own snapshot, plus restored changes not yet replayed. */
  private async selfContainedSnapshot(
    checkpointId: number,
    options: SnapshotOptions,
  ): Promise<SnapshotTask<KeyedStateHandle>> {
    // A canonical savepoint is canonical also while restored changes wait: taken from a replayed copy.
    if (options.type === 'savepoint' && options.format === 'canonical' && this.hasPendingKeyedState())
      return this.canonicalFromReplayedCopy(checkpointId, options);
    const pendingNow = this.init.pending.snapshot();
    const task = await this.inner.snapshot(checkpointId, options);
    if (pendingNow.length === 0) return task;
    const done = this.guard(
      (async () => {
        const handle = await task.done;
        const carried = await this.writeCarried(pendingNow, options.streams, 'exclusive');
        const m = Materialization.restored(checkpointId, handle === null ? [] : [handle], [carried], false);
        return this.handleFor(m, []);
      })(),
    );
    return { checkpointId, done };
  }

  /** The canonical savepoint of a replayed copy (see withReplayedCopy). */
  private async canonicalFromReplayedCopy(
    checkpointId: number,
    options: SnapshotOptions,
  ): Promise<SnapshotTask<KeyedStateHandle>> {
    const done = this.guard(this.withReplayedCopy(async (copy) => (await copy.snapshot(checkpointId, options)).done));
    return { checkpointId, done };
  }

  private handleFor(base: Materialization, refs: readonly ChangelogSegmentRef[]): KeyedStateHandle | null {
    const logs = [...base.logs];
    if (refs.length > 0) {
      const s = this.log.settings;
      logs.push({
        ...identityOf(s),
        keyGroupRange: s.keyGroupRange,
        fromSeq: refs[0].fromSeq,
        toSeq: refs[refs.length - 1].toSeq,
        segments: refs,
      });
    }
    if (base.handles.length === 0 && logs.length === 0) return null;
    const handle: ChangelogStateHandle = {
      type: CHANGELOG_HANDLE_TYPE,
      formatVersion: CHANGELOG_HANDLE_VERSION,
      keyGroupRange: this.keyGroupRange.toJSON(),
      maxParallelism: this.maxParallelism,
      keySerializer: snapshotOf(this.keySerializer as Serializer<unknown>),
      backend: this.init.innerName,
      materializationId: base.id,
      materialized: base.handles,
      logs,
    };
    return handle as unknown as KeyedStateHandle;
  }

  /** Writes restored-but-unreplayed changes as a one-segment log of their own. */
  private async writeCarried(
    pending: readonly PendingState[],
    streams: CheckpointStreamFactory,
    scope: StateScope,
  ): Promise<ChangelogLogRef> {
    const builder = new RecordBuilder();
    const body = new ByteWriter();
    const ids = new Map<StateMetaRecord, number>();
    let count = 0;
    for (const p of pending) {
      for (const { meta, rec } of p.records) {
        let id = ids.get(meta);
        if (id === undefined) {
          ids.set(meta, (id = ids.size + 1));
          body.bytes(builder.metadata(id, meta).view());
          count++;
        }
        body.bytes(builder.copy(rec, id).view());
        count++;
      }
    }
    const s = this.log.settings;
    const identity = { ...identityOf(s), logId: randomUUID() };
    const bytes = encodeSegment(
      {
        ...identity,
        maxParallelism: s.maxParallelism,
        keyGroupRange: s.keyGroupRange,
        fromSeq: 1,
        toSeq: count,
        records: count,
      },
      body.view(),
    );
    const file = await writeStream(streams, bytes, this.activeStreams, scope);
    return {
      ...identity,
      keyGroupRange: s.keyGroupRange,
      fromSeq: 1,
      toSeq: count,
      segments: [{ file, fromSeq: 1, toSeq: count }],
    };
  }

  /** Fails a snapshot's `done` with SNAPSHOT_CANCELLED as soon as the backend closes. */
  private guard<T>(p: Promise<T>): Promise<T> {
    const raced = Promise.race([p, this.closedSignal]);
    p.catch(() => undefined);
    return raced;
  }

  // ------------------------------------------------------------------ checkpoint notifications (truncation)

  async notifyCheckpointComplete(checkpointId: number): Promise<void> {
    if (this.init.mode === 'passthrough') return this.inner.notifyCheckpointComplete(checkpointId);
    // Late or duplicated (a newer notice was acted upon), or not ours (a savepoint, an unknown id).
    if (checkpointId <= this.newestNotice) return;
    const rec = this.checkpoints.get(checkpointId);
    if (rec === undefined) return;
    this.newestNotice = checkpointId;
    this.checkpoints.delete(checkpointId);
    // These copies are part of a completed checkpoint now: later checkpoints may reference them.
    for (const u of rec.used)
      if (u.chunk.confirmedBy === null || u.chunk.confirmedBy < checkpointId) u.chunk.confirm(u.copy.ref, checkpointId);
    const m = rec.base;
    if (!m.revoked && m.status === 'done') {
      m.confirmed = true;
      m.confirmedBy = checkpointId;
    }
    // Older checkpoints still open will not complete any more (subsumed, or completed with a lost
    // notice): what they wrote may be gone. (Subsumed is not declined: what they reused stays trusted.)
    for (const [id, older] of [...this.checkpoints]) {
      if (id < checkpointId) {
        this.checkpoints.delete(id);
        await this.forget(id, older, false);
      }
    }
    if (m.confirmed && !m.revoked && (this.confirmedBase === null || m.id > this.confirmedBase.id)) {
      this.confirmedBase = m;
      this.pruneMaterializations();
      // Truncation: checkpoints from now on never reference records before the new base (or materialize afresh).
      await this.log.truncate(m.seq);
      if (m.own) await this.inner.notifyCheckpointComplete(m.id);
    }
  }

  async notifyCheckpointAborted(checkpointId: number): Promise<void> {
    if (this.init.mode === 'passthrough') return this.inner.notifyCheckpointAborted(checkpointId);
    const rec = this.checkpoints.get(checkpointId);
    if (rec !== undefined) {
      this.checkpoints.delete(checkpointId);
      await this.forget(checkpointId, rec, true);
    }
    // Aborted after a completion notice (conflicting notices): trust neither.
    for (const c of this.log.confirmedBy(checkpointId)) c.unconfirm();
    const base = this.confirmedBase;
    if (base !== null && base.confirmedBy === checkpointId) await this.distrust(base);
    // A log-only snapshot of this id still writing stops (a materializing one stopped with the wrapped backend, above).
    await this.flights.cancel(checkpointId);
  }

  /**
   * A checkpoint that was aborted or subsumed: the coordinator deleted the files it wrote. A
   * materialization it wrote is not reused. If it was aborted and reused confirmed uploads without
   * asking mayReuse, the abort may be the coordinator declining it because one of them is gone: their
   * confirmation is withdrawn (segment copies are uploaded again, or the next checkpoint
   * materializes afresh).
   */
  private async forget(checkpointId: number, rec: CheckpointRecord, aborted: boolean): Promise<void> {
    this.log.forgetCopies(checkpointId);
    if (rec.writer) {
      if (!rec.base.confirmed) {
        rec.base.revoked = true;
        if (aborted) this.requestMaterialization(); // try again at the next checkpoint
        if (rec.base.own) await this.inner.notifyCheckpointAborted(rec.base.id).catch(() => undefined);
      }
      return;
    }
    if (rec.verified || !aborted) return;
    for (const u of rec.used) if (u.confirmed && u.chunk.ref === u.copy.ref) u.chunk.unconfirm();
    if (rec.base.confirmed) await this.distrust(rec.base);
  }

  /** A materialization whose files may be gone: not reused again; its wrapped backend drops it as its base. */
  private async distrust(m: Materialization): Promise<void> {
    if (m.isEmpty && m.id === 0) return; // nothing to lose: no files
    m.revoked = true;
    if (this.confirmedBase === m) this.confirmedBase = null;
    this.materializations = this.materializations.filter((x) => x !== m);
    if (m.own) await this.inner.notifyCheckpointAborted(m.id).catch(() => undefined);
  }

  // ------------------------------------------------------------------ life cycle

  private checkOpen(): void {
    if (this.closed) {
      throw backendClosedError(`the changelog(${this.init.innerName}) keyed backend`);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.rejectClosed(cancelled());
    const streams = [...this.activeStreams];
    this.activeStreams.clear();
    // The log also deletes its spare copies (uploaded early, referenced by no checkpoint).
    await Promise.allSettled([this.log.close(), ...streams.map((s) => s.discard())]);
    await this.inner.close();
  }
}

function identityOf(s: ChangelogLogIdentity): ChangelogLogIdentity {
  return { logId: s.logId, jobId: s.jobId, operatorId: s.operatorId, subtaskIndex: s.subtaskIndex, backend: s.backend };
}

/** Meta record of a user descriptor (user-level serializers, ttl flag). */
export function metaOf(d: StateDescriptor<unknown>): StateMetaRecord {
  const base = {
    name: d.name,
    kind: d.kind,
    namespaceSerializer: snapshotOf(d.namespaceSerializer),
    ttl: d.ttl !== undefined,
  };
  const value = snapshotOf(valueSerializerOf(d));
  return d.kind === 'map'
    ? { ...base, valueSerializer: value, userKeySerializer: snapshotOf(d.userKeySerializer) }
    : { ...base, valueSerializer: value };
}

/** Checkpoints remembered while no notice comes for them. */
const MAX_OPEN_CHECKPOINTS = 64;

/** A stream factory that writes everything to shared scope (materializations outlive one checkpoint). */
export function sharedOnly(streams: CheckpointStreamFactory): CheckpointStreamFactory {
  return {
    createOutputStream: () => streams.createOutputStream('shared'),
    uploadFile: (localPath, _scope, name) => streams.uploadFile(localPath, 'shared', name),
    discardFiles: (files) => streams.discardFiles(files),
  };
}
