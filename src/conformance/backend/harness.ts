import { randomBytes } from 'node:crypto';
import { presetStorage } from '../../backend/preset.js';
import type {
  CheckpointStreamFactory,
  KeyedBackendParams,
  KeyedStateBackend,
  OperatorStateBackend,
  RestoreSource,
  SnapshotOptions,
  StateBackend,
  StateFileReader,
} from '../../backend/contract.js';
import type { KeyedStateHandle, OperatorStateHandle } from '../../backend/handles.js';
import { assignKeyedState, assignOperatorState } from '../../checkpoint/assignment.js';
import type { CheckpointMetadata, OperatorSnapshot, SubtaskStateSnapshot } from '../../checkpoint/metadata.js';
import type { CheckpointStorage } from '../../checkpoint/storage.js';
import { DEFAULT_MAX_PARALLELISM, keyGroupRangeForSubtask } from '../../keygroups/key-groups.js';
import type { Serializer } from '../../serializers/serializer.js';

/**
 * The fixture every conformance test runs on: it drives a StateBackend the way a runtime does.
 * Snapshots go through real checkpoint streams, a real _metadata file (write + resolve), and
 * restores are routed with the real assignment functions, so rescaling is exercised end to end.
 */

export interface BackendFixture {
  readonly backend: StateBackend;
  /** Checkpoint storage to use; default backend.checkpointStorage. */
  readonly storage?: CheckpointStorage;
  cleanup(): Promise<void>;
}

export type MakeBackend = () => Promise<BackendFixture>;

export interface KeyedSpec<K> {
  readonly keySerializer: Serializer<K>;
  /** Default 128. */
  readonly maxParallelism?: number;
  /** Default 1. */
  readonly parallelism?: number;
  /** Default 0. */
  readonly subtask?: number;
  readonly clock?: () => number;
}

export interface OperatorSpec {
  readonly parallelism?: number;
  readonly subtask?: number;
}

/** Where a backend sits in its operator, remembered so snapshots can be written as a runtime would. */
interface Placement {
  readonly kind: 'keyed' | 'operator';
  readonly subtaskIndex: number;
  readonly parallelism: number;
  readonly maxParallelism: number;
}

type AnyKeyed = KeyedStateBackend<unknown>;
type AnyBackend = AnyKeyed | OperatorStateBackend;

export interface SnapshotRun {
  readonly checkpointId: number;
  /** The factories the subtasks wrote through (the wrapped ones when `wrapStreams` was given). */
  readonly streams: readonly CheckpointStreamFactory[];
  /** Waits for every subtask's asynchronous part, then writes _metadata. Resolves with the pointer. */
  complete(): Promise<string>;
  /** The raw `done` promises, one per backend, in the order given. */
  readonly done: readonly Promise<unknown>[];
}

export interface StartSnapshotOptions {
  /** Wraps each subtask's stream factory (e.g. in a GatedStreamFactory). */
  readonly wrapStreams?: (inner: CheckpointStreamFactory, index: number) => CheckpointStreamFactory;
  readonly type?: SnapshotOptions['type'];
  readonly format?: SnapshotOptions['format'];
}

export interface RestoreKeyedOptions<K> {
  readonly keySerializer: Serializer<K>;
  /** Target parallelism; default the snapshot's. */
  readonly parallelism?: number;
  /** Default the snapshot's (passing another one must fail). */
  readonly maxParallelism?: number;
  readonly clock?: () => number;
  readonly mode?: 'claim' | 'no-claim';
}

export class BackendHarness {
  readonly jobId = `job-${randomBytes(6).toString('hex')}`;
  readonly operatorId = 'op-1';
  private nextCheckpointId = 1;
  private readonly placements = new WeakMap<object, Placement>();
  private readonly open = new Set<AnyBackend>();

  private constructor(
    readonly backend: StateBackend,
    readonly storage: CheckpointStorage,
    private readonly fixture: BackendFixture,
  ) {}

  static async create(make: MakeBackend): Promise<BackendHarness> {
    const fixture = await make();
    const storage = fixture.storage ?? presetStorage(fixture.backend);
    if (!storage)
      throw new Error(`backend ${fixture.backend.name} brings no checkpoint storage; the fixture must pass one`);
    return new BackendHarness(fixture.backend, storage, fixture);
  }

