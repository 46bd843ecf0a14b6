import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { StateBackend, StateFileReader } from '../backend/contract.js';
import type { KeyedStateMetaInfo, KeyGroupsStateHandle, OperatorStateMetaInfo } from '../backend/handles.js';
import { backendByName, keySerializerOf as recordedKeySerializerOf } from '../cli/backends.js';
import type { CheckpointMetadata, OperatorSnapshot } from '../checkpoint/metadata.js';
import type { ResolvedSnapshot } from '../checkpoint/storage.js';
import { readStreamHandle } from '../checkpoint/streams.js';
import { RestoreError, StateRegistrationError, StreamStateError } from '../errors.js';
import { ByteReader } from '../format/bytes.js';
import {
  listEntries,
  mapEntries,
  readKeyGroups,
  timerEntries,
  valueEntries,
  type RawSection,
} from '../format/key-groups-stream.js';
import { keyGroupForBytes } from '../keygroups/key-groups.js';
import { randomHex } from '../storage/blob-names.js';
import { checkOffset, checkStreamHeader } from '../operator/operator-stream.js';
import { convertSnapshot, type TemporaryPaths } from '../savepoint/convert.js';
import { checkKeyGroupCoverage } from '../savepoint/coverage.js';
import { keyGroupsHandlesOf } from '../savepoint/dump.js';
import { locateSnapshot, type LocatedSnapshot, type LocateOptions } from '../savepoint/locate.js';
import type { Serializer, SerializerSnapshot } from '../serializers/serializer.js';
import { fieldDecoder, readerFor, type Decoded, type FieldDecoder } from './decode.js';

/**
 * The read side of the State Processor API: any checkpoint or savepoint (local path or s3://
 * URL) as typed async iterables. Key-groups streams (canonical and heap savepoints, heap
 * checkpoints) are read in place; other handles (LevelDB native, changelog) are first restored
 * through the backend that wrote them into a canonical copy in a temporary directory (the
 * converter's path), removed by close().
 */

export interface OpenSnapshotOptions extends LocateOptions {
  /** Creates a backend by recorded name, for snapshots that must be restored to be read. Default: the CLI's (memory, filesystem, leveldb, changelog(...)). */
  readonly backendFor?: (name: string, workDir: string) => StateBackend;
  /**
   * Told the temporary directory of a canonical copy before it is created and once it is gone
   * (the CLI removes what is left on SIGINT/SIGTERM).
   */
  readonly temporaryPaths?: TemporaryPaths;
}

/** What a snapshot records about one keyed state or timer queue of an operator. */
export interface KeyedStateInfo {
  readonly name: string;
  readonly kind: KeyedStateMetaInfo['kind'];
  readonly namespaceSerializer: SerializerSnapshot;
  readonly valueSerializer?: SerializerSnapshot;
  readonly userKeySerializer?: SerializerSnapshot;
  readonly ttl: boolean;
}

export interface OperatorStateInfo {
  readonly name: string;
  readonly mode: OperatorStateMetaInfo['mode'];
  readonly valueSerializer: SerializerSnapshot;
  readonly keySerializer?: SerializerSnapshot;
}

export interface OperatorInfo {
  readonly operatorId: string;
  readonly parallelism: number;
  readonly maxParallelism: number;
  /** Absent when the operator holds no keyed state. */
  readonly keySerializer?: SerializerSnapshot;
  readonly keyedStates: readonly KeyedStateInfo[];
  readonly operatorStates: readonly OperatorStateInfo[];
}

/** Entries of value, reducing and aggregating states (aggregating: the accumulator). */
export interface KeyedValue<K, N, V> {
  readonly key: Decoded<K>;
  readonly namespace: Decoded<N>;
  readonly value: Decoded<V>;
  /** TTL states: the recorded last-access time (ms). */
  readonly lastAccess?: number;
}

export interface KeyedList<K, N, V> {
  readonly key: Decoded<K>;
  readonly namespace: Decoded<N>;
  readonly value: Decoded<V>[];
}

