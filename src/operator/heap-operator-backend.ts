import type {
  OperatorBackendParams,
  OperatorStateBackend,
  RestoreSource,
  SnapshotOptions,
  SnapshotTask,
  StateOutputStream,
} from '../backend/contract.js';
import type {
  OperatorStateHandle,
  StreamHandle,
  OperatorStateMetaInfo,
  OperatorStateMode,
} from '../backend/handles.js';
import { SnapshotFlights } from '../backend/snapshot-flights.js';
import {
  FormatError,
  SnapshotError,
  StateMigrationError,
  StateRegistrationError,
  StreamStateError,
} from '../errors.js';
import { ByteReader, ByteWriter } from '../format/bytes.js';
import { defaultSerializer } from '../serializers/builtins.js';
import {
  resolveCompatibility,
  snapshotOf,
  type Serializer,
  type SerializerSnapshot,
} from '../serializers/serializer.js';
import type { MapStateDescriptor } from '../state/descriptors.js';
import type { BroadcastState, OperatorListState } from '../state/types.js';
import { HeapBroadcastState, HeapOperatorListState } from './operator-states.js';
import { readStreamHandle } from '../checkpoint/streams.js';
import { checkOffset, checkStreamHeader, OPERATOR_STREAM_MAGIC, OPERATOR_STREAM_VERSION } from './operator-stream.js';

/** Records of a restored state that was not registered yet, as written under one serializer. */
interface RestoredChunk {
  readonly valueSerializer: SerializerSnapshot;
  readonly keySerializer?: SerializerSnapshot;
  /** list: elements; broadcast: values */
  readonly values: Buffer[];
  /** broadcast: keys, parallel to values */
  readonly keys: Buffer[];
}

type StateEntry =
  | { readonly kind: 'list'; readonly mode: 'split' | 'union'; readonly state: HeapOperatorListState<unknown> }
  | { readonly kind: 'broadcast'; readonly mode: 'broadcast'; readonly state: HeapBroadcastState<unknown, unknown> }
  | { readonly kind: 'restored'; readonly mode: OperatorStateMode; readonly chunks: RestoredChunk[] };

const MODE_WORDS: Record<OperatorStateMode, string> = {
  split: 'split list state (getListState)',
  union: 'union list state (getUnionListState)',
  broadcast: 'broadcast state (getBroadcastState)',
};

function sameSnapshot(a: SerializerSnapshot, b: SerializerSnapshot): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/**
 * Operator (non-keyed) state of one subtask, held in memory for every backend and always
 * snapshotted in full. The synchronous part of a snapshot serializes every state (that is the
 * deep copy: later in-place mutation of elements cannot leak into it); the asynchronous part
 * writes the bytes as one exclusive stream.
 *
 * Restored states stay as bytes until they are registered; registration checks serializer
 * compatibility (lazily, as Flink does). Restored states that are never registered are carried
 * into later snapshots unchanged.
 */
export class HeapOperatorStateBackend implements OperatorStateBackend {
  private readonly states = new Map<string, StateEntry>();
  private readonly flights = new SnapshotFlights('the operator state backend');
  /** Shared with every handle (Lifecycle): after close() they throw BACKEND_CLOSED. */
  private readonly life = { closed: false };
  private get closed(): boolean {
    return this.life.closed;
  }

  constructor(private readonly description = 'operator state backend') {}

  /** A backend restored from `params.restore` (already repartitioned handles), or an empty one. */
  static async create(params: OperatorBackendParams): Promise<HeapOperatorStateBackend> {
    const backend = new HeapOperatorStateBackend(
      `operator state of ${params.operatorId} subtask ${params.subtaskIndex}/${params.parallelism}`,
    );
    if (params.restore) await backend.restore(params.restore);
    return backend;
  }

  // ------------------------------------------------------------ registration

  getListState<T>(name: string, serializer: Serializer<T> = defaultSerializer<T>()): OperatorListState<T> {
    return this.listState(name, 'split', serializer);
  }

  getUnionListState<T>(name: string, serializer: Serializer<T> = defaultSerializer<T>()): OperatorListState<T> {
    return this.listState(name, 'union', serializer);
  }

