import type { KeyedStateHandle, KeyedStateMetaInfo, OperatorStateHandle } from '../backend/handles.js';
import type { CheckpointMetadata, OperatorSnapshot, SubtaskStateSnapshot } from '../checkpoint/metadata.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StreamStateError } from '../errors.js';
import { ByteReader, ByteWriter } from '../format/bytes.js';
import { randomHex } from '../storage/blob-names.js';
import { CANONICAL_LAYOUT, SectionWriter } from '../format/key-groups-stream.js';
import {
  checkParallelism,
  defaultMaxParallelism,
  keyGroupForBytes,
  keyGroupRangeForSubtask,
  checkMaxParallelism,
} from '../keygroups/key-groups.js';
import { CanonicalKeyGroupsWriter } from '../format/canonical-layout.js';
import { defaultNamespaceSerializer, VOID_NAMESPACE } from '../serializers/builtins.js';
import { snapshotOf, type Serializer, type SerializerSnapshot } from '../serializers/serializer.js';
import type {
  AggregatingStateDescriptor,
  ListStateDescriptor,
  MapStateDescriptor,
  ReducingStateDescriptor,
  StateDescriptor,
  ValueStateDescriptor,
} from '../state/descriptors.js';
import { ttlSerializer } from '../state/ttl.js';
import { OperatorStreamWriter, type writeOperatorStream } from './operator-stream-writer.js';
import { writeSavepoint, type SavepointOutputOptions } from './savepoint-output.js';
import { KeyGroupRuns, type KeyGroupRecord } from './key-group-runs.js';

/**
 * The bootstrap side of the State Processor API: a new canonical savepoint from iterables, for
 * chosen operators, states, parallelism and max parallelism. A job restores it like any
 * savepoint. Entries are spooled by key group (KeyGroupRuns: in memory up to
 * BootstrapOptions.memoryBytes, beyond it in run files in the temporary directory), then merged
 * one key group at a time (the same (key, namespace) given twice: the last value wins, list
 * elements are appended, map entries merged) and written canonically (src/format/canonical-layout.ts),
 * so the bytes equal what any backend would write for that state.
 */

/** Entries in any order, synchronous or asynchronous. */
export type Entries<T> = Iterable<T> | AsyncIterable<T>;

/** The `namespace` may be left out: then the void namespace "" (the state's namespace serializer must take strings). */
export interface ValueInput<K, N, V> {
  readonly key: K;
  readonly namespace?: N;
  /** value and reducing states: the value; aggregating states: the accumulator (what the format stores). */
  readonly value: V;
}
export interface ListInput<K, N, V> {
  readonly key: K;
  readonly namespace?: N;
  readonly value: readonly V[];
}
export interface MapInput<K, N, UK, UV> {
  readonly key: K;
  readonly namespace?: N;
  readonly userKey: UK;
  readonly value: UV | null;
}
export interface TimerInput<K, N> {
  readonly key: K;
  readonly namespace?: N;
  readonly timestamp: number;
}

/** Raw entries of one state handed to the collector (which may spill to disk: await what it returns). */
interface RawSink {
  value(key: Uint8Array, ns: Uint8Array, value: Uint8Array): Promise<void>;
  list(key: Uint8Array, ns: Uint8Array, elements: Uint8Array[]): Promise<void>;
  map(key: Uint8Array, ns: Uint8Array, userKey: Uint8Array, value: Uint8Array | null): Promise<void>;
  timer(key: Uint8Array, ns: Uint8Array, timestamp: number): Promise<void>;
}

/** One keyed state (or timer queue) to bootstrap: built by keyedValues, keyedLists, keyedMaps, keyedTimers. */
export interface KeyedStateInput<K> {
  readonly name: string;
  readonly kind: KeyedStateMetaInfo['kind'];
  /** Meta info without the state id. */
  meta(): Omit<KeyedStateMetaInfo, 'stateId'>;
  feed(keySerializer: Serializer<K>, sink: RawSink, ttlTimestamp: number): Promise<void>;
}

