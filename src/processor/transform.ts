import type { StateFileReader } from '../backend/contract.js';
import type {
  KeyedStateHandle,
  KeyedStateMetaInfo,
  KeyGroupsStateHandle,
  OperatorStateHandle,
} from '../backend/handles.js';
import type { CheckpointMetadata, OperatorSnapshot, SubtaskStateSnapshot } from '../checkpoint/metadata.js';
import { readStreamHandle } from '../checkpoint/streams.js';
import { RestoreError, StateRegistrationError, StreamStateError } from '../errors.js';
import { ByteReader } from '../format/bytes.js';
import {
  CANONICAL_LAYOUT,
  listEntries,
  mapEntries,
  readKeyGroups,
  SectionWriter,
  valueEntries,
  type RawSection,
} from '../format/key-groups-stream.js';
import { checkOffset, checkStreamHeader } from '../operator/operator-stream.js';
import { CanonicalKeyGroupsWriter } from '../format/canonical-layout.js';
import { keyGroupsHandlesOf } from '../savepoint/dump.js';
import { snapshotOf, type Serializer, type SerializerSnapshot } from '../serializers/serializer.js';
import { ttlSerializer } from '../state/ttl.js';
import { fieldDecoder, readerFor, ttlInnerSnapshot, type Decoded } from './decode.js';
import { writeOperatorStream, type OperatorStateRecords } from './operator-stream-writer.js';
import { openSnapshot, SnapshotReader, type OpenSnapshotOptions } from './reader.js';
import { writeSavepoint, type SavepointOutputOptions } from './savepoint-output.js';

/**
 * The transform side of the State Processor API: a NEW canonical savepoint from one or more
 * snapshots (merged operator by operator) with operators renamed or dropped, states dropped or
 * renamed, and state values rewritten by a function. The sources are only read. Every edit is
 * checked against the sources before anything is written (an unknown operator is
 * UNKNOWN_OPERATOR, an unknown state STATE_NOT_REGISTERED), and a failure leaves nothing at the
 * destination.
 */

/** Where a rewritten value came from: its key and namespace (and map user key), decoded with built-ins where possible. */
export interface ValueContext {
  readonly key: Decoded<unknown>;
  readonly namespace: Decoded<unknown>;
  readonly userKey?: Decoded<unknown>;
}

export type SavepointEdit =
  | { readonly type: 'rename-operator'; readonly from: string; readonly to: string }
  | { readonly type: 'drop-operator'; readonly operatorId: string }
  /** Drops every state of that name: keyed state, timer queue and operator state. */
  | { readonly type: 'drop-state'; readonly operatorId: string; readonly state: string }
  | { readonly type: 'rename-state'; readonly operatorId: string; readonly from: string; readonly to: string }
  | MapValuesEdit;

/**
 * Rewrites the stored values of a keyed state: the value (value, reducing), the accumulator
 * (aggregating), each list element, each map value. Returning undefined removes that value
 * (entry, element, map entry). TTL timestamps are kept.
 */
export interface MapValuesEdit {
  readonly type: 'map-values';
  readonly operatorId: string;
  readonly state: string;
  readonly fn: (value: unknown, context: ValueContext) => unknown;
  /** Reads the stored values; default the built-in serializer the snapshot records (required for custom ones). */
  readonly serializer?: Serializer<unknown>;
  /** Writes the new values; default the reading serializer. */
  readonly newSerializer?: Serializer<unknown>;
}

/** A typed map-values edit. */
export function mapValues<V, W = V>(
  operatorId: string,
  state: string,
  fn: (value: V, context: ValueContext) => W | undefined,
  opts: { readonly serializer?: Serializer<V>; readonly newSerializer?: Serializer<W> } = {},
): MapValuesEdit {
  return {
    type: 'map-values',
    operatorId,
    state,
    fn: fn as (value: unknown, context: ValueContext) => unknown,
    ...(opts.serializer === undefined ? {} : { serializer: opts.serializer as Serializer<unknown> }),
    ...(opts.newSerializer === undefined ? {} : { newSerializer: opts.newSerializer as Serializer<unknown> }),
  };
}

export interface TransformOptions extends SavepointOutputOptions, OpenSnapshotOptions {}

/** One output operator: its source and what happens to its states (names are the source's). */
interface PlannedOperator {
  id: string;
  readonly source: OperatorSnapshot;
  readonly files: StateFileReader;
  /** source state name → output name; absent: dropped */
  readonly names: Map<string, string>;
  /** by source state name */
  readonly mappers: Map<string, MapValuesEdit>;
}

