import type { KeyGroupRangeJson } from '../backend/handles.js';
import { readerForRecorded, stateKindMismatch, ttlMismatch } from '../backend/keyed-rules.js';
import { FormatError } from '../errors.js';
import { ByteReader } from '../format/bytes.js';
import type { Serializer, SerializerSnapshot } from '../serializers/serializer.js';
import type { StateDescriptor } from '../state/descriptors.js';
import type {
  AggregatingState,
  KeyedState,
  ListState,
  MapState,
  MergingState,
  ReducingState,
  TimerQueue,
  ValueState,
} from '../state/types.js';
import type { FunctionHooks } from './hooks.js';
import {
  ChangeOp,
  decodeRecord,
  readByteList,
  splitRecords,
  type ChangeRecord,
  type StateMetaRecord,
} from './records.js';

/** A restored change waiting for its state to be registered, with the metadata it was written under. */
export interface PendingRecord {
  readonly meta: StateMetaRecord;
  readonly rec: ChangeRecord;
}

export interface PendingState {
  readonly meta: StateMetaRecord;
  readonly records: PendingRecord[];
}

/**
 * Restored changes, per state name, in log order. Replay needs the state's serializers and
 * functions, which only the descriptor has, so a state's changes are applied when it is first
 * registered (getState / getTimerQueue). Until then they are carried into every checkpoint.
 */
export class PendingChanges {
  private readonly byState = new Map<string, PendingState>();

  get isEmpty(): boolean {
    return this.byState.size === 0;
  }

  names(): string[] {
    return [...this.byState.keys()];
  }

  get(name: string): PendingState | undefined {
    return this.byState.get(name);
  }

  take(name: string): PendingState | undefined {
    const p = this.byState.get(name);
    this.byState.delete(name);
    return p;
  }

  /** A stable copy of what is pending now (for writing it into a snapshot). */
  snapshot(): PendingState[] {
    return [...this.byState.values()].map((p) => ({ meta: p.meta, records: p.records.slice() }));
  }

  /**
   * Adds the records of one segment body of a log. `ids` maps the log's state ids to metadata and
   * persists across the segments of that log. Records outside `range` are skipped (rescaling).
   */
  addSegment(body: Buffer, ids: Map<number, StateMetaRecord>, range: KeyGroupRangeJson, where: string): void {
    for (const raw of splitRecords(body, where)) {
      const r = decodeRecord(raw, where);
      if (r.op === ChangeOp.METADATA) {
        ids.set(r.stateId, (r as { meta: StateMetaRecord }).meta);
        continue;
      }
      const rec = r as ChangeRecord;
      const meta = ids.get(rec.stateId);
      if (meta === undefined) {
        throw new FormatError(
          'CORRUPT',
          `${where}: a change refers to state id ${rec.stateId} before any metadata record named it (a segment is missing or out of order). ` +
            'Refusing a partial replay; restore from another checkpoint.',
        );
      }
      if (rec.keyGroup < range.start || rec.keyGroup > range.end) continue;
      let p = this.byState.get(meta.name);
      if (p === undefined) this.byState.set(meta.name, (p = { meta, records: [] }));
      p.records.push({ meta, rec });
    }
  }
}

// ------------------------------------------------------------------ serializer checks

/** The serializer to decode recorded bytes with, or a typed error when the recorded one cannot be read. */
function readerFor<T>(
  state: string,
  what: string,
  recorded: SerializerSnapshot | undefined,
  current: Serializer<T>,
): Serializer<T> {
  return readerForRecorded(`state "${state}"`, what, recorded, current);
}

export interface Readers {
  readonly namespace: Serializer<unknown>;
  readonly value: Serializer<unknown> | null;
  readonly userKey: Serializer<unknown> | null;
}

export function valueSerializerOf(d: StateDescriptor<unknown>): Serializer<unknown> {
  switch (d.kind) {
    case 'value':
    case 'reducing':
      return d.serializer;
    case 'list':
      return d.elementSerializer;
    case 'map':
      return d.valueSerializer;
    case 'aggregating':
      return d.accumulatorSerializer;
  }
}

/** Checks a registration against recorded metadata (kind, ttl, serializers) and returns the readers. */
export function checkRegistration(
  meta: StateMetaRecord,
  kind: StateMetaRecord['kind'],
  ttl: boolean,
  namespace: Serializer<unknown>,
  value: Serializer<unknown> | null,
  userKey: Serializer<unknown> | null,
): Readers {
  if (meta.kind !== kind) {
    throw stateKindMismatch(meta.name, meta.kind, kind);
  }
  if (Boolean(meta.ttl) !== ttl) {
    throw ttlMismatch(meta.name, Boolean(meta.ttl));
  }
  return {
    namespace: readerFor(meta.name, 'namespace', meta.namespaceSerializer, namespace),
    value: value === null ? null : readerFor(meta.name, 'value', meta.valueSerializer, value),
    userKey: userKey === null ? null : readerFor(meta.name, 'map key', meta.userKeySerializer, userKey),
  };
}