function ns<N>(s: Serializer<N>, n: N | undefined): Uint8Array {
  return s.serialize(n === undefined ? (VOID_NAMESPACE as N) : n);
}

function ttlWrap<T>(serializer: Serializer<T>, ttl: boolean, ts: number): (v: T) => Uint8Array {
  if (!ttl) return (v) => serializer.serialize(v);
  const wrapped = ttlSerializer(serializer);
  return (v) => wrapped.serialize({ v, ts });
}

function baseMeta(
  d: StateDescriptor<unknown>,
): Pick<KeyedStateMetaInfo, 'name' | 'kind' | 'namespaceSerializer' | 'ttl'> {
  return {
    name: d.name,
    kind: d.kind,
    namespaceSerializer: snapshotOf(d.namespaceSerializer as Serializer<unknown>),
    ttl: d.ttl !== undefined,
  };
}

function valueSnapshot(s: Serializer<unknown>, ttl: boolean): SerializerSnapshot {
  return ttl ? snapshotOf(ttlSerializer(s) as Serializer<unknown>) : snapshotOf(s);
}

async function each<T>(entries: Entries<T>, fn: (e: T) => Promise<void>): Promise<void> {
  for await (const e of entries) await fn(e);
}

/** Entries of a value or reducing state (the stored value) or an aggregating state (the stored accumulator). */
export function keyedValues<K, V, N = string>(
  descriptor:
    | ValueStateDescriptor<V, N>
    | ReducingStateDescriptor<V, N>
    | AggregatingStateDescriptor<unknown, V, unknown, N>,
  entries: Entries<ValueInput<K, N, V>>,
): KeyedStateInput<K> {
  const serializer = (
    descriptor.kind === 'aggregating' ? descriptor.accumulatorSerializer : descriptor.serializer
  ) as Serializer<V>;
  const ttl = descriptor.ttl !== undefined;
  return {
    name: descriptor.name,
    kind: descriptor.kind,
    meta: () => ({
      ...baseMeta(descriptor as StateDescriptor<unknown>),
      valueSerializer: valueSnapshot(serializer as Serializer<unknown>, ttl),
    }),
    feed: (ks, sink, ts) => {
      const write = ttlWrap(serializer, ttl, ts);
      return each(entries, (e) =>
        sink.value(ks.serialize(e.key), ns(descriptor.namespaceSerializer, e.namespace), write(e.value)),
      );
    },
  };
}

/** Entries of a list state: each (key, namespace) with its elements. */
export function keyedLists<K, V, N = string>(
  descriptor: ListStateDescriptor<V, N>,
  entries: Entries<ListInput<K, N, V>>,
): KeyedStateInput<K> {
  const ttl = descriptor.ttl !== undefined;
  return {
    name: descriptor.name,
    kind: 'list',
    meta: () => ({
      ...baseMeta(descriptor as StateDescriptor<unknown>),
      valueSerializer: valueSnapshot(descriptor.elementSerializer as Serializer<unknown>, ttl),
    }),
    feed: (ks, sink, ts) => {
      const write = ttlWrap(descriptor.elementSerializer, ttl, ts);
      return each(entries, (e) =>
        sink.list(ks.serialize(e.key), ns(descriptor.namespaceSerializer, e.namespace), e.value.map(write)),
      );
    },
  };
}

/** Entries of a map state, one per (key, namespace, user key). */
export function keyedMaps<K, UK, UV, N = string>(
  descriptor: MapStateDescriptor<UK, UV, N>,
  entries: Entries<MapInput<K, N, UK, UV>>,
): KeyedStateInput<K> {
  const ttl = descriptor.ttl !== undefined;
  return {
    name: descriptor.name,
    kind: 'map',
    meta: () => ({
      ...baseMeta(descriptor as StateDescriptor<unknown>),
      valueSerializer: valueSnapshot(descriptor.valueSerializer as Serializer<unknown>, ttl),
      userKeySerializer: snapshotOf(descriptor.userKeySerializer as Serializer<unknown>),
    }),
    feed: (ks, sink, ts) => {
      const write = ttlWrap(descriptor.valueSerializer, ttl, ts);
      return each(entries, (e) =>
        sink.map(
          ks.serialize(e.key),
          ns(descriptor.namespaceSerializer, e.namespace),
          descriptor.userKeySerializer.serialize(e.userKey),
          e.value === null ? null : write(e.value),
        ),
      );
    },
  };
}