  /** Closes every backend the harness created (close is idempotent) and cleans the fixture up. */
  async dispose(): Promise<void> {
    const all = [...this.open];
    this.open.clear();
    await Promise.allSettled(all.map((b) => b.close()));
    await this.fixture.cleanup();
  }

  // ------------------------------------------------------------------ creating backends

  keyedParams<K>(spec: KeyedSpec<K>, restore?: RestoreSource<KeyedStateHandle>): KeyedBackendParams<K> {
    const maxParallelism = spec.maxParallelism ?? DEFAULT_MAX_PARALLELISM;
    const parallelism = spec.parallelism ?? 1;
    const subtaskIndex = spec.subtask ?? 0;
    return {
      jobId: this.jobId,
      operatorId: this.operatorId,
      subtaskIndex,
      parallelism,
      maxParallelism,
      keyGroupRange: keyGroupRangeForSubtask(maxParallelism, parallelism, subtaskIndex),
      keySerializer: spec.keySerializer,
      ...(restore ? { restore } : {}),
      ...(spec.clock ? { clock: spec.clock } : {}),
    };
  }

  /** A keyed backend for one subtask (fresh, or restored from `restore`). */
  async createKeyed<K>(spec: KeyedSpec<K>, restore?: RestoreSource<KeyedStateHandle>): Promise<KeyedStateBackend<K>> {
    return this.createKeyedFromParams(this.keyedParams(spec, restore));
  }

  /** Creates a keyed backend from explicit params (for tests that bypass assignment on purpose). */
  async createKeyedFromParams<K>(params: KeyedBackendParams<K>): Promise<KeyedStateBackend<K>> {
    const b = await this.backend.createKeyedStateBackend(params);
    this.track(b as unknown as AnyKeyed, {
      kind: 'keyed',
      subtaskIndex: params.subtaskIndex,
      parallelism: params.parallelism,
      maxParallelism: params.maxParallelism,
    });
    return b;
  }

  async createOperator(
    spec: OperatorSpec = {},
    restore?: RestoreSource<OperatorStateHandle>,
  ): Promise<OperatorStateBackend> {
    const subtaskIndex = spec.subtask ?? 0;
    const parallelism = spec.parallelism ?? 1;
    const b = await this.backend.createOperatorStateBackend({
      jobId: this.jobId,
      operatorId: this.operatorId,
      subtaskIndex,
      parallelism,
      ...(restore ? { restore } : {}),
    });
    this.track(b, { kind: 'operator', subtaskIndex, parallelism, maxParallelism: DEFAULT_MAX_PARALLELISM });
    return b;
  }

  /** A whole keyed operator: one backend per subtask. */
  async createKeyedOperator<K>(
    spec: Omit<KeyedSpec<K>, 'subtask'> & { parallelism: number },
  ): Promise<KeyedStateBackend<K>[]> {
    const out: KeyedStateBackend<K>[] = [];
    for (let i = 0; i < spec.parallelism; i++) out.push(await this.createKeyed({ ...spec, subtask: i }));
    return out;
  }

  private track(b: AnyBackend, placement: Placement): void {
    this.placements.set(b, placement);
    this.open.add(b);
  }

  async close(b: AnyBackend | KeyedStateBackend<never>): Promise<void> {
    this.open.delete(b as AnyBackend);
    await b.close();
  }

  // ------------------------------------------------------------------ snapshots