function stateNamesOf(op: OperatorSnapshot): Set<string> {
  const names = new Set<string>();
  for (const h of keyGroupsHandlesOf(op).handles) for (const s of h.states) names.add(s.name);
  for (const sub of op.subtasks) for (const h of sub.operator) for (const s of h.states) names.add(s.name);
  return names;
}

class Plan {
  readonly operators: PlannedOperator[] = [];

  constructor(views: readonly { metadata: CheckpointMetadata; files: StateFileReader }[]) {
    for (const v of views) {
      for (const op of v.metadata.operators) {
        if (this.operators.some((p) => p.id === op.operatorId)) {
          throw new StreamStateError(
            'INVALID_ARGUMENT',
            `operator ${op.operatorId} is in more than one source; rename or drop it in one of them first (rename-operator, drop-operator on that source).`,
          );
        }
        const names = new Map([...stateNamesOf(op)].map((n) => [n, n]));
        this.operators.push({ id: op.operatorId, source: op, files: v.files, names, mappers: new Map() });
      }
    }
  }

  private find(id: string): PlannedOperator {
    const op = this.operators.find((p) => p.id === id);
    if (op === undefined) {
      throw new RestoreError(
        'UNKNOWN_OPERATOR',
        `the savepoint has no operator "${id}" (operators: ${this.operators.map((p) => p.id).join(', ') || 'none'}); nothing was written.`,
      );
    }
    return op;
  }

  /** The source name of the state now called `name` in `op`. */
  private sourceName(op: PlannedOperator, name: string): string {
    for (const [src, cur] of op.names) if (cur === name) return src;
    throw new StateRegistrationError(
      'STATE_NOT_REGISTERED',
      `operator ${op.id} has no state "${name}" (states: ${[...op.names.values()].sort().join(', ') || 'none'}); nothing was written.`,
    );
  }

  apply(edit: SavepointEdit): void {
    switch (edit.type) {
      case 'rename-operator': {
        const op = this.find(edit.from);
        if (edit.to.length === 0)
          throw new StreamStateError('INVALID_ARGUMENT', `rename-operator ${edit.from}: the new id is empty.`);
        if (edit.to !== edit.from && this.operators.some((p) => p.id === edit.to)) {
          throw new StreamStateError(
            'INVALID_ARGUMENT',
            `cannot rename operator ${edit.from} to ${edit.to}: an operator ${edit.to} exists already; drop it first.`,
          );
        }
        op.id = edit.to;
        return;
      }
      case 'drop-operator':
        this.operators.splice(this.operators.indexOf(this.find(edit.operatorId)), 1);
        return;
      case 'drop-state': {
        const op = this.find(edit.operatorId);
        const src = this.sourceName(op, edit.state);
        op.names.delete(src);
        op.mappers.delete(src);
        return;
      }
      case 'rename-state': {
        const op = this.find(edit.operatorId);
        const src = this.sourceName(op, edit.from);
        if (edit.to.length === 0)
          throw new StreamStateError(
            'INVALID_ARGUMENT',
            `rename-state ${edit.operatorId}/${edit.from}: the new name is empty.`,
          );
        if (edit.to !== edit.from && [...op.names.values()].includes(edit.to)) {
          throw new StreamStateError(
            'INVALID_ARGUMENT',
            `cannot rename state ${edit.from} of operator ${op.id} to ${edit.to}: a state ${edit.to} exists already; drop it first.`,
          );
        }
        op.names.set(src, edit.to);
        return;
      }
      case 'map-values': {
        const op = this.find(edit.operatorId);
        const src = this.sourceName(op, edit.state);
        const keyed = keyGroupsHandlesOf(op.source).handles.some((h) =>
          h.states.some((s) => s.name === src && s.kind !== 'timers'),
        );
        if (!keyed)
          throw new StateRegistrationError(
            'STATE_KIND_MISMATCH',
            `map-values: state "${edit.state}" of operator ${op.id} is not a keyed state with values (operator state or a timer queue).`,
          );
        op.mappers.set(src, edit);
        return;
      }
    }
  }
}

/** Applies `edits` (in order; names as they are after the edits before) to `source` and writes the result as a new savepoint at `dst`. */
export async function transformSavepoint(
  source: string | SnapshotReader,
  dst: string,
  edits: readonly SavepointEdit[],
  opts: TransformOptions = {},
): Promise<CheckpointMetadata> {
  return mergeSavepoints([source], dst, edits, opts);
}

