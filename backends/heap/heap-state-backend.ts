import { AbstractStateBackend } from '../../src/backend/abstract-state-backend.js';
import type { KeyedBackendParams, KeyedStateBackend } from '../../src/backend/contract.js';
import { StreamStateError } from '../../src/errors.js';
import { HeapKeyedStateBackend, type HeapBackendTuning } from './heap-keyed-backend.js';
import { checkSlicing, type SnapshotSlicing } from './time-slicer.js';

export interface HeapStateBackendOptions {
  /** The name recorded in _metadata (`memory`, `filesystem`, ...). Default `heap`. */
  readonly name?: string;
  /** Snapshot bytes buffered before each write to the checkpoint stream. Default 1 MiB. */
  readonly snapshotChunkBytes?: number;
  /**
   * How a snapshot's asynchronous part shares the thread with record processing: slice length
   * and CPU share (defaults: 4 ms, 0.1). See docs/ARCHITECTURE.md, "Snapshots that do not stall".
   */
  readonly snapshotSlicing?: SnapshotSlicing;
}

/** State backend factory keeping keyed state on the JS heap (the `memory` and `filesystem` presets). */
export class HeapStateBackend extends AbstractStateBackend {
  readonly name: string;

  private readonly tuning: HeapBackendTuning;

  constructor(opts: HeapStateBackendOptions = {}) {
    super();
    const bad = checkSlicing(opts.snapshotSlicing);
    if (bad !== null) throw new StreamStateError('INVALID_ARGUMENT', bad);
    this.tuning = {
      ...(opts.snapshotChunkBytes === undefined ? {} : { snapshotChunkBytes: opts.snapshotChunkBytes }),
      ...(opts.snapshotSlicing === undefined ? {} : { snapshotSlicing: opts.snapshotSlicing }),
    };
    this.name = opts.name ?? 'heap';
  }

  protected _createKeyedStateBackend<K>(params: KeyedBackendParams<K>): Promise<KeyedStateBackend<K>> {
    return HeapKeyedStateBackend.create(params, this.tuning);
  }

  /** Native = the heap-v1 key-groups stream; canonical = the sorted canonical-v1 layout of the same format. */
  supportsSavepointFormat(format: 'canonical' | 'native'): boolean {
    return format === 'native' || format === 'canonical';
  }
}
