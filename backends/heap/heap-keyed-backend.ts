import type {
  KeyedBackendParams,
  KeyedStateBackend,
  SnapshotOptions,
  SnapshotTask,
} from '../../src/backend/contract.js';
import type { KeyedStateHandle, KeyedStateMetaInfo } from '../../src/backend/handles.js';
import { SnapshotFlights } from '../../src/backend/snapshot-flights.js';
import {
  keyGroupForBytes,
  keyGroupForKey,
  keyOutOfRange,
  nullKey,
  readerForRecorded,
  stateKindMismatch,
  ttlMismatch,
} from '../../src/backend/keyed-rules.js';
import { SnapshotError, StateRegistrationError, StreamStateError } from '../../src/errors.js';
import {
  CANONICAL_LAYOUT,
  countSectionEntries,
  entryKindOf,
  HEAP_LAYOUT,
  listEntries,
  mapEntries,
  MAX_STATE_ID,
  valueEntries,
} from '../../src/format/key-groups-stream.js';
import { KeyGroupRange } from '../../src/keygroups/key-groups.js';
import { defaultNamespaceSerializer, restoredNamespaceSerializer } from '../../src/serializers/builtins.js';
import { snapshotOf, type Serializer, type SerializerSnapshot } from '../../src/serializers/serializer.js';
import type { StateDescriptor, StateKind, TtlConfig } from '../../src/state/descriptors.js';
import { createTtlState, ttlInnerDescriptor } from '../../src/state/ttl.js';
import type { KeyedState, StateFor, TimerQueue } from '../../src/state/types.js';
import { SnapshotRun } from './cow.js';
import { IdCodec, latin1 } from './ids.js';
import { backendClosed, KeyContext, noCurrentKey } from './key-context.js';
import { readRestoredStates, type RestoredState, type RestoredStates } from './restore.js';
import { writeHeapSnapshot, type SnapshotPart, type SnapshotPlan } from './snapshot.js';
import { StateTable, type StateSerializers } from './state-table.js';
import { makeHeapState } from './make-state.js';
import { HeapTimerQueue } from './timers.js';
import { IncrementalTtlCleanup } from './ttl-cleanup.js';
import type { SnapshotSlicing } from './time-slicer.js';

export interface HeapBackendTuning {
  /** Snapshot bytes buffered before each write to the checkpoint stream (a positive integer). Default 1 MiB. */
  readonly snapshotChunkBytes?: number;
  /**
   * How a snapshot's asynchronous part shares the thread with record processing: slice length
   * and CPU share (defaults: 4 ms, 0.1). See docs/ARCHITECTURE.md, "Heap snapshots that do not stall processing".
   */
  readonly snapshotSlicing?: SnapshotSlicing;
}

interface Registered {
  descriptor: StateDescriptor<unknown>;
  readonly handle: KeyedState<unknown>;
  readonly table: StateTable;
  readonly kind: StateKind;
  readonly ttl: boolean;
}

function serializersOf(d: StateDescriptor<unknown>): StateSerializers {
  const namespace = d.namespaceSerializer as Serializer<unknown>;
  switch (d.kind) {
    case 'value':
    case 'reducing':
      return { namespace, value: d.serializer };
    case 'list':
      return { namespace, value: d.elementSerializer };
    case 'aggregating':
      return { namespace, value: d.accumulatorSerializer };
    case 'map':
      return { namespace, value: d.valueSerializer, userKey: d.userKeySerializer };
  }
}

/** Recorded serializer → the one to read with (migration allowed); SERIALIZER_INCOMPATIBLE otherwise. */
function checkCompatible(
  state: string,
  what: string,
  previous: SerializerSnapshot | undefined,
  current: Serializer<unknown>,
): Serializer<unknown> {
  return readerForRecorded(`state "${state}"`, what, previous, current);
}

/**
 * The heap keyed state backend: live JS objects in per-key-group tables, copy-on-write
 * asynchronous snapshots in the key-groups stream format (layout heap-v1).
 */
export class HeapKeyedStateBackend<K> implements KeyedStateBackend<K> {
  readonly keyGroupRange: KeyGroupRange;
  readonly maxParallelism: number;
  readonly keySerializer: Serializer<K>;
  private readonly ctx = new KeyContext<K>();
  private readonly keyCodec: IdCodec<K>;
  private readonly rangeSize: number;
  private readonly clock: () => number;
  private readonly states = new Map<string, Registered>();
  private readonly timerQueues = new Map<string, HeapTimerQueue<K, unknown>>();
  private readonly flights = new SnapshotFlights('the keyed backend');
  /** Incremental TTL cleanups that also run once per record (setCurrentKey). */
  private readonly perRecordCleanups: IncrementalTtlCleanup[] = [];
  private closed = false;