export interface KeyedMapEntry<K, N, UK, UV> {
  readonly key: Decoded<K>;
  readonly namespace: Decoded<N>;
  readonly userKey: Decoded<UK>;
  /** null: the map holds the user key with a null value. */
  readonly value: Decoded<UV> | null;
}

export interface KeyedTimer<K, N> {
  readonly key: Decoded<K>;
  readonly namespace: Decoded<N>;
  readonly timestamp: number;
}

/** One record of one key (readKey): which state, and the entry without the key. */
export type KeyRecord =
  | {
      readonly state: string;
      readonly kind: 'value' | 'reducing' | 'aggregating';
      readonly namespace: unknown;
      readonly value: unknown;
    }
  | { readonly state: string; readonly kind: 'list'; readonly namespace: unknown; readonly value: unknown[] }
  | {
      readonly state: string;
      readonly kind: 'map';
      readonly namespace: unknown;
      readonly userKey: unknown;
      readonly value: unknown;
    }
  | { readonly state: string; readonly kind: 'timers'; readonly namespace: unknown; readonly timestamp: number };

export interface ValueReadOptions<N, V> {
  readonly serializer?: Serializer<V>;
  readonly namespaceSerializer?: Serializer<N>;
}

export interface MapReadOptions<N, UK, UV> {
  readonly userKeySerializer?: Serializer<UK>;
  readonly valueSerializer?: Serializer<UV>;
  readonly namespaceSerializer?: Serializer<N>;
}

/** Opens the checkpoint or savepoint at `path` (its directory or _metadata; local or s3://). Close it when done. */
export async function openSnapshot(path: string, opts: OpenSnapshotOptions = {}): Promise<SnapshotReader> {
  const located = await locateSnapshot(path, opts);
  try {
    return await SnapshotReader.fromLocated(located, opts);
  } catch (err) {
    await located.close();
    throw err;
  }
}

function needsRestore(metadata: CheckpointMetadata): boolean {
  return metadata.operators.some((op) => keyGroupsHandlesOf(op).others.length > 0);
}

export class SnapshotReader {
  private constructor(
    /** The snapshot as recorded (the source's own _metadata). */
    readonly metadata: CheckpointMetadata,
    /** What is read: the snapshot itself, or its canonical copy. */
    private readonly view_: ResolvedSnapshot,
    private readonly release: () => Promise<void>,
  ) {}