// ------------------------------------------------------------------ applying

/** How replay positions the wrapped backend: current key (from its bytes) and the write time. */
export interface ReplayCursor {
  setKey(keyBytes: Buffer): void;
  /** NaN: the live clock. */
  setTime(time: number): void;
}

function bad(meta: StateMetaRecord, op: number): never {
  throw new FormatError(
    'CORRUPT',
    `changelog: op ${op} is not valid for ${meta.kind} state "${meta.name}"; the segment is corrupt.`,
  );
}

/**
 * Applies the pending records of one keyed state to the wrapped backend's handle (not logged: the
 * changes are already in the log being replayed). Readers are resolved once per metadata record.
 */
export function replayKeyedState(
  pending: PendingState,
  handle: KeyedState<unknown>,
  cursor: ReplayCursor,
  hooks: FunctionHooks,
  readersFor: (meta: StateMetaRecord) => Readers,
): void {
  const cache = new Map<StateMetaRecord, Readers>();
  const original = handle.getCurrentNamespace();
  try {
    for (const { meta, rec } of pending.records) {
      let rd = cache.get(meta);
      if (rd === undefined) cache.set(meta, (rd = readersFor(meta)));
      cursor.setKey(rec.key);
      cursor.setTime(rec.time);
      handle.setCurrentNamespace(rd.namespace.deserialize(rec.namespace));
      applyOne(meta, rec, handle, rd, hooks);
    }
  } finally {
    cursor.setTime(Number.NaN);
    handle.setCurrentNamespace(original);
  }
}

function applyOne(
  meta: StateMetaRecord,
  rec: ChangeRecord,
  handle: KeyedState<unknown>,
  rd: Readers,
  hooks: FunctionHooks,
): void {
  const p = new ByteReader(rec.payload, `changelog record of state "${meta.name}"`);
  const value = (): unknown => (rd.value as Serializer<unknown>).deserialize(p.bytes());
  const values = (): unknown[] => readByteList(p).map((b) => (rd.value as Serializer<unknown>).deserialize(b));
  if (rec.op === ChangeOp.CLEAR) return handle.clear();
  if (rec.op === ChangeOp.MERGE_NS) {
    const target = rd.namespace.deserialize(p.bytes());
    const sources = readByteList(p).map((b) => rd.namespace.deserialize(b));
    return (handle as MergingState<unknown>).mergeNamespaces(target, sources);
  }
  switch (meta.kind) {
    case 'value': {
      const s = handle as ValueState<unknown, unknown>;
      if (rec.op === ChangeOp.SET) return s.update(value());
      if (rec.op === ChangeOp.READ) return void s.value();
      return bad(meta, rec.op);
    }
    case 'list': {
      const s = handle as ListState<unknown, unknown>;
      if (rec.op === ChangeOp.SET) return s.update(values());
      if (rec.op === ChangeOp.ADD_ELEMENT) return s.add(value());
      if (rec.op === ChangeOp.ADD_ALL) return s.addAll(values());
      if (rec.op === ChangeOp.READ) return void s.get();
      return bad(meta, rec.op);
    }
    case 'reducing':
    case 'aggregating': {
      const s = handle as ReducingState<unknown, unknown> | AggregatingState<unknown, unknown, unknown>;
      if (rec.op === ChangeOp.SET) {
        const v = value();
        return hooks.forcing(v, () => {
          s.clear();
          s.add(v);
        });
      }
      if (rec.op === ChangeOp.READ) return void s.get();
      return bad(meta, rec.op);
    }
    case 'map': {
      const s = handle as MapState<unknown, unknown, unknown>;
      const uk = (rd.userKey as Serializer<unknown>).deserialize(p.bytes());
      if (rec.op === ChangeOp.PUT) return s.put(uk, p.u8() === 1 ? null : value());
      if (rec.op === ChangeOp.REMOVE) return s.remove(uk);
      if (rec.op === ChangeOp.READ_ENTRY) return void s.get(uk);
      return bad(meta, rec.op);
    }
    default:
      return bad(meta, rec.op);
  }
}

/** Applies pending timer changes (add/remove of the recorded timer) to the wrapped backend's queue. */
export function replayTimers(
  pending: PendingState,
  queue: TimerQueue<unknown, unknown>,
  keySerializer: Serializer<unknown>,
  namespace: Serializer<unknown>,
): void {
  for (const { meta, rec } of pending.records) {
    const timestamp = new ByteReader(rec.payload, `changelog timer record of "${meta.name}"`).f64();
    const timer = {
      timestamp,
      key: keySerializer.deserialize(rec.key),
      namespace: namespace.deserialize(rec.namespace),
    };
    if (rec.op === ChangeOp.TIMER_ADD) queue.add(timer);
    else if (rec.op === ChangeOp.TIMER_REMOVE) queue.remove(timer);
    else bad(meta, rec.op);
  }
}