/**
 * Merges the operators of several snapshots into one new savepoint (an operator id in two
 * sources is INVALID_ARGUMENT), then applies `edits`. Sources given as paths are opened and
 * closed here; readers given are left open.
 */
export async function mergeSavepoints(
  sources: readonly (string | SnapshotReader)[],
  dst: string,
  edits: readonly SavepointEdit[] = [],
  opts: TransformOptions = {},
): Promise<CheckpointMetadata> {
  if (sources.length === 0) throw new StreamStateError('INVALID_ARGUMENT', 'no source snapshot given.');
  const opened: SnapshotReader[] = [];
  try {
    const readers: SnapshotReader[] = [];
    for (const s of sources) {
      if (typeof s === 'string') {
        const r = await openSnapshot(s, opts);
        opened.push(r);
        readers.push(r);
      } else readers.push(s);
    }
    const views = readers.map((r) => r.view());
    const plan = new Plan(views);
    for (const e of edits) plan.apply(e);
    const first = readers[0].metadata;
    return await writeSavepoint(dst, opts, async (out) => {
      const operators: OperatorSnapshot[] = [];
      for (const op of plan.operators) operators.push(await writeOperator(op, out.streams));
      const from = readers
        .map((r) => `${r.metadata.kind} ${r.metadata.checkpointId} of job ${r.metadata.jobId}`)
        .join(' + ');
      return {
        checkpointId: first.checkpointId,
        jobId: first.jobId,
        kind: 'savepoint',
        format: 'canonical',
        backend: first.backend,
        timestamp: first.timestamp,
        operators,
        properties: { ...(first.properties ?? {}), transformedFrom: from },
      };
    });
  } finally {
    for (const r of opened) await r.close();
  }
}

type Streams = Parameters<typeof writeOperatorStream>[0];

async function writeOperator(op: PlannedOperator, streams: Streams): Promise<OperatorSnapshot> {
  const subtasks: SubtaskStateSnapshot[] = [];
  for (const sub of [...op.source.subtasks].sort((a, b) => a.subtaskIndex - b.subtaskIndex)) {
    const keyed: KeyedStateHandle[] = [];
    for (const h of sub.keyed) {
      const out = await rewriteKeyed(op, h as KeyGroupsStateHandle, streams);
      if (out !== null) keyed.push(out);
    }
    const operator: OperatorStateHandle[] = [];
    for (const h of sub.operator) {
      const out = await rewriteOperatorState(op, h, sub.subtaskIndex, streams);
      if (out !== null) operator.push(out);
    }
    if (keyed.length > 0 || operator.length > 0) subtasks.push({ subtaskIndex: sub.subtaskIndex, keyed, operator });
  }
  return { operatorId: op.id, parallelism: op.source.parallelism, maxParallelism: op.source.maxParallelism, subtasks };
}

/** Rewrites the values of one section with a map-values edit. */
interface SectionMapper {
  readonly meta: KeyedStateMetaInfo;
  map(section: RawSection, out: SectionWriter): void;
}