  /** A reader over an already resolved snapshot whose keyed handles are all key-groups streams. */
  static of(snapshot: ResolvedSnapshot): SnapshotReader {
    if (needsRestore(snapshot.metadata)) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        'the snapshot holds handles that must be restored to be read (LevelDB native, changelog); open it with openSnapshot(path) instead.',
      );
    }
    return new SnapshotReader(snapshot.metadata, snapshot, async () => undefined);
  }

  static async fromLocated(located: LocatedSnapshot, opts: OpenSnapshotOptions = {}): Promise<SnapshotReader> {
    const md = located.snapshot.metadata;
    checkKeyGroupCoverage(md, `${md.kind} ${md.checkpointId} of job ${md.jobId}`);
    if (!needsRestore(md)) return new SnapshotReader(md, located.snapshot, () => located.close());
    // Named up front (not mkdtemp) so it is registered before it exists.
    const dir = join(tmpdir(), `streamstate-read-${randomHex(12)}`);
    const removeDir = async (): Promise<void> => {
      await rm(dir, { recursive: true, force: true });
      opts.temporaryPaths?.delete(dir);
    };
    opts.temporaryPaths?.add(dir);
    try {
      await mkdir(dir);
      const dst = join(dir, 'canonical');
      await convertSnapshot(located, dst, {
        target: md.backend,
        format: 'canonical',
        inFlightRecords: 'drop', // reads state only; the temporary copy is never restored
        backendFor: opts.backendFor ?? backendByName,
        keySerializerOf: recordedKeySerializerOf,
      });
      const copy = await locateSnapshot(dst);
      return new SnapshotReader(md, copy.snapshot, async () => {
        await copy.close();
        await located.close();
        await removeDir();
      });
    } catch (err) {
      await removeDir();
      throw err;
    }
  }

  /** The metadata and files read: the snapshot itself, or its canonical copy (every keyed handle a key-groups stream). */
  view(): ResolvedSnapshot {
    return this.view_;
  }

  get operatorIds(): string[] {
    return this.metadata.operators.map((o) => o.operatorId);
  }

  /** Every operator with its states and recorded serializers. */
  describe(): OperatorInfo[] {
    return this.view_.metadata.operators.map((o) => new OperatorReader<unknown>(o, this.view_.files, undefined).info);
  }

  /** One operator's state. `keySerializer` decodes keys written by a custom serializer (built-in ones are found by id). */
  operator<K = unknown>(operatorId: string, opts: { readonly keySerializer?: Serializer<K> } = {}): OperatorReader<K> {
    const op = this.view_.metadata.operators.find((o) => o.operatorId === operatorId);
    if (op === undefined) {
      throw new RestoreError(
        'UNKNOWN_OPERATOR',
        `the snapshot has no operator "${operatorId}" (operators: ${this.operatorIds.join(', ') || 'none'}). Pass one of those.`,
      );
    }
    return new OperatorReader<K>(op, this.view_.files, opts.keySerializer);
  }

  /** Releases connections and removes the temporary canonical copy, if one was made. */
  close(): Promise<void> {
    return this.release();
  }
}

interface StateSource {
  readonly handle: KeyGroupsStateHandle;
  readonly meta: KeyedStateMetaInfo;
}

export class OperatorReader<K> {
  readonly info: OperatorInfo;
  private readonly handles: KeyGroupsStateHandle[];