/** Timers of a timer queue (`keyed.getTimerQueue(name)`); namespaces are strings unless a serializer is given. */
export function keyedTimers<K, N = string>(
  name: string,
  entries: Entries<TimerInput<K, N>>,
  opts: { readonly namespaceSerializer?: Serializer<N> } = {},
): KeyedStateInput<K> {
  const nsSerializer = opts.namespaceSerializer ?? (defaultNamespaceSerializer as unknown as Serializer<N>);
  return {
    name,
    kind: 'timers',
    meta: () => ({
      name,
      kind: 'timers',
      namespaceSerializer: snapshotOf(nsSerializer as Serializer<unknown>),
      ttl: false,
    }),
    feed: (ks, sink) =>
      each(entries, (e) => {
        if (!Number.isFinite(e.timestamp))
          throw new StreamStateError(
            'INVALID_ARGUMENT',
            `timer queue "${name}": timestamp ${e.timestamp} is not a finite number.`,
          );
        return sink.timer(ks.serialize(e.key), ns(nsSerializer, e.namespace), e.timestamp);
      }),
  };
}

/** Operator state to bootstrap. Split elements are spread round-robin over the subtasks; union elements are stored once (every subtask gets all on restore); broadcast entries are stored by every subtask. */
export type OperatorStateInput =
  | {
      readonly name: string;
      readonly mode: 'split' | 'union';
      readonly serializer: Serializer<unknown>;
      readonly elements: Entries<unknown>;
    }
  | {
      readonly name: string;
      readonly mode: 'broadcast';
      readonly keySerializer: Serializer<unknown>;
      readonly valueSerializer: Serializer<unknown>;
      readonly entries: Entries<readonly [unknown, unknown]>;
    };

/** A split (or union) list operator state, typed. */
export function operatorList<T>(
  name: string,
  serializer: Serializer<T>,
  elements: Entries<T>,
  mode: 'split' | 'union' = 'split',
): OperatorStateInput {
  return { name, mode, serializer: serializer as Serializer<unknown>, elements: elements as Entries<unknown> };
}

/** A broadcast operator state, typed. */
export function broadcastEntries<BK, BV>(
  name: string,
  keySerializer: Serializer<BK>,
  valueSerializer: Serializer<BV>,
  entries: Entries<readonly [BK, BV]>,
): OperatorStateInput {
  return {
    name,
    mode: 'broadcast',
    keySerializer: keySerializer as Serializer<unknown>,
    valueSerializer: valueSerializer as Serializer<unknown>,
    entries: entries as Entries<readonly [unknown, unknown]>,
  };
}

export interface BootstrapOperator<K = unknown> {
  readonly operatorId: string;
  readonly parallelism: number;
  /** Default: as a job would pick for `parallelism` (defaultMaxParallelism). */
  readonly maxParallelism?: number;
  /** Required when the operator has keyed states or timers. */
  readonly keySerializer?: Serializer<K>;
  readonly keyed?: readonly KeyedStateInput<K>[];
  readonly operatorState?: readonly OperatorStateInput[];
}

/** Keeps one operator's key type consistent (keySerializer, keyed inputs) inside an array of operators with different key types. */
export function bootstrapOperator<K>(op: BootstrapOperator<K>): BootstrapOperator<unknown> {
  return op as BootstrapOperator<unknown>;
}