function sectionMapper(
  op: PlannedOperator,
  h: KeyGroupsStateHandle,
  meta: KeyedStateMetaInfo,
  edit: MapValuesEdit,
): SectionMapper {
  const what = `operator ${op.source.operatorId}, state "${meta.name}"`;
  const recorded = meta.valueSerializer ?? { id: 'unknown', version: 0 };
  const inner = ttlInnerSnapshot(recorded);
  const reader = readerFor(inner ?? recorded, edit.serializer, what);
  if (reader === undefined) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `${what} holds values of the custom serializer ${(inner ?? recorded).id}; pass it as the map-values serializer to rewrite them.`,
    );
  }
  const writer = edit.newSerializer ?? reader;
  const newSnapshot: SerializerSnapshot =
    inner === undefined ? snapshotOf(writer) : snapshotOf(ttlSerializer(writer) as Serializer<unknown>);
  const key = fieldDecoder<unknown>(h.keySerializer, undefined, `${what}, key`);
  const ns = fieldDecoder<unknown>(meta.namespaceSerializer, undefined, `${what}, namespace`);
  const uk = fieldDecoder<unknown>(meta.userKeySerializer, undefined, `${what}, user key`);
  const prefix = inner === undefined ? 0 : 8;
  const rewrite = (bytes: Buffer, ctx: () => ValueContext): Uint8Array | undefined => {
    const value = reader.deserialize(bytes.subarray(prefix));
    const next = edit.fn(value, ctx());
    if (next === undefined) return undefined;
    const body = writer.serialize(next);
    return prefix === 0 ? body : Buffer.concat([bytes.subarray(0, prefix), body]);
  };
  return {
    meta: { ...meta, valueSerializer: newSnapshot },
    map(section, out) {
      if (meta.kind === 'list') {
        for (const e of listEntries(section, what)) {
          const ctx = (): ValueContext => ({ key: key.decode(e.key), namespace: ns.decode(e.namespace) });
          const els = e.elements.map((x) => rewrite(x, ctx)).filter((x): x is Uint8Array => x !== undefined);
          if (els.length === 0) continue;
          out.listEntry(e.key, e.namespace, els.length);
          for (const x of els) out.listElement(x);
        }
      } else if (meta.kind === 'map') {
        for (const e of mapEntries(section, what)) {
          const kept: [Buffer, Uint8Array | null][] = [];
          for (const [u, v] of e.entries) {
            if (v === null) {
              kept.push([u, null]);
              continue;
            }
            const next = rewrite(v, () => ({
              key: key.decode(e.key),
              namespace: ns.decode(e.namespace),
              userKey: uk.decode(u),
            }));
            if (next !== undefined) kept.push([u, next]);
          }
          if (kept.length === 0) continue;
          out.mapEntry(e.key, e.namespace, kept.length);
          for (const [u, v] of kept) out.mapElement(u, v);
        }
      } else {
        for (const e of valueEntries(section, what)) {
          const next = rewrite(e.value, () => ({ key: key.decode(e.key), namespace: ns.decode(e.namespace) }));
          if (next !== undefined) out.valueEntry(e.key, e.namespace, next);
        }
      }
    },
  };
}

async function rewriteKeyed(
  op: PlannedOperator,
  h: KeyGroupsStateHandle,
  streams: Streams,
): Promise<KeyedStateHandle | null> {
  const kept: KeyedStateMetaInfo[] = [];
  const mappers = new Map<number, SectionMapper>();
  for (const s of h.states) {
    const name = op.names.get(s.name);
    if (name === undefined) continue;
    const edit = op.mappers.get(s.name);
    if (edit !== undefined && s.kind !== 'timers') {
      const m = sectionMapper(op, h, s, edit);
      mappers.set(s.stateId, m);
      kept.push({ ...m.meta, name });
    } else kept.push({ ...s, name });
  }
  if (kept.length === 0) return null;
  const keptIds = new Set(kept.map((s) => s.stateId));
  const stream = streams.createOutputStream('exclusive');
  const section = new SectionWriter();
  try {
    const writer = new CanonicalKeyGroupsWriter(stream, {
      layout: CANONICAL_LAYOUT,
      keySerializer: h.keySerializer,
      maxParallelism: h.maxParallelism,
      keyGroupRange: h.keyGroupRange,
      states: kept,
    });
    for await (const kg of readKeyGroups(h, op.files, h.keyGroupRange)) {
      writer.beginKeyGroup(kg.keyGroup);
      for (const s of kg.sections) {
        if (!keptIds.has(s.stateId)) continue;
        const m = mappers.get(s.stateId);
        if (m === undefined) writer.addRawSection(s.stateId, s.entryCount, s.bytes);
        else {
          m.map(s, section);
          writer.addSection(s.stateId, section);
        }
      }
      await writer.endKeyGroup();
    }
    return await writer.finish();
  } catch (err) {
    await stream.discard().catch(() => undefined);
    throw err;
  }
}

async function rewriteOperatorState(
  op: PlannedOperator,
  h: OperatorStateHandle,
  subtask: number,
  streams: Streams,
): Promise<OperatorStateHandle | null> {
  const states = h.states.filter((s) => op.names.has(s.name) && s.offsets.length > 0);
  if (states.length === 0) return null;
  const what = `operator ${op.source.operatorId} subtask ${subtask}, operator state`;
  const bytes = await readStreamHandle(h.stream, op.files);
  checkStreamHeader(bytes, what);
  const out: OperatorStateRecords[] = states.map((s) => {
    const records: (Uint8Array | [Uint8Array, Uint8Array])[] = s.offsets.map((offset) => {
      checkOffset(offset, bytes.length, what);
      const r = new ByteReader(bytes, `${what} "${s.name}"`, offset);
      return s.mode === 'broadcast' ? [r.bytes(), r.bytes()] : r.bytes();
    });
    const { offsets: _offsets, ...meta } = s;
    return { meta: { ...meta, name: op.names.get(s.name)! }, records };
  });
  return writeOperatorStream(streams, out);
}
