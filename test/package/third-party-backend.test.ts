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
  stringSerializer,
  valueState,
} from 'streamstate';
import { describeBackendConformance } from 'streamstate/conformance';
import { memory } from 'streamstate/memory';
import { describe, expect, it } from 'vitest';
import { ForwardingKeyedStateBackend } from './fixtures/forwarding-keyed.js';

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

/** The heap's keyed backend, with snapshots logged on their way through. */
class AuditedKeyed<K> extends ForwardingKeyedStateBackend<K> {
  constructor(
    inner: KeyedStateBackend<K>,
    private readonly audit: (line: string) => void,
  ) {
    super(inner);
  }
  override snapshot(checkpointId: number, options: SnapshotOptions): Promise<SnapshotTask<KeyedStateHandle>> {
    this.audit(`${options.type} ${checkpointId}`);
    return super.snapshot(checkpointId, options);
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