export interface BootstrapOptions extends SavepointOutputOptions {
  /** Recorded in _metadata. Default "bootstrap". */
  readonly jobId?: string;
  /** Recorded as checkpoint id. Default 1. */
  readonly checkpointId?: number;
  /** Recorded in _metadata, and the last-access time of TTL values. Default Date.now(). */
  readonly timestamp?: number;
  /** Recorded as the writing backend. Default "bootstrap". */
  readonly backend?: string;
  /**
   * Keyed entries are buffered up to about this many (encoded) bytes; beyond it they go to run
   * files in the temporary directory, so inputs larger than memory bootstrap. Default 64 MiB.
   */
  readonly memoryBytes?: number;
}

/** Default of BootstrapOptions.memoryBytes. */
export const DEFAULT_BOOTSTRAP_MEMORY_BYTES = 64 * 1024 * 1024;

/** A key group's entries of one state, by (key, namespace). */
interface Slot {
  readonly key: Uint8Array;
  readonly ns: Uint8Array;
  value?: Uint8Array;
  elements?: Uint8Array[];
  map?: Map<string, [Uint8Array, Uint8Array | null]>;
  timers?: Set<number>;
}

function slotId(key: Uint8Array, ns: Uint8Array): string {
  return `${key.length}:${Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('latin1')}${Buffer.from(ns.buffer, ns.byteOffset, ns.byteLength).toString('latin1')}`;
}

/** Record payloads in the key-group runs (per state kind; the tag is the state index). */
function encodeRecord(out: ByteWriter, key: Uint8Array, ns: Uint8Array): ByteWriter {
  out.reset();
  return out.bytes(key).bytes(ns);
}

/** Spools one operator's keyed entries by key group (KeyGroupRuns): memory stays bounded. */
class KeyedSpool {
  private readonly scratch = new ByteWriter(1024);

  constructor(
    readonly runs: KeyGroupRuns,
    private readonly maxParallelism: number,
  ) {}

  sink(state: number): RawSink {
    const w = this.scratch;
    const add = (key: Uint8Array): Promise<void> =>
      this.runs.add(keyGroupForBytes(key, this.maxParallelism), state, w.view());
    return {
      value: (k, n, v) => {
        encodeRecord(w, k, n).bytes(v);
        return add(k);
      },
      list: (k, n, els) => {
        encodeRecord(w, k, n).varint(els.length);
        for (const e of els) w.bytes(e);
        return add(k);
      },
      map: (k, n, uk, v) => {
        encodeRecord(w, k, n).bytes(uk);
        if (v === null) w.u8(0);
        else w.u8(1).bytes(v);
        return add(k);
      },
      timer: (k, n, ts) => {
        encodeRecord(w, k, n).f64(ts);
        return add(k);
      },
    };
  }
}

/**
 * One key group's records merged into slots per state, in the order they were added: the same
 * (key, namespace) given twice keeps the last value, appends list elements, merges map entries.
 */
function slotsOf(
  records: readonly KeyGroupRecord[],
  kinds: readonly KeyedStateMetaInfo['kind'][],
): Map<number, Map<string, Slot>> {
  const byState = new Map<number, Map<string, Slot>>();
  for (const { tag: state, payload } of records) {
    const r = new ByteReader(payload, 'bootstrap record');
    const key = r.bytes();
    const n = r.bytes();
    let slots = byState.get(state);
    if (slots === undefined) byState.set(state, (slots = new Map()));
    const id = slotId(key, n);
    let slot = slots.get(id);
    if (slot === undefined) slots.set(id, (slot = { key, ns: n }));
    const kind = kinds[state];
    if (kind === 'timers') (slot.timers ??= new Set()).add(r.f64());
    else if (kind === 'list') {
      const count = r.varint();
      const els = (slot.elements ??= []);
      for (let i = 0; i < count; i++) els.push(r.bytes());
    } else if (kind === 'map') {
      const uk = r.bytes();
      const v = r.u8() === 0 ? null : r.bytes();
      (slot.map ??= new Map()).set(uk.toString('latin1'), [uk, v]);
    } else slot.value = r.bytes();
  }
  return byState;
}