  getBroadcastState<K, V>(descriptor: MapStateDescriptor<K, V, unknown>): BroadcastState<K, V> {
    this.checkOpen();
    const { name, userKeySerializer, valueSerializer } = descriptor;
    const entry = this.states.get(name);
    this.checkMode(name, entry, 'broadcast');
    if (entry?.kind === 'broadcast') {
      entry.state.keySerializer = this.compatibleWith(
        name,
        snapshotOf(entry.state.keySerializer),
        userKeySerializer,
        false,
      ) as Serializer<unknown>;
      entry.state.valueSerializer = this.compatibleWith(
        name,
        snapshotOf(entry.state.valueSerializer),
        valueSerializer,
        false,
      ) as Serializer<unknown>;
      return entry.state as unknown as BroadcastState<K, V>;
    }
    const state = new HeapBroadcastState<K, V>(name, userKeySerializer, valueSerializer, this.life);
    if (entry?.kind === 'restored') {
      for (const chunk of entry.chunks) {
        if (chunk.keySerializer === undefined) throw this.corrupt(name, 'a broadcast state without a key serializer');
        const keys = this.compatibleWith(name, chunk.keySerializer, userKeySerializer, true);
        const values = this.compatibleWith(name, chunk.valueSerializer, valueSerializer, true);
        for (let i = 0; i < chunk.values.length; i++)
          state.put(keys.deserialize(chunk.keys[i]), values.deserialize(chunk.values[i]));
      }
    }
    this.states.set(name, {
      kind: 'broadcast',
      mode: 'broadcast',
      state: state as unknown as HeapBroadcastState<unknown, unknown>,
    });
    return state;
  }

  /** Names of every registered or restored (not yet registered) state. */
  stateNames(): string[] {
    this.checkOpen();
    return [...this.states.keys()];
  }

  private listState<T>(name: string, mode: 'split' | 'union', serializer: Serializer<T>): OperatorListState<T> {
    this.checkOpen();
    const entry = this.states.get(name);
    this.checkMode(name, entry, mode);
    if (entry?.kind === 'list') {
      entry.state.serializer = this.compatibleWith(
        name,
        snapshotOf(entry.state.serializer),
        serializer,
        false,
      ) as Serializer<unknown>;
      return entry.state as HeapOperatorListState<T>;
    }
    const state = new HeapOperatorListState<T>(name, mode, serializer, this.life);
    if (entry?.kind === 'restored') {
      const elements: T[] = [];
      for (const chunk of entry.chunks) {
        const reader = this.compatibleWith(name, chunk.valueSerializer, serializer, true);
        for (const bytes of chunk.values) elements.push(reader.deserialize(bytes));
      }
      state.update(elements);
    }
    this.states.set(name, { kind: 'list', mode, state: state as HeapOperatorListState<unknown> });
    return state;
  }

  private checkMode(name: string, entry: StateEntry | undefined, wanted: OperatorStateMode): void {
    if (entry === undefined || entry.mode === wanted) return;
    const origin = entry.kind === 'restored' ? 'was restored as' : 'is registered as';
    throw new StateRegistrationError(
      'STATE_KIND_MISMATCH',
      `operator state "${name}" ${origin} ${MODE_WORDS[entry.mode]} and cannot be used as ${MODE_WORDS[wanted]}. ` +
        'Keep using the original accessor, or give the new state another name.',
    );
  }

  /**
   * The serializer to read data recorded under `recorded` with. `restoring`: reading old bytes
   * (a migration reader is fine); otherwise a re-registration, which must be able to take over.
   */
  private compatibleWith<T>(
    name: string,
    recorded: SerializerSnapshot,
    current: Serializer<T>,
    restoring: boolean,
  ): Serializer<T> {
    if (!restoring && sameSnapshot(recorded, snapshotOf(current as Serializer<unknown>))) return current;
    const c = resolveCompatibility(recorded, current as Serializer<unknown>);
    if (c.kind === 'incompatible') {
      throw new StateMigrationError(
        'SERIALIZER_INCOMPATIBLE',
        `operator state "${name}": ${c.reason}. Register it with a serializer that can read the recorded data ` +
          '(same id and version, or one whose canMigrateFrom accepts it), or use another state name.',
      );
    }
    return restoring && c.kind === 'compatible-after-migration' ? (c.reader as Serializer<T>) : current;
  }