  /**
   * Starts one checkpoint over `backends` (the subtasks of one operator; a keyed and an operator
   * backend of the same subtask may both be given). Resolves when every synchronous part is done.
   */
  async startSnapshot(backends: readonly unknown[], opts: StartSnapshotOptions = {}): Promise<SnapshotRun> {
    const checkpointId = this.nextCheckpointId++;
    const inner = this.storage.checkpointStreams(this.jobId, checkpointId);
    const streams: CheckpointStreamFactory[] = [];
    const done: Promise<unknown>[] = [];
    const parts: { placement: Placement; done: Promise<unknown> }[] = [];
    for (const [i, raw] of backends.entries()) {
      const b = raw as AnyBackend;
      const placement = this.placements.get(b);
      if (!placement) throw new Error('startSnapshot: backend was not created by this harness');
      const factory = opts.wrapStreams ? opts.wrapStreams(inner, i) : inner;
      streams.push(factory);
      const task = await b.snapshot(checkpointId, {
        type: opts.type ?? 'checkpoint',
        ...(opts.format ? { format: opts.format } : {}),
        streams: factory,
      });
      // Avoid unhandled-rejection noise: tests that expect a failure await `done` themselves.
      task.done.catch(() => undefined);
      done.push(task.done);
      parts.push({ placement, done: task.done });
    }
    const complete = async (): Promise<string> => {
      const subtasks = new Map<number, { keyed: KeyedStateHandle[]; operator: OperatorStateHandle[] }>();
      let parallelism = 1;
      let maxParallelism = DEFAULT_MAX_PARALLELISM;
      // A failed part fails the checkpoint only once every part stopped writing: a sibling still
      // retrying an upload would otherwise land a file after the caller cleaned up (gc, asserts).
      const settled = await Promise.allSettled(parts.map((p) => p.done));
      for (const r of settled) if (r.status === 'rejected') throw r.reason;
      for (const [i, part] of parts.entries()) {
        const handle = (settled[i] as PromiseFulfilledResult<unknown>).value;
        const { placement } = part;
        parallelism = placement.parallelism;
        if (placement.kind === 'keyed') maxParallelism = placement.maxParallelism;
        const entry = subtasks.get(placement.subtaskIndex) ?? { keyed: [], operator: [] };
        subtasks.set(placement.subtaskIndex, entry);
        if (handle === null) continue;
        if (placement.kind === 'keyed') entry.keyed.push(handle as KeyedStateHandle);
        else entry.operator.push(handle as OperatorStateHandle);
      }
      const operator: OperatorSnapshot = {
        operatorId: this.operatorId,
        parallelism,
        maxParallelism,
        subtasks: [...subtasks.entries()]
          .sort((a, b) => a[0] - b[0])
          .map(([subtaskIndex, h]): SubtaskStateSnapshot => ({ subtaskIndex, keyed: h.keyed, operator: h.operator })),
      };
      const metadata: CheckpointMetadata = {
        checkpointId,
        jobId: this.jobId,
        kind: opts.type ?? 'checkpoint',
        format: opts.format ?? 'native',
        backend: this.backend.name,
        timestamp: Date.now(),
        operators: [operator],
      };
      const pointer = this.storage.checkpointPointer(this.jobId, checkpointId);
      await this.storage.writeMetadata(pointer, metadata);
      return pointer;
    };
    return { checkpointId, streams, done, complete };
  }

  /** Snapshot → wait → _metadata. Returns the pointer. */
  async checkpoint(backends: readonly unknown[], opts: StartSnapshotOptions = {}): Promise<string> {
    return (await this.startSnapshot(backends, opts)).complete();
  }

  /** The raw handle one backend's snapshot produces (null for an empty backend). */
  async snapshotHandle(backend: unknown): Promise<KeyedStateHandle | OperatorStateHandle | null> {
    const run = await this.startSnapshot([backend]);
    return (await run.done[0]) as KeyedStateHandle | OperatorStateHandle | null;
  }

  // ------------------------------------------------------------------ restores

  /** Reads _metadata back (the way a restarted job would) and returns our operator's snapshot. */
  async resolve(
    pointer: string,
  ): Promise<{ operator: OperatorSnapshot; files: StateFileReader; checkpointId: number }> {
    const resolved = await this.storage.resolve(pointer);
    const operator = resolved.metadata.operators.find((o) => o.operatorId === this.operatorId);
    if (!operator) throw new Error(`snapshot ${pointer} has no state for ${this.operatorId}`);
    return { operator, files: resolved.files, checkpointId: resolved.metadata.checkpointId };
  }

  /** Restores every subtask of the keyed operator at the target parallelism (rescaling through assignKeyedState). */
  async restoreKeyed<K>(pointer: string, opts: RestoreKeyedOptions<K>): Promise<KeyedStateBackend<K>[]> {
    const { operator, files, checkpointId } = await this.resolve(pointer);
    const parallelism = opts.parallelism ?? operator.parallelism;
    const maxParallelism = opts.maxParallelism ?? operator.maxParallelism;
    const assigned = assignKeyedState(operator, parallelism, maxParallelism);
    const out: KeyedStateBackend<K>[] = [];
    for (let i = 0; i < parallelism; i++) {
      const restore: RestoreSource<KeyedStateHandle> = {
        handles: assigned[i] ?? [],
        files,
        mode: opts.mode ?? 'no-claim',
        checkpointId,
      };
      out.push(
        await this.createKeyed(
          {
            keySerializer: opts.keySerializer,
            maxParallelism,
            parallelism,
            subtask: i,
            ...(opts.clock ? { clock: opts.clock } : {}),
          },
          restore,
        ),
      );
    }
    return out;
  }