function encodeSlots(kind: KeyedStateMetaInfo['kind'], slots: Iterable<Slot>, section: SectionWriter): void {
  for (const s of slots) {
    if (kind === 'timers') for (const ts of s.timers ?? []) section.timerEntry(ts, s.key, s.ns);
    else if (kind === 'list') {
      const els = s.elements ?? [];
      section.listEntry(s.key, s.ns, els.length);
      for (const e of els) section.listElement(e);
    } else if (kind === 'map') {
      const entries = [...(s.map?.values() ?? [])];
      section.mapEntry(s.key, s.ns, entries.length);
      for (const [uk, v] of entries) section.mapElement(uk, v);
    } else if (s.value !== undefined) section.valueEntry(s.key, s.ns, s.value);
  }
}

function checkOperator(op: BootstrapOperator<unknown>, maxParallelism: number): void {
  if (typeof op.operatorId !== 'string' || op.operatorId.length === 0)
    throw new StreamStateError('INVALID_ARGUMENT', 'every bootstrapped operator needs a non-empty operatorId.');
  checkMaxParallelism(maxParallelism, `operator ${op.operatorId}: maxParallelism`);
  checkParallelism(maxParallelism, op.parallelism);
  const names = new Set<string>();
  for (const s of op.keyed ?? []) {
    const id = `${s.kind === 'timers' ? 'timer queue' : 'state'} "${s.name}"`;
    if (names.has(id))
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `operator ${op.operatorId}: ${id} is given twice; give each state once.`,
      );
    names.add(id);
  }
  if ((op.keyed ?? []).length > 0 && op.keySerializer === undefined) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `operator ${op.operatorId} has keyed state but no keySerializer; pass the job's key serializer.`,
    );
  }
  const opNames = new Set<string>();
  for (const s of op.operatorState ?? []) {
    if (opNames.has(s.name))
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `operator ${op.operatorId}: operator state "${s.name}" is given twice.`,
      );
    opNames.add(s.name);
  }
}

/**
 * Writes a new canonical savepoint at `dst` (a local directory or s3:// prefix that must not
 * exist: ALREADY_EXISTS) holding `operators`. Nothing is left at `dst` when it fails.
 */
export async function bootstrapSavepoint(
  dst: string,
  operators: readonly BootstrapOperator<unknown>[],
  opts: BootstrapOptions = {},
): Promise<CheckpointMetadata> {
  const ops = operators;
  const seen = new Set<string>();
  const plans = ops.map((op) => {
    const maxParallelism = op.maxParallelism ?? defaultMaxParallelism(op.parallelism);
    checkOperator(op, maxParallelism);
    if (seen.has(op.operatorId))
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `operator ${op.operatorId} is given twice; give each operator once.`,
      );
    seen.add(op.operatorId);
    return { op, maxParallelism };
  });
  const timestamp = opts.timestamp ?? Date.now();
  return writeSavepoint(dst, opts, async (out) => {
    const snapshots: OperatorSnapshot[] = [];
    for (const { op, maxParallelism } of plans) {
      const runs = new KeyGroupRuns(
        join(tmpdir(), `streamstate-bootstrap-${randomHex(12)}`),
        maxParallelism,
        opts.memoryBytes ?? DEFAULT_BOOTSTRAP_MEMORY_BYTES,
        opts.temporaryPaths,
      );
      let keyed: (KeyedStateHandle | null)[];
      try {
        keyed = await writeKeyed(op, maxParallelism, out.streams, timestamp, runs);
      } finally {
        await runs.close();
      }
      const operatorHandles = await writeOperatorState(op, out.streams);
      const subtasks: SubtaskStateSnapshot[] = [];
      for (let i = 0; i < op.parallelism; i++) {
        const k = keyed[i];
        const o = operatorHandles[i];
        if (k === null && o === null) continue;
        subtasks.push({ subtaskIndex: i, keyed: k === null ? [] : [k], operator: o === null ? [] : [o] });
      }
      snapshots.push({ operatorId: op.operatorId, parallelism: op.parallelism, maxParallelism, subtasks });
    }
    return {
      checkpointId: opts.checkpointId ?? 1,
      jobId: opts.jobId ?? 'bootstrap',
      kind: 'savepoint',
      format: 'canonical',
      backend: opts.backend ?? 'bootstrap',
      timestamp,
      operators: snapshots,
      properties: { bootstrapped: true },
    };
  });
}