  constructor(
    private readonly op: OperatorSnapshot,
    private readonly files: StateFileReader,
    private readonly keySerializer: Serializer<K> | undefined,
  ) {
    this.handles = keyGroupsHandlesOf(op).handles;
    const keyed = new Map<string, KeyedStateInfo>();
    for (const h of this.handles) {
      for (const s of h.states) {
        const id = `${s.kind === 'timers' ? 't' : 's'}:${s.name}`;
        if (!keyed.has(id)) keyed.set(id, stateInfo(s));
      }
    }
    const operatorStates = new Map<string, OperatorStateInfo>();
    for (const sub of op.subtasks) {
      for (const h of sub.operator) {
        for (const s of h.states) {
          if (!operatorStates.has(s.name)) {
            operatorStates.set(s.name, {
              name: s.name,
              mode: s.mode,
              valueSerializer: s.valueSerializer,
              ...(s.keySerializer === undefined ? {} : { keySerializer: s.keySerializer }),
            });
          }
        }
      }
    }
    this.info = {
      operatorId: op.operatorId,
      parallelism: op.parallelism,
      maxParallelism: op.maxParallelism,
      ...(this.handles.length === 0 ? {} : { keySerializer: this.handles[0].keySerializer }),
      keyedStates: [...keyed.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
      operatorStates: [...operatorStates.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    };
  }

  private what(state: string): string {
    return `operator ${this.op.operatorId}, state "${state}"`;
  }

  private keyDecoder(): FieldDecoder<K> {
    const recorded = this.info.keySerializer;
    return fieldDecoder(recorded, this.keySerializer, `operator ${this.op.operatorId}, key serializer`);
  }

  /** The handles holding `state` of one of `kinds`, with its meta info in each; UNKNOWN state: STATE_NOT_REGISTERED. */
  private sources(state: string, kinds: readonly KeyedStateMetaInfo['kind'][]): StateSource[] {
    const out: StateSource[] = [];
    let other: KeyedStateMetaInfo | undefined;
    for (const h of this.handles) {
      for (const m of h.states) {
        if (m.name !== state) continue;
        if (kinds.includes(m.kind)) out.push({ handle: h, meta: m });
        else other ??= m;
      }
    }
    if (out.length > 0) return out;
    if (other !== undefined) {
      throw new StateRegistrationError(
        'STATE_KIND_MISMATCH',
        `${this.what(state)} is a ${other.kind} state; read it with the reader for ${other.kind} (${kinds.join('/')} asked).`,
      );
    }
    if (this.info.operatorStates.some((s) => s.name === state)) {
      throw new StateRegistrationError(
        'STATE_KIND_MISMATCH',
        `${this.what(state)} is operator state; read it with operatorListState or broadcastState.`,
      );
    }
    throw new StateRegistrationError(
      'STATE_NOT_REGISTERED',
      `operator ${this.op.operatorId} has no keyed state "${state}" (keyed states: ${this.info.keyedStates.map((s) => s.name).join(', ') || 'none'}).`,
    );
  }

  private async *sections(
    sources: StateSource[],
  ): AsyncGenerator<{ section: RawSection; meta: KeyedStateMetaInfo; keyGroup: number }> {
    for (const { handle, meta } of sources) {
      for await (const kg of readKeyGroups(handle, this.files, handle.keyGroupRange)) {
        for (const section of kg.sections)
          if (section.stateId === meta.stateId) yield { section, meta, keyGroup: kg.keyGroup };
      }
    }
  }

  /** Entries of a value, reducing or aggregating state (aggregating: accumulators). */
  async *values<V = unknown, N = unknown>(
    state: string,
    opts: ValueReadOptions<N, V> = {},
  ): AsyncGenerator<KeyedValue<K, N, V>> {
    const sources = this.sources(state, ['value', 'reducing', 'aggregating']);
    const key = this.keyDecoder();
    const what = this.what(state);
    for await (const { section, meta } of this.sections(sources)) {
      const ns = fieldDecoder(meta.namespaceSerializer, opts.namespaceSerializer, `${what}, namespace`);
      const val = fieldDecoder(meta.valueSerializer, opts.serializer, what);
      for (const e of valueEntries(section, what)) {
        yield {
          key: key.decode(e.key),
          namespace: ns.decode(e.namespace),
          value: val.decode(e.value),
          ...(val.ttl ? { lastAccess: val.timestamp(e.value) } : {}),
        };
      }
    }
  }

  /** Entries of a list state: each (key, namespace) with its elements in order. */
  async *lists<V = unknown, N = unknown>(
    state: string,
    opts: ValueReadOptions<N, V> = {},
  ): AsyncGenerator<KeyedList<K, N, V>> {
    const sources = this.sources(state, ['list']);
    const key = this.keyDecoder();
    const what = this.what(state);
    for await (const { section, meta } of this.sections(sources)) {
      const ns = fieldDecoder(meta.namespaceSerializer, opts.namespaceSerializer, `${what}, namespace`);
      const val = fieldDecoder(meta.valueSerializer, opts.serializer, what);
      for (const e of listEntries(section, what))
        yield {
          key: key.decode(e.key),
          namespace: ns.decode(e.namespace),
          value: e.elements.map((x) => val.decode(x)),
        };
    }
  }

  /** Entries of a map state, one per (key, namespace, user key). */
  async *mapEntries<UK = unknown, UV = unknown, N = unknown>(
    state: string,
    opts: MapReadOptions<N, UK, UV> = {},
  ): AsyncGenerator<KeyedMapEntry<K, N, UK, UV>> {
    const sources = this.sources(state, ['map']);
    const key = this.keyDecoder();
    const what = this.what(state);
    for await (const { section, meta } of this.sections(sources)) {
      const ns = fieldDecoder(meta.namespaceSerializer, opts.namespaceSerializer, `${what}, namespace`);
      const uk = fieldDecoder(meta.userKeySerializer, opts.userKeySerializer, `${what}, user key`);
      const val = fieldDecoder(meta.valueSerializer, opts.valueSerializer, what);
      for (const e of mapEntries(section, what)) {
        const k = key.decode(e.key);
        const n = ns.decode(e.namespace);
        for (const [u, v] of e.entries)
          yield { key: k, namespace: n, userKey: uk.decode(u), value: v === null ? null : val.decode(v) };
      }
    }
  }

  /** The timers of a timer queue. */
  async *timers<N = unknown>(
    queue: string,
    opts: { readonly namespaceSerializer?: Serializer<N> } = {},
  ): AsyncGenerator<KeyedTimer<K, N>> {
    const sources = this.sources(queue, ['timers']);
    const key = this.keyDecoder();
    const what = this.what(queue);
    for await (const { section, meta } of this.sections(sources)) {
      const ns = fieldDecoder(meta.namespaceSerializer, opts.namespaceSerializer, `${what}, namespace`);
      for (const t of timerEntries(section, what))
        yield { key: key.decode(t.key), namespace: ns.decode(t.namespace), timestamp: t.timestamp };
    }
  }

  /**
   * Every record of one key, in every keyed state and timer queue: reads only the block of the
   * key's key group (a ranged read of each handle covering it). Values decode with built-in
   * serializers or stay UndecodedBytes.
   */
  async readKey(key: K): Promise<{ keyGroup: number; records: KeyRecord[] }> {
    const recorded = this.info.keySerializer;
    if (recorded === undefined) return { keyGroup: -1, records: [] };
    const serializer = readerFor(recorded, this.keySerializer, `operator ${this.op.operatorId}, key serializer`);
    if (serializer === undefined) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `operator ${this.op.operatorId}'s keys were written by the custom serializer ${recorded.id}; pass it as keySerializer to read one key.`,
      );
    }
    const keyBytes = Buffer.from(serializer.serialize(key));
    const keyGroup = keyGroupForBytes(keyBytes, this.op.maxParallelism);
    const records: KeyRecord[] = [];
    for (const h of this.handles) {
      if (keyGroup < h.keyGroupRange.start || keyGroup > h.keyGroupRange.end) continue;
      const metas = new Map(h.states.map((s) => [s.stateId, s]));
      for await (const kg of readKeyGroups(h, this.files, { start: keyGroup, end: keyGroup })) {
        for (const section of kg.sections) {
          const meta = metas.get(section.stateId)!;
          records.push(...keyRecords(section, meta, keyBytes, this.what(meta.name)));
        }
      }
    }
    return { keyGroup, records };
  }

