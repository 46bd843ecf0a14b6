import type { StateFileReader } from '../backend/contract.js';
import type { KeyGroupsStateHandle, OperatorStateHandle } from '../backend/handles.js';
import type { CheckpointMetadata, OperatorSnapshot } from '../checkpoint/metadata.js';
import { readStreamHandle } from '../checkpoint/streams.js';
import { RestoreError, StateRegistrationError, StreamStateError } from '../errors.js';
import { ByteReader } from '../format/bytes.js';
import { listEntries, mapEntries, readKeyGroups, timerEntries, valueEntries } from '../format/key-groups-stream.js';
import { checkOffset, checkStreamHeader } from '../operator/operator-stream.js';
import { checkKeyGroupCoverage } from './coverage.js';
import { keyGroupsHandlesIn } from './inspect.js';
import { decodeToJson, type JsonValue } from './values.js';

/**
 * `streamstate dump`: the records of one operator's states as JSON objects, one per line. Values
 * written by built-in serializers are decoded; others appear as {"$serializer": id, "$base64": ...}.
 *
 *   keyed value/reducing/aggregating: {state, kind, keyGroup, key, namespace, value}
 *   keyed list:                       {state, kind, keyGroup, key, namespace, value: [...]}
 *   keyed map (one line per entry):   {state, kind, keyGroup, key, namespace, userKey, value}
 *   timers:                           {state, kind, keyGroup, timestamp, key, namespace}
 *   operator list/union:              {state, kind, subtask, value}
 *   broadcast (first subtask's copy): {state, kind, key, value}
 */

export interface DumpOptions {
  readonly operatorId: string;
  /** Only this state (keyed or operator); default all. */
  readonly stateName?: string;
}

export type DumpRecord = { readonly [k: string]: JsonValue };

function findOperator(metadata: CheckpointMetadata, operatorId: string): OperatorSnapshot {
  const op = metadata.operators.find((o) => o.operatorId === operatorId);
  if (op === undefined) {
    const known = metadata.operators.map((o) => o.operatorId).join(', ') || 'none';
    throw new RestoreError(
      'UNKNOWN_OPERATOR',
      `the snapshot has no operator "${operatorId}" (operators: ${known}). Pass one of those to --operator.`,
    );
  }
  return op;
}

/** The operator's keyed handles that can be read record by record (key-groups streams). */
export function keyGroupsHandlesOf(op: OperatorSnapshot): { handles: KeyGroupsStateHandle[]; others: string[] } {
  const handles: KeyGroupsStateHandle[] = [];
  const others: string[] = [];
  for (const s of [...op.subtasks].sort((a, b) => a.subtaskIndex - b.subtaskIndex)) {
    for (const h of s.keyed) {
      const kgs = keyGroupsHandlesIn(h);
      if (h.type !== 'key-groups') others.push(h.type);
      else handles.push(...kgs);
    }
  }
  return { handles, others };
}

/**
 * Yields the records of an operator. Every keyed handle must be a key-groups handle: convert
 * other snapshots first (the CLI does that through the backend that wrote them).
 */
export async function* dumpOperator(
  metadata: CheckpointMetadata,
  files: StateFileReader,
  opts: DumpOptions,
): AsyncGenerator<DumpRecord> {
  const op = findOperator(metadata, opts.operatorId);
  checkKeyGroupCoverage(metadata, `${metadata.kind} ${metadata.checkpointId} of job ${metadata.jobId}`, op.operatorId);
  const { handles, others } = keyGroupsHandlesOf(op);
  if (others.length > 0) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `operator ${op.operatorId} holds ${[...new Set(others)].join(', ')} handles, which dump cannot read directly; convert the snapshot to canonical first.`,
    );
  }
  const names = new Set<string>();
  for (const h of handles) for (const s of h.states) names.add(s.name);
  for (const s of op.subtasks) for (const h of s.operator) for (const st of h.states) names.add(st.name);
  if (opts.stateName !== undefined && !names.has(opts.stateName)) {
    throw new StateRegistrationError(
      'STATE_NOT_REGISTERED',
      `operator ${op.operatorId} has no state "${opts.stateName}" (states: ${[...names].sort().join(', ') || 'none'}).`,
    );
  }
  for (const h of handles) yield* dumpKeyGroups(h, files, opts.stateName);
  yield* dumpOperatorState(op, files, opts.stateName);
}