  // ------------------------------------------------------------ snapshots

  async snapshot(checkpointId: number, options: SnapshotOptions): Promise<SnapshotTask<OperatorStateHandle>> {
    this.checkOpen();
    if (this.states.size === 0) return { checkpointId, done: Promise.resolve(null) };
    const { bytes, metas } = this.serializeAll();
    const write = new AsyncStreamWrite(options, bytes, metas, checkpointId);
    return { checkpointId, done: this.flights.track(checkpointId, write.run(), () => write.cancel()) };
  }

  /** The synchronous part: every state into one buffer, with the offset of every record. */
  private serializeAll(): { bytes: Buffer; metas: OperatorStateMetaInfo[] } {
    const w = new ByteWriter();
    w.raw(OPERATOR_STREAM_MAGIC).u8(OPERATOR_STREAM_VERSION);
    const metas: OperatorStateMetaInfo[] = [];
    for (const [name, entry] of this.states) {
      if (entry.kind === 'list') {
        const s = entry.state.serializer;
        const offsets: number[] = [];
        for (const e of entry.state.get()) {
          offsets.push(w.length);
          w.bytes(s.serialize(e));
        }
        metas.push({ name, mode: entry.mode, valueSerializer: snapshotOf(s), offsets });
      } else if (entry.kind === 'broadcast') {
        const { keySerializer: ks, valueSerializer: vs } = entry.state;
        const offsets: number[] = [];
        for (const [k, v] of entry.state.entries()) {
          offsets.push(w.length);
          w.bytes(ks.serialize(k)).bytes(vs.serialize(v));
        }
        metas.push({
          name,
          mode: 'broadcast',
          valueSerializer: snapshotOf(vs),
          keySerializer: snapshotOf(ks),
          offsets,
        });
      } else {
        // Never registered since the restore: carried over byte for byte, one entry per serializer.
        for (const chunk of entry.chunks) {
          const offsets: number[] = [];
          for (let i = 0; i < chunk.values.length; i++) {
            offsets.push(w.length);
            if (entry.mode === 'broadcast') w.bytes(chunk.keys[i]);
            w.bytes(chunk.values[i]);
          }
          const meta: OperatorStateMetaInfo = {
            name,
            mode: entry.mode,
            valueSerializer: chunk.valueSerializer,
            offsets,
          };
          metas.push(chunk.keySerializer ? { ...meta, keySerializer: chunk.keySerializer } : meta);
        }
      }
    }
    return { bytes: w.toBuffer(), metas };
  }

  async notifyCheckpointComplete(): Promise<void> {}

  async notifyCheckpointAborted(checkpointId: number): Promise<void> {
    await this.flights.cancel(checkpointId);
  }

  async close(): Promise<void> {
    this.life.closed = true;
    await this.flights.cancelAll();
  }

  private checkOpen(): void {
    if (this.closed) {
      throw new StreamStateError(
        'BACKEND_CLOSED',
        `${this.description} is closed. Create a new backend (restoring from the last checkpoint) to continue.`,
      );
    }
  }

  // ------------------------------------------------------------ restore

  /** Reads exactly the records at the listed offsets, in handle order, then offset order. */
  private async restore(source: RestoreSource<OperatorStateHandle>): Promise<void> {
    for (const handle of source.handles) {
      if (handle.type !== 'operator')
        throw this.corrupt('?', `a handle of type "${String(handle.type)}" among the operator state handles`);
      const hasRecords = handle.states.some((s) => s.offsets.length > 0);
      const where = handle.stream.type === 'file' ? source.files.describe(handle.stream) : 'inline operator state';
      const bytes = hasRecords ? await readStreamHandle(handle.stream, source.files) : Buffer.alloc(0);
      if (hasRecords) checkStreamHeader(bytes, where);
      for (const meta of handle.states) this.restoreState(meta, bytes, where);
    }
  }