  /** Restores one subtask of the keyed operator (the others are not created). */
  async restoreKeyedSubtask<K>(
    pointer: string,
    subtask: number,
    opts: RestoreKeyedOptions<K>,
  ): Promise<KeyedStateBackend<K>> {
    const { operator, files, checkpointId } = await this.resolve(pointer);
    const parallelism = opts.parallelism ?? operator.parallelism;
    const maxParallelism = opts.maxParallelism ?? operator.maxParallelism;
    const assigned = assignKeyedState(operator, parallelism, maxParallelism);
    const restore: RestoreSource<KeyedStateHandle> = {
      handles: assigned[subtask] ?? [],
      files,
      mode: opts.mode ?? 'no-claim',
      checkpointId,
    };
    return this.createKeyed(
      {
        keySerializer: opts.keySerializer,
        maxParallelism,
        parallelism,
        subtask,
        ...(opts.clock ? { clock: opts.clock } : {}),
      },
      restore,
    );
  }

  /**
   * The common single-backend round trip: snapshot through real streams, wait, write _metadata,
   * close the old backend, resolve, assign, create the new backend (subtask `subtask` of
   * `parallelism`, default the old placement).
   */
  async snapshotAndRestore<K>(
    backend: KeyedStateBackend<K>,
    opts: Partial<RestoreKeyedOptions<K>> & { subtask?: number; keepOld?: boolean } = {},
  ): Promise<KeyedStateBackend<K>> {
    const placement = this.placements.get(backend);
    if (!placement) throw new Error('snapshotAndRestore: backend was not created by this harness');
    const pointer = await this.checkpoint([backend]);
    if (!opts.keepOld) await this.close(backend as unknown as AnyKeyed);
    return this.restoreKeyedSubtask(pointer, opts.subtask ?? placement.subtaskIndex, {
      keySerializer: opts.keySerializer ?? backend.keySerializer,
      parallelism: opts.parallelism ?? placement.parallelism,
      ...(opts.maxParallelism !== undefined ? { maxParallelism: opts.maxParallelism } : {}),
      ...(opts.clock ? { clock: opts.clock } : {}),
      ...(opts.mode ? { mode: opts.mode } : {}),
    });
  }

  /** Restores every subtask of the operator-state backend at the target parallelism (assignOperatorState). */
  async restoreOperator(pointer: string, parallelism?: number): Promise<OperatorStateBackend[]> {
    const { operator, files, checkpointId } = await this.resolve(pointer);
    const p = parallelism ?? operator.parallelism;
    const assigned = assignOperatorState(operator, p);
    const out: OperatorStateBackend[] = [];
    for (let i = 0; i < p; i++) {
      out.push(
        await this.createOperator({ parallelism: p, subtask: i }, { handles: assigned[i] ?? [], files, checkpointId }),
      );
    }
    return out;
  }

  /** Operator-state round trip for one backend at unchanged parallelism. */
  async snapshotAndRestoreOperator(backend: OperatorStateBackend): Promise<OperatorStateBackend> {
    const placement = this.placements.get(backend);
    if (!placement) throw new Error('snapshotAndRestoreOperator: backend was not created by this harness');
    const pointer = await this.checkpoint([backend]);
    await this.close(backend);
    const { operator, files, checkpointId } = await this.resolve(pointer);
    const assigned = assignOperatorState(operator, placement.parallelism);
    return this.createOperator(
      { parallelism: placement.parallelism, subtask: placement.subtaskIndex },
      { handles: assigned[placement.subtaskIndex] ?? [], files, checkpointId },
    );
  }

  /** Files of this job currently in checkpoint storage (store-relative names). */
  async jobFiles(): Promise<string[]> {
    return this.storage.listJobFiles(this.jobId);
  }
}

/** Collects an async iterable into an array. */
export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}