  /** Creates a backend, restoring from `params.restore` when given. A failed restore leaves nothing open. */
  static async create<K>(
    params: KeyedBackendParams<K>,
    tuning: HeapBackendTuning = {},
  ): Promise<HeapKeyedStateBackend<K>> {
    const restored = await readRestoredStates(params);
    return new HeapKeyedStateBackend(params, restored, tuning);
  }

  private constructor(
    params: KeyedBackendParams<K>,
    private readonly restored: RestoredStates,
    private readonly tuning: HeapBackendTuning,
  ) {
    this.keyGroupRange = KeyGroupRange.of(params.keyGroupRange);
    this.maxParallelism = params.maxParallelism;
    this.keySerializer = params.keySerializer;
    this.keyCodec = new IdCodec(params.keySerializer);
    this.rangeSize = this.keyGroupRange.size;
    this.clock = params.clock ?? Date.now;
    if (this.keyGroupRange.end >= this.maxParallelism) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `key-group range ${this.keyGroupRange} does not fit maxParallelism ${this.maxParallelism}`,
      );
    }
  }

  // ------------------------------------------------------------------------------ current key

  setCurrentKey(key: K): void {
    if (this.closed) this.throwClosed();
    if (key === null || key === undefined) throw nullKey();
    this.resolveKey(key, this.ctx);
    this.ctx.key = key;
    const cleanups = this.perRecordCleanups;
    for (let c = 0; c < cleanups.length; c++) cleanups[c].step();
  }

  /** Computes the key's id and key group into `out` (no allocation: this runs once per record). */
  private resolveKey(key: K, out: { keyId: unknown; keyGroup: number; kgIdx: number }): void {
    const s = this.keySerializer;
    let kg: number;
    let keyId: unknown;
    if (this.keyCodec.identity) {
      // id() canonicalizes the few values whose JS equality differs from byte equality.
      keyId = this.keyCodec.id(key);
      kg = keyGroupForKey(key, s, this.maxParallelism);
    } else {
      const bytes = s.serialize(key);
      keyId = latin1(bytes);
      kg = keyGroupForBytes(bytes, this.maxParallelism);
    }
    const i = kg - this.keyGroupRange.start;
    if (i < 0 || i >= this.rangeSize) throw keyOutOfRange(key, kg, this.keyGroupRange);
    out.keyId = keyId;
    out.keyGroup = kg;
    out.kgIdx = i;
  }

  getCurrentKey(): K {
    if (this.ctx.kgIdx < 0) noCurrentKey(this.ctx);
    return this.ctx.key as K;
  }

  get currentKeyGroup(): number {
    if (this.ctx.kgIdx < 0) noCurrentKey(this.ctx);
    return this.ctx.keyGroup;
  }

  private throwClosed(): never {
    backendClosed();
  }

  /** Key-group index and id of any key (timers carry their own key). */
  private readonly locate = (key: K): { kgIdx: number; keyId: unknown } => {
    const c = this.ctx;
    if (key === c.key && c.kgIdx >= 0) return { kgIdx: c.kgIdx, keyId: c.keyId };
    const r = { keyId: undefined as unknown, keyGroup: -1, kgIdx: -1 };
    this.resolveKey(key, r);
    return r;
  };

  // ------------------------------------------------------------------------------ registration

  getState<D extends StateDescriptor<unknown>>(descriptor: D): StateFor<D> {
    if (this.closed) this.throwClosed();
    const d = descriptor as StateDescriptor<unknown>;
    const reg = this.states.get(d.name);
    if (reg !== undefined) {
      if (reg.descriptor !== d) this.reRegister(reg, d);
      return reg.handle as StateFor<D>;
    }
    let table: StateTable | undefined;
    const register = (inner: StateDescriptor<unknown>, ttl: TtlConfig | undefined): KeyedState<unknown> => {
      const [t, h] = this.registerTable(inner, ttl);
      table = t;
      return h;
    };
    let cleanup: IncrementalTtlCleanup | undefined;
    const handle =
      d.ttl !== undefined
        ? createTtlState(d, (inner) => register(inner, d.ttl), this.clock, {
            afterAccess: () => cleanup?.step(),
            currentKey: () => this.ctx.keyId,
          })
        : register(d, undefined);
    const incremental = d.ttl?.cleanupIncrementally;
    if (incremental !== undefined && incremental !== false && d.ttl !== undefined) {
      cleanup = new IncrementalTtlCleanup(table!, d.ttl, incremental.entries, this.clock);
      if (incremental.everyRecord === true) this.perRecordCleanups.push(cleanup);
    }
    this.states.set(d.name, { descriptor: d, handle, table: table!, kind: d.kind, ttl: d.ttl !== undefined });
    return handle as StateFor<D>;
  }

  private reRegister(reg: Registered, d: StateDescriptor<unknown>): void {
    if (reg.kind !== d.kind) {
      throw stateKindMismatch(d.name, reg.kind, d.kind);
    }
    if (reg.ttl !== (d.ttl !== undefined)) throw ttlMismatch(d.name, reg.ttl);
    const ser = serializersOf(d.ttl !== undefined ? ttlInnerDescriptor(d) : d);
    const t = reg.table;
    checkCompatible(d.name, 'namespace', snapshotOf(t.nsCodec.serializer), ser.namespace);
    checkCompatible(d.name, 'value', snapshotOf(t.valueSerializer), ser.value);
    if (ser.userKey && t.userKeyCodec)
      checkCompatible(d.name, 'map key', snapshotOf(t.userKeyCodec.serializer), ser.userKey);
    t.updateSerializers(ser);
    reg.descriptor = d;
  }

  private registerTable(d: StateDescriptor<unknown>, ttl: TtlConfig | undefined): [StateTable, KeyedState<unknown>] {
    const ser = serializersOf(d);
    const table = new StateTable(this.rangeSize, d.name, d.kind, this.keyCodec as IdCodec<unknown>, ser, ttl);
    const restored = this.restored.states.get(d.name);
    if (restored !== undefined) {
      this.loadRestored(restored, d, ser, ttl, table);
      this.restored.states.delete(d.name);
    }
    return [table, makeHeapState(this.ctx as KeyContext<unknown>, table, d)];
  }

  private loadRestored(
    restored: RestoredState,
    d: StateDescriptor<unknown>,
    ser: StateSerializers,
    ttl: TtlConfig | undefined,
    table: StateTable,
  ): void {
    const meta = restored.meta;
    if (meta.kind !== d.kind) {
      throw stateKindMismatch(d.name, meta.kind, d.kind);
    }
    if (meta.ttl !== (ttl !== undefined)) throw ttlMismatch(d.name, meta.ttl);
    const readers: StateSerializers = {
      namespace: checkCompatible(d.name, 'namespace', meta.namespaceSerializer, ser.namespace),
      value: checkCompatible(d.name, 'value', meta.valueSerializer, ser.value),
      ...(ser.userKey ? { userKey: checkCompatible(d.name, 'map key', meta.userKeySerializer, ser.userKey) } : {}),
    };
    const what = `restored state "${d.name}"`;
    for (const [i, sections] of restored.sections) for (const s of sections) table.loadSection(s, i, readers, what);
  }

  getTimerQueue<N = string>(name: string, namespaceSerializer?: Serializer<N>): TimerQueue<K, N> {
    if (this.closed) this.throwClosed();
    const existing = this.timerQueues.get(name);
    if (existing !== undefined) return existing as unknown as TimerQueue<K, N>;
    const nsSer = (namespaceSerializer ?? defaultNamespaceSerializer) as Serializer<unknown>;
    const q = new HeapTimerQueue<K, unknown>(
      this.rangeSize,
      name,
      this.keyCodec,
      nsSer,
      this.locate,
      this.keyGroupRange.start,
      () => {
        if (this.closed) this.throwClosed();
      },
    );
    const restored = this.restored.timers.get(name);
    if (restored !== undefined) {
      const reader = checkCompatible(`timers ${name}`, 'namespace', restored.meta.namespaceSerializer, nsSer);
      for (const [i, sections] of restored.sections)
        for (const s of sections) q.loadSection(s, i, reader, `restored timer queue "${name}"`);
      this.restored.timers.delete(name);
    }
    this.timerQueues.set(name, q);
    return q as unknown as TimerQueue<K, N>;
  }

  // ------------------------------------------------------------------------------ queries

  private tableOf(stateName: string): StateTable | RestoredState {
    const reg = this.states.get(stateName);
    if (reg !== undefined) return reg.table;
    const restored = this.restored.states.get(stateName);
    if (restored !== undefined) return restored;
    throw new StateRegistrationError(
      'STATE_NOT_REGISTERED',
      `no keyed state named "${stateName}" is registered or restored; register it with getState(descriptor).`,
    );
  }

  /** Keys and namespaces of a restored state not registered yet, decoded from its raw sections. */
  private rawKeysAndNamespaces(r: RestoredState): Array<[K, Buffer]> {
    const kind = entryKindOf(r.meta.kind);
    const out: Array<[K, Buffer]> = [];
    const what = `restored state "${r.meta.name}"`;
    for (const sections of r.sections.values()) {
      for (const s of sections) {
        const entries =
          kind === 'list' ? listEntries(s, what) : kind === 'map' ? mapEntries(s, what) : valueEntries(s, what);
        for (const e of entries)
          out.push([this.keyCodec.value(this.keyCodec.idFromBytes(e.key, this.keySerializer)), e.namespace]);
      }
    }
    return out;
  }

  /** The serializer that decodes a restored state's namespaces without its descriptor (built-ins only). */
  private rawNamespaceSerializer(r: RestoredState): Serializer<unknown> {
    return restoredNamespaceSerializer(r.meta.name, r.meta.namespaceSerializer);
  }

  async *getKeys<N>(stateName: string, namespace: N): AsyncIterable<K> {
    if (this.closed) this.throwClosed();
    const t = this.tableOf(stateName);
    // Collected first, so callers may modify state while iterating.
    const keys: K[] = [];
    if (t instanceof StateTable) {
      const nsId = t.nsCodec.id(namespace);
      for (let i = 0; i < this.rangeSize; i++) {
        const inner = t.slots[i]?.get(nsId);
        if (inner !== undefined) for (const keyId of inner.keys()) keys.push(this.keyCodec.value(keyId));
      }
    } else {
      const nsBytes = Buffer.from(this.rawNamespaceSerializer(t).serialize(namespace));
      for (const [k, ns] of this.rawKeysAndNamespaces(t)) if (ns.equals(nsBytes)) keys.push(k);
    }
    yield* keys;
  }

  async *getKeysAndNamespaces<N>(stateName: string): AsyncIterable<[K, N]> {
    if (this.closed) this.throwClosed();
    const t = this.tableOf(stateName);
    const out: [K, N][] = [];
    if (t instanceof StateTable) {
      for (let i = 0; i < this.rangeSize; i++) {
        const slot = t.slots[i];
        if (slot === undefined) continue;
        for (const [nsId, inner] of slot) {
          const ns = t.nsCodec.value(nsId) as N;
          for (const keyId of inner.keys()) out.push([this.keyCodec.value(keyId), ns]);
        }
      }
    } else {
      const nsSer = this.rawNamespaceSerializer(t);
      for (const [k, ns] of this.rawKeysAndNamespaces(t)) out.push([k, nsSer.deserialize(ns) as N]);
    }
    yield* out;
  }

  async applyToAllKeys<D extends StateDescriptor<unknown>>(
    namespace: unknown,
    descriptor: D,
    fn: (key: K, state: StateFor<D>) => void | Promise<void>,
  ): Promise<void> {
    if (this.closed) this.throwClosed();
    const state = this.getState(descriptor) as KeyedState<unknown>;
    const keys: K[] = [];
    for await (const k of this.getKeys(descriptor.name, namespace)) keys.push(k);
    const previousNs = state.getCurrentNamespace();
    const previousKey = this.ctx.kgIdx >= 0 ? this.ctx.key : undefined;
    state.setCurrentNamespace(namespace);
    try {
      for (const key of keys) {
        this.setCurrentKey(key);
        await fn(key, state as StateFor<D>);
      }
    } finally {
      state.setCurrentNamespace(previousNs);
      if (previousKey !== undefined && !this.closed) this.setCurrentKey(previousKey as K);
    }
  }

  stateNames(): string[] {
    if (this.closed) this.throwClosed();
    return [...this.states.keys(), ...this.restored.states.keys()];
  }

  async numEntries(): Promise<number> {
    if (this.closed) this.throwClosed();
    let n = 0;
    for (const reg of this.states.values()) n += reg.table.countEntries();
    for (const r of this.restored.states.values()) {
      const kind = entryKindOf(r.meta.kind);
      for (const sections of r.sections.values()) for (const s of sections) n += countSectionEntries(s, kind);
    }
    return n;
  }

  // ------------------------------------------------------------------------------ snapshots

  async snapshot(checkpointId: number, options: SnapshotOptions): Promise<SnapshotTask<KeyedStateHandle>> {
    // A snapshot requested after close() is a call on a closed backend; one in flight at close() is cancelled.
    if (this.closed) this.throwClosed();
    // ---- synchronous part: register undo logs, capture meta infos. Copies no state.
    const canonical = options.format === 'canonical';
    const run = new SnapshotRun(this.rangeSize);
    const now = this.clock();
    interface Candidate {
      readonly name: string;
      readonly meta: (stateId: number) => KeyedStateMetaInfo;
      readonly part: (stateId: number) => SnapshotPart;
    }
    const candidates: Candidate[] = [];
    for (const reg of this.states.values()) {
      const t = reg.table;
      const frame = run.cover(t);
      const kind = entryKindOf(t.kind);
      candidates.push({
        name: t.name,
        meta: (id) => t.metaInfo(id),
        part: (stateId) => ({
          stateId,
          kind,
          write: (i, out) => t.writeSection(frame, i, out, now),
          open: (i, refs) => t.openSection(frame, i, now, refs),
        }),
      });
    }
    for (const restored of [...this.restored.states.values(), ...this.restored.timers.values()]) {
      const kind = entryKindOf(restored.meta.kind);
      candidates.push({
        name: restored.meta.name,
        meta: (stateId) => ({ ...restored.meta, stateId }),
        part: (stateId) => ({ stateId, kind, write: (i) => restored.sections.get(i) ?? [] }),
      });
    }
    for (const q of this.timerQueues.values()) {
      const frame = run.cover(q);
      candidates.push({
        name: q.name,
        meta: (id) => q.metaInfo(id),
        part: (stateId) => ({ stateId, kind: 'timers', write: (i, out) => q.writeSection(frame, i, out) }),
      });
    }
    if (candidates.length > MAX_STATE_ID + 1) {
      run.release();
      throw new SnapshotError(
        'SNAPSHOT_FAILED',
        `too many keyed states (${candidates.length}); at most ${MAX_STATE_ID + 1} fit in one snapshot.`,
      );
    }
    // Canonical savepoints order states by name (stable: a state and a timer queue may share a name).
    if (canonical) candidates.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (candidates.length === 0) {
      run.release();
      return { checkpointId, done: Promise.resolve(null) };
    }
    const plan: SnapshotPlan = {
      run,
      canonical,
      header: {
        layout: canonical ? CANONICAL_LAYOUT : HEAP_LAYOUT,
        keySerializer: snapshotOf(this.keySerializer as Serializer<unknown>),
        maxParallelism: this.maxParallelism,
        keyGroupRange: this.keyGroupRange.toJSON(),
        states: candidates.map((c, id) => c.meta(id)),
      },
      rangeStart: this.keyGroupRange.start,
      rangeSize: this.rangeSize,
      parts: candidates.map((c, id) => c.part(id)),
    };
    let stream;
    try {
      stream = options.streams.createOutputStream('exclusive');
    } catch (err) {
      run.release();
      throw err;
    }
    // ---- asynchronous part. A cancellation (close, abort notice) rejects `done` at once and
    // discards the stream; the writer stops at its next await.
    const work = writeHeapSnapshot(
      checkpointId,
      plan,
      stream,
      () => run.cancelled,
      this.tuning.snapshotChunkBytes,
      this.tuning.snapshotSlicing,
    );
    const done = this.flights.track(checkpointId, work, async () => {
      run.cancelled = true;
      await stream.discard().catch(() => undefined);
      run.release();
    });
    return { checkpointId, done };
  }

  async notifyCheckpointComplete(_checkpointId: number): Promise<void> {
    // Full snapshots: nothing is shared between checkpoints.
  }

  async notifyCheckpointAborted(checkpointId: number): Promise<void> {
    await this.flights.cancel(checkpointId);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.flights.cancelAll();
    this.states.clear();
    this.timerQueues.clear();
    this.restored.states.clear();
    this.restored.timers.clear();
    this.perRecordCleanups.length = 0;
    this.ctx.kgIdx = -1;
    this.ctx.closed = true;
  }
}