  /** Elements of a split or union list operator state, with the subtask that stored each. */
  async *operatorListState<V = unknown>(
    state: string,
    opts: { readonly serializer?: Serializer<V> } = {},
  ): AsyncGenerator<{ subtask: number; value: Decoded<V> }> {
    for await (const r of this.operatorRecords(state, ['split', 'union'])) {
      const val = fieldDecoder(r.meta.valueSerializer, opts.serializer, this.what(state));
      yield { subtask: r.subtask, value: val.decode(r.reader.bytes()) };
    }
  }

  /** Entries of a broadcast state (one copy: every subtask holds the same). */
  async *broadcastState<BK = unknown, BV = unknown>(
    state: string,
    opts: { readonly keySerializer?: Serializer<BK>; readonly valueSerializer?: Serializer<BV> } = {},
  ): AsyncGenerator<{ key: Decoded<BK>; value: Decoded<BV> }> {
    let first: number | undefined;
    for await (const r of this.operatorRecords(state, ['broadcast'])) {
      first ??= r.subtask;
      if (r.subtask !== first) return;
      const k = fieldDecoder(r.meta.keySerializer, opts.keySerializer, `${this.what(state)}, key`).decode(
        r.reader.bytes(),
      );
      yield {
        key: k,
        value: fieldDecoder(r.meta.valueSerializer, opts.valueSerializer, this.what(state)).decode(r.reader.bytes()),
      };
    }
  }