async function* dumpKeyGroups(
  h: KeyGroupsStateHandle,
  files: StateFileReader,
  only: string | undefined,
): AsyncGenerator<DumpRecord> {
  const metas = new Map(h.states.map((s) => [s.stateId, s]));
  for await (const kg of readKeyGroups(h, files, h.keyGroupRange)) {
    const sections = kg.sections
      .map((s) => ({ s, meta: metas.get(s.stateId)! }))
      .filter((x) => only === undefined || x.meta.name === only)
      .sort((a, b) => (a.meta.name < b.meta.name ? -1 : a.meta.name > b.meta.name ? 1 : 0));
    for (const { s, meta } of sections) {
      const base = { state: meta.name, kind: meta.kind, keyGroup: kg.keyGroup };
      const key = (b: Buffer): JsonValue => decodeToJson(b, h.keySerializer);
      const ns = (b: Buffer): JsonValue => decodeToJson(b, meta.namespaceSerializer);
      const val = (b: Buffer): JsonValue => decodeToJson(b, meta.valueSerializer);
      if (meta.kind === 'timers') {
        for (const t of timerEntries(s))
          yield { ...base, timestamp: t.timestamp, key: key(t.key), namespace: ns(t.namespace) };
      } else if (meta.kind === 'list') {
        for (const e of listEntries(s))
          yield { ...base, key: key(e.key), namespace: ns(e.namespace), value: e.elements.map(val) };
      } else if (meta.kind === 'map') {
        for (const e of mapEntries(s)) {
          const k = key(e.key);
          const n = ns(e.namespace);
          for (const [uk, v] of e.entries)
            yield {
              ...base,
              key: k,
              namespace: n,
              userKey: decodeToJson(uk, meta.userKeySerializer),
              value: v === null ? null : val(v),
            };
        }
      } else {
        for (const e of valueEntries(s))
          yield { ...base, key: key(e.key), namespace: ns(e.namespace), value: val(e.value) };
      }
    }
  }
}

async function* dumpOperatorState(
  op: OperatorSnapshot,
  files: StateFileReader,
  only: string | undefined,
): AsyncGenerator<DumpRecord> {
  const broadcastDone = new Set<string>();
  for (const sub of [...op.subtasks].sort((a, b) => a.subtaskIndex - b.subtaskIndex)) {
    for (const h of sub.operator as readonly OperatorStateHandle[]) {
      const states = h.states.filter((s) => (only === undefined || s.name === only) && s.offsets.length > 0);
      if (states.length === 0) continue;
      const what = `operator ${op.operatorId} subtask ${sub.subtaskIndex}, operator state`;
      const bytes = await readStreamHandle(h.stream, files);
      checkStreamHeader(bytes, what);
      for (const s of states) {
        if (s.mode === 'broadcast') {
          // Broadcast state is the same on every subtask: one copy.
          if (broadcastDone.has(s.name)) continue;
          broadcastDone.add(s.name);
        }
        for (const offset of s.offsets) {
          checkOffset(offset, bytes.length, what);
          const r = new ByteReader(bytes, `${what} "${s.name}"`, offset);
          if (s.mode === 'broadcast') {
            const k = decodeToJson(r.bytes(), s.keySerializer);
            yield { state: s.name, kind: 'broadcast', key: k, value: decodeToJson(r.bytes(), s.valueSerializer) };
          } else {
            yield {
              state: s.name,
              kind: s.mode === 'union' ? 'union-list' : 'operator-list',
              subtask: sub.subtaskIndex,
              value: decodeToJson(r.bytes(), s.valueSerializer),
            };
          }
        }
      }
    }
  }
}