  private restoreState(meta: OperatorStateMetaInfo, bytes: Buffer, where: string): void {
    const entry = this.states.get(meta.name);
    if (entry !== undefined && (entry.kind !== 'restored' || entry.mode !== meta.mode)) {
      throw this.corrupt(meta.name, `modes ${entry.mode} and ${meta.mode} for the same state`);
    }
    if (meta.mode === 'broadcast' && meta.keySerializer === undefined)
      throw this.corrupt(meta.name, 'a broadcast state without a key serializer');
    const chunks = entry?.kind === 'restored' ? entry.chunks : [];
    if (entry === undefined) this.states.set(meta.name, { kind: 'restored', mode: meta.mode, chunks });
    let chunk = chunks.at(-1);
    if (
      chunk === undefined ||
      !sameSnapshot(chunk.valueSerializer, meta.valueSerializer) ||
      (meta.keySerializer !== undefined &&
        (chunk.keySerializer === undefined || !sameSnapshot(chunk.keySerializer, meta.keySerializer)))
    ) {
      chunk = meta.keySerializer
        ? { valueSerializer: meta.valueSerializer, keySerializer: meta.keySerializer, values: [], keys: [] }
        : { valueSerializer: meta.valueSerializer, values: [], keys: [] };
      chunks.push(chunk);
    }
    for (const offset of meta.offsets) {
      checkOffset(offset, bytes.length, where);
      const r = new ByteReader(bytes, where, offset);
      if (meta.mode === 'broadcast') chunk.keys.push(r.bytes());
      chunk.values.push(r.bytes());
    }
  }

  private corrupt(name: string, what: string): FormatError {
    return new FormatError(
      'CORRUPT',
      `operator state "${name}": the restore handles contain ${what}. The checkpoint's _metadata is damaged; restore from another checkpoint.`,
    );
  }
}

/** The asynchronous part of one snapshot: one exclusive stream; cancellable by close(). */
class AsyncStreamWrite {
  private cancelled = false;
  private stream: StateOutputStream | undefined;

  constructor(
    private readonly options: SnapshotOptions,
    private readonly bytes: Buffer,
    private readonly metas: OperatorStateMetaInfo[],
    private readonly checkpointId: number,
  ) {}

  async run(): Promise<OperatorStateHandle> {
    // Yield once so the caller regains control (and may resume processing) before any I/O starts.
    await Promise.resolve();
    this.throwIfCancelled();
    const stream = this.options.streams.createOutputStream('exclusive');
    this.stream = stream;
    let handle: StreamHandle | null;
    try {
      await stream.write(this.bytes);
      this.throwIfCancelled();
      handle = await stream.closeAndGetHandle();
    } catch (err) {
      await stream.discard().catch(() => undefined);
      if (this.cancelled) throw this.cancellation();
      if (err instanceof StreamStateError) throw err;
      throw new SnapshotError(
        'SNAPSHOT_FAILED',
        `writing operator state for checkpoint ${this.checkpointId} failed: ${(err as Error).message}`,
        { cause: err },
      );
    }
    if (this.cancelled) {
      if (handle?.type === 'file') await this.options.streams.discardFiles([handle]).catch(() => undefined);
      throw this.cancellation();
    }
    if (handle === null)
      throw new SnapshotError(
        'SNAPSHOT_FAILED',
        `the operator state stream of checkpoint ${this.checkpointId} came back empty.`,
      );
    return { type: 'operator', states: this.metas, stream: handle };
  }

  async cancel(): Promise<void> {
    this.cancelled = true;
    await this.stream?.discard().catch(() => undefined);
  }

  private throwIfCancelled(): void {
    if (this.cancelled) throw this.cancellation();
  }

  private cancellation(): SnapshotError {
    return new SnapshotError(
      'SNAPSHOT_CANCELLED',
      `the operator state snapshot of checkpoint ${this.checkpointId} was cancelled (the backend was closed, or the checkpoint aborted).`,
    );
  }
}

/** Convenience for StateBackend.createOperatorStateBackend implementations. */
export function createHeapOperatorStateBackend(params: OperatorBackendParams): Promise<HeapOperatorStateBackend> {
  return HeapOperatorStateBackend.create(params);
}