  private async *operatorRecords(
    state: string,
    modes: readonly OperatorStateMetaInfo['mode'][],
  ): AsyncGenerator<{ subtask: number; meta: OperatorStateMetaInfo; reader: ByteReader }> {
    const info = this.info.operatorStates.find((s) => s.name === state);
    if (info === undefined) {
      throw new StateRegistrationError(
        'STATE_NOT_REGISTERED',
        `operator ${this.op.operatorId} has no operator state "${state}" (operator states: ${this.info.operatorStates.map((s) => s.name).join(', ') || 'none'}).`,
      );
    }
    if (!modes.includes(info.mode)) {
      throw new StateRegistrationError(
        'STATE_KIND_MISMATCH',
        `${this.what(state)} is ${info.mode} operator state; read it with ${info.mode === 'broadcast' ? 'broadcastState' : 'operatorListState'}.`,
      );
    }
    for (const sub of [...this.op.subtasks].sort((a, b) => a.subtaskIndex - b.subtaskIndex)) {
      for (const h of sub.operator) {
        const metas = h.states.filter((s) => s.name === state && s.offsets.length > 0);
        if (metas.length === 0) continue;
        const what = `operator ${this.op.operatorId} subtask ${sub.subtaskIndex}, operator state`;
        const bytes = await readStreamHandle(h.stream, this.files);
        checkStreamHeader(bytes, what);
        for (const meta of metas) {
          for (const offset of meta.offsets) {
            checkOffset(offset, bytes.length, what);
            yield { subtask: sub.subtaskIndex, meta, reader: new ByteReader(bytes, `${what} "${state}"`, offset) };
          }
        }
      }
    }
  }
}

function stateInfo(s: KeyedStateMetaInfo): KeyedStateInfo {
  return {
    name: s.name,
    kind: s.kind,
    namespaceSerializer: s.namespaceSerializer,
    ...(s.valueSerializer === undefined ? {} : { valueSerializer: s.valueSerializer }),
    ...(s.userKeySerializer === undefined ? {} : { userKeySerializer: s.userKeySerializer }),
    ttl: s.ttl,
  };
}

/** The records of `section` whose key bytes equal `keyBytes`, decoded with built-ins. */
function keyRecords(section: RawSection, meta: KeyedStateMetaInfo, keyBytes: Buffer, what: string): KeyRecord[] {
  const ns = fieldDecoder<unknown>(meta.namespaceSerializer, undefined, `${what}, namespace`);
  const val = fieldDecoder<unknown>(meta.valueSerializer, undefined, what);
  const out: KeyRecord[] = [];
  if (meta.kind === 'timers') {
    for (const t of timerEntries(section, what))
      if (t.key.equals(keyBytes))
        out.push({ state: meta.name, kind: 'timers', namespace: ns.decode(t.namespace), timestamp: t.timestamp });
  } else if (meta.kind === 'list') {
    for (const e of listEntries(section, what))
      if (e.key.equals(keyBytes))
        out.push({
          state: meta.name,
          kind: 'list',
          namespace: ns.decode(e.namespace),
          value: e.elements.map((x) => val.decode(x)),
        });
  } else if (meta.kind === 'map') {
    const uk = fieldDecoder<unknown>(meta.userKeySerializer, undefined, `${what}, user key`);
    for (const e of mapEntries(section, what)) {
      if (!e.key.equals(keyBytes)) continue;
      for (const [u, v] of e.entries)
        out.push({
          state: meta.name,
          kind: 'map',
          namespace: ns.decode(e.namespace),
          userKey: uk.decode(u),
          value: v === null ? null : val.decode(v),
        });
    }
  } else {
    for (const e of valueEntries(section, what))
      if (e.key.equals(keyBytes))
        out.push({ state: meta.name, kind: meta.kind, namespace: ns.decode(e.namespace), value: val.decode(e.value) });
  }
  return out;
}
