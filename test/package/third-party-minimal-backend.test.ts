import {
  AbstractStateBackend,
  type KeyedBackendParams,
  type KeyedStateBackend,
  type OperatorStateBackend,
  type StateBackend,
  type StateDescriptor,
  type StateFor,
  StreamStateError,
} from 'streamstate';
import { describeBackendConformance } from 'streamstate/conformance';
import { memory } from 'streamstate/memory';
import { ForwardingKeyedStateBackend } from './fixtures/forwarding-keyed.js';

/**
 * The capability manifest at work: a third-party backend that lacks every optional capability
 * (no TTL, no canonical savepoints, no restore at another parallelism, no operator state; each
 * refused with an error) declares so and passes the published suite, whose tests of those
 * capabilities are reported as skipped. Were the gating incomplete, a test using a capability
 * the backend refuses would fail here.
 */
const refuse = (what: string): StreamStateError =>
  new StreamStateError('INVALID_ARGUMENT', `the minimal backend does not support ${what}; use another backend`);

class MinimalBackend extends AbstractStateBackend {
  readonly name = 'minimal';
  constructor(private readonly inner: StateBackend) {
    super();
  }
  supportsSavepointFormat(format: 'canonical' | 'native'): boolean {
    return format === 'native';
  }
  override createOperatorStateBackend(): Promise<OperatorStateBackend> {
    return Promise.reject(refuse('operator state'));
  }
  protected async _createKeyedStateBackend<K>(params: KeyedBackendParams<K>): Promise<KeyedStateBackend<K>> {
    const own = params.keyGroupRange;
    const rescaled = (params.restore?.handles ?? []).filter(
      (h) => h.keyGroupRange.start !== own.start || h.keyGroupRange.end !== own.end,
    );
    // Another maxParallelism is not a rescale but a mismatch the heap backend reports (the suite
    // checks that code), so only handles of this maxParallelism are refused here.
    if (rescaled.some((h) => h.maxParallelism === params.maxParallelism))
      throw refuse('restoring at another parallelism');
    return new NoTtlKeyed(await this.inner.createKeyedStateBackend(params));
  }
}

class NoTtlKeyed<K> extends ForwardingKeyedStateBackend<K> {
  override getState<D extends StateDescriptor<unknown>>(descriptor: D): StateFor<D> {
    if (descriptor.ttl !== undefined) throw refuse('state time-to-live');
    return super.getState(descriptor);
  }
}

describeBackendConformance(
  'a third-party backend without the optional capabilities',
  () => {
    const preset = memory();
    return { backend: new MinimalBackend(preset), storage: preset.checkpointStorage };
  },
  { supports: { ttl: false, canonicalSavepoints: false, rescaling: false, operatorState: false } },
);