type Streams = Parameters<typeof writeOperatorStream>[0];

async function writeKeyed(
  op: BootstrapOperator<unknown>,
  maxParallelism: number,
  streams: Streams,
  ttlTimestamp: number,
  runs: KeyGroupRuns,
): Promise<(KeyedStateHandle | null)[]> {
  const inputs = op.keyed ?? [];
  const out: (KeyedStateHandle | null)[] = new Array<KeyedStateHandle | null>(op.parallelism).fill(null);
  if (inputs.length === 0 || op.keySerializer === undefined) return out;
  const spool = new KeyedSpool(runs, maxParallelism);
  for (let i = 0; i < inputs.length; i++) await inputs[i].feed(op.keySerializer, spool.sink(i), ttlTimestamp);
  const states: KeyedStateMetaInfo[] = inputs.map((s, i) => ({ ...s.meta(), stateId: i }));
  const kinds = states.map((s) => s.kind);
  const section = new SectionWriter();
  for (let i = 0; i < op.parallelism; i++) {
    const range = keyGroupRangeForSubtask(maxParallelism, op.parallelism, i);
    let writer: CanonicalKeyGroupsWriter | undefined;
    let stream: ReturnType<Streams['createOutputStream']> | undefined;
    try {
      for await (const { keyGroup, records } of runs.read(range.start, range.end)) {
        stream ??= streams.createOutputStream('exclusive');
        writer ??= new CanonicalKeyGroupsWriter(stream, {
          layout: CANONICAL_LAYOUT,
          keySerializer: snapshotOf(op.keySerializer),
          maxParallelism,
          keyGroupRange: range.toJSON(),
          states,
        });
        writer.beginKeyGroup(keyGroup);
        for (const [state, slots] of slotsOf(records, kinds)) {
          encodeSlots(states[state].kind, slots.values(), section);
          writer.addSection(state, section);
        }
        await writer.endKeyGroup();
      }
      if (writer !== undefined) out[i] = await writer.finish();
    } catch (err) {
      await stream?.discard().catch(() => undefined);
      throw err;
    }
  }
  return out;
}

/**
 * Operator state is streamed record by record into one stream per subtask (OperatorStreamWriter):
 * memory holds the record offsets (the handles list them), not the records.
 */
async function writeOperatorState(
  op: BootstrapOperator<unknown>,
  streams: Streams,
): Promise<(OperatorStateHandle | null)[]> {
  const states = op.operatorState ?? [];
  if (states.length === 0) return Array.from({ length: op.parallelism }, () => null);
  const writers = Array.from({ length: op.parallelism }, () => new OperatorStreamWriter(streams));
  try {
    for (const s of states) {
      if (s.mode === 'broadcast') {
        const meta = {
          name: s.name,
          mode: 'broadcast' as const,
          valueSerializer: snapshotOf(s.valueSerializer),
          keySerializer: snapshotOf(s.keySerializer),
        };
        for (const w of writers) w.beginState(meta);
        // Every subtask stores the whole broadcast state.
        for await (const [k, v] of s.entries) {
          const record = [s.keySerializer.serialize(k), s.valueSerializer.serialize(v)] as const;
          for (const w of writers) await w.add(record);
        }
        continue;
      }
      const meta = { name: s.name, mode: s.mode, valueSerializer: snapshotOf(s.serializer) };
      for (const w of writers) w.beginState(meta);
      // Split elements round-robin; union elements once (every subtask reads them all on restore).
      let n = 0;
      for await (const e of s.elements)
        await writers[s.mode === 'union' ? 0 : n++ % op.parallelism].add(s.serializer.serialize(e));
    }
    const out: (OperatorStateHandle | null)[] = [];
    for (const w of writers) out.push(await w.finish());
    return out;
  } catch (err) {
    for (const w of writers) await w.discard();
    throw err;
  }
}
