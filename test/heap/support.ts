import type { CheckpointStreamFactory, KeyedBackendParams } from '../../src/backend/contract.js';
import type { KeyedStateHandle } from '../../src/backend/handles.js';
import { memoryCheckpointStorage, type BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { BlobStateFileReader } from '../../src/checkpoint/streams.js';
import { KeyGroupRange } from '../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import type { Serializer } from '../../src/serializers/serializer.js';
import { HeapKeyedStateBackend, type HeapBackendTuning } from '../../backends/heap/index.js';

export const MAX_P = 16;

export function params<K = string>(over: Partial<KeyedBackendParams<K>> = {}): KeyedBackendParams<K> {
  return {
    jobId: 'job',
    operatorId: 'op',
    subtaskIndex: 0,
    parallelism: 1,
    maxParallelism: MAX_P,
    keyGroupRange: new KeyGroupRange(0, MAX_P - 1),
    keySerializer: stringSerializer as unknown as Serializer<K>,
    ...over,
  };
}

/** A heap backend plus the storage its snapshots go to. */
export class Rig {
  readonly storage: BlobCheckpointStorage = memoryCheckpointStorage({ inlineThreshold: 0, maxSnapshotBytes: 64 << 20 });
  private nextId = 1;

  streams(id: number): CheckpointStreamFactory {
    return this.storage.checkpointStreams('job', id);
  }

  newId(): number {
    return this.nextId++;
  }

  async create<K = string>(
    over: Partial<KeyedBackendParams<K>> = {},
    tuning: HeapBackendTuning = {},
  ): Promise<HeapKeyedStateBackend<K>> {
    return HeapKeyedStateBackend.create(params<K>(over), tuning);
  }

  /** Snapshot through `wrap(streams)` (default: plain); returns the id and the task. */
  async snapshot<K>(b: HeapKeyedStateBackend<K>, wrap?: (f: CheckpointStreamFactory) => CheckpointStreamFactory) {
    const id = this.newId();
    const streams = wrap ? wrap(this.streams(id)) : this.streams(id);
    const task = await b.snapshot(id, { type: 'checkpoint', streams });
    return { id, task, streams };
  }

  async restore<K = string>(
    id: number,
    handles: readonly (KeyedStateHandle | null)[],
    over: Partial<KeyedBackendParams<K>> = {},
  ): Promise<HeapKeyedStateBackend<K>> {
    const files = new BlobStateFileReader(this.storage.store, this.storage.checkpointPointer('job', id));
    return HeapKeyedStateBackend.create(
      params<K>({ ...over, restore: { handles: handles.filter((h): h is KeyedStateHandle => h !== null), files } }),
    );
  }

  async snapshotAndRestore<K = string>(
    b: HeapKeyedStateBackend<K>,
    over: Partial<KeyedBackendParams<K>> = {},
  ): Promise<HeapKeyedStateBackend<K>> {
    const { id, task } = await this.snapshot(b);
    const handle = await task.done;
    return this.restore<K>(id, [handle], over);
  }
}

export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

export async function rejection(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e as { code?: string; message: string },
  );
}

export function thrown(fn: () => unknown): { code?: string; message: string } {
  try {
    fn();
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected an error');
}

export class FakeClock {
  now = 1_000;
  readonly read = (): number => this.now;
  advance(ms: number): void {
    this.now += ms;
  }
}
