import {
  AbstractStateBackend,
  type KeyedBackendParams,
  KeyGroupRange,
  memoryCheckpointStorage,
  type KeyedStateBackend,
  type KeyedStateHandle,
  type SnapshotOptions,
  type SnapshotTask,
  type StateBackend,
  type StateDescriptor,
  type StateFor,
  stringSerializer,
  type TimerQueue,
  type Serializer,
  valueState,
} from 'streamstate';
import { describeBackendConformance } from 'streamstate/conformance';
import { memory } from 'streamstate/memory';
import { describe, expect, it } from 'vitest';

/**
 * A third-party state backend, written only against the published entries (`streamstate`,
 * `streamstate/memory`, `streamstate/conformance`), proves itself with the published backend
 * conformance suite in a few lines (the describeBackendConformance call below): here an "audited"
 * backend that keeps its state on the heap but logs every keyed snapshot it takes, and offers
 * native savepoints only, so it declares `canonicalSavepoints: false` and the suite skips those
 * tests (and checks the declaration against supportsSavepointFormat).
 */
class AuditedBackend extends AbstractStateBackend {
  readonly name = 'audited';
  constructor(
    private readonly inner: StateBackend,
    readonly log: string[] = [],
  ) {
    super();
  }
  supportsSavepointFormat(format: 'canonical' | 'native'): boolean {
    return format === 'native';
  }
  protected async _createKeyedStateBackend<K>(params: KeyedBackendParams<K>): Promise<KeyedStateBackend<K>> {
    const keyed = await this.inner.createKeyedStateBackend(params);
    return new AuditedKeyed(keyed, (line) => this.log.push(`${line} (subtask ${params.subtaskIndex})`));
  }
}

/** Forwards every call to the heap's keyed backend; snapshots are logged on their way through. */
class AuditedKeyed<K> implements KeyedStateBackend<K> {
  constructor(
    private readonly inner: KeyedStateBackend<K>,
    private readonly audit: (line: string) => void,
  ) {}
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
  getState<D extends StateDescriptor<unknown>>(descriptor: D): StateFor<D> {
    return this.inner.getState(descriptor);
  }
  getTimerQueue<N = string>(name: string, namespaceSerializer?: Serializer<N>): TimerQueue<K, N> {
    return this.inner.getTimerQueue(name, namespaceSerializer);
  }
  getKeys<N>(stateName: string, namespace: N): AsyncIterable<K> {
    return this.inner.getKeys(stateName, namespace);
  }
  getKeysAndNamespaces<N>(stateName: string): AsyncIterable<[K, N]> {
    return this.inner.getKeysAndNamespaces(stateName);
  }
  applyToAllKeys<D extends StateDescriptor<unknown>>(
    namespace: unknown,
    descriptor: D,
    fn: (key: K, state: StateFor<D>) => void | Promise<void>,
  ): Promise<void> {
    return this.inner.applyToAllKeys(namespace, descriptor, fn);
  }
  stateNames(): string[] {
    return this.inner.stateNames();
  }
  numEntries(): Promise<number> {
    return this.inner.numEntries();
  }
  snapshot(checkpointId: number, options: SnapshotOptions): Promise<SnapshotTask<KeyedStateHandle>> {
    this.audit(`${options.type} ${checkpointId}`);
    return this.inner.snapshot(checkpointId, options);
  }
  notifyCheckpointComplete(checkpointId: number): Promise<void> {
    return this.inner.notifyCheckpointComplete(checkpointId);
  }
  notifyCheckpointAborted(checkpointId: number): Promise<void> {
    return this.inner.notifyCheckpointAborted(checkpointId);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

// docs/BACKENDS.md:begin
describeBackendConformance(
  'a third-party backend (audited heap, over the public API)',
  () => {
    const preset = memory();
    return { backend: new AuditedBackend(preset), storage: preset.checkpointStorage };
  },
  { supports: { canonicalSavepoints: false } },
);
// docs/BACKENDS.md:end

describe('the audited backend itself', () => {
  it('logs each keyed snapshot and refuses canonical savepoints, as it declares', async () => {
    const backend = new AuditedBackend(memory());
    expect(backend.supportsSavepointFormat('canonical')).toBe(false);
    const keyed = await backend.createKeyedStateBackend({
      jobId: 'job',
      operatorId: 'op',
      subtaskIndex: 0,
      parallelism: 1,
      maxParallelism: 8,
      keyGroupRange: new KeyGroupRange(0, 7),
      keySerializer: stringSerializer,
    });
    keyed.setCurrentKey('k');
    keyed.getState(valueState<string>('v', { serializer: stringSerializer })).update('x');
    const task = await keyed.snapshot(1, {
      type: 'checkpoint',
      streams: memoryCheckpointStorage().checkpointStreams('job', 1),
    });
    expect(await task.done).not.toBeNull();
    expect(backend.log).toEqual(['checkpoint 1 (subtask 0)']);
    await keyed.close();
  });
});
