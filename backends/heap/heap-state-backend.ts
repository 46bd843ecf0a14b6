import type { KeyedBackendParams, KeyedStateBackend, OperatorBackendParams, OperatorStateBackend, StateBackend } from '../../src/backend/contract.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import { hasChangelogHandles, restorePlainFromChangelog } from '../../src/changelog/index.js';
import { createHeapOperatorStateBackend } from '../../src/operator/index.js';
import { StreamStateError } from '../../src/errors.js';
import { HeapKeyedStateBackend, type HeapBackendTuning } from './heap-keyed-backend.js';
import { checkSlicing, type SnapshotSlicing } from './time-slicer.js';

export interface HeapStateBackendOptions {
  /** The name recorded in _metadata (`memory`, `filesystem`, ...). Default `heap`. */
  readonly name?: string;
  /** The checkpoint storage this backend brings, if any. */
  readonly checkpointStorage?: CheckpointStorage;
  /** Snapshot bytes buffered before each write to the checkpoint stream. Default 1 MiB. */
  readonly snapshotChunkBytes?: number;
  /**
   * How a snapshot's asynchronous part shares the thread with record processing: slice length
   * and CPU share (defaults: 4 ms, 0.15). See docs/ARCHITECTURE.md, "Snapshots that do not stall".
   */
  readonly snapshotSlicing?: SnapshotSlicing;
}

/** State backend factory keeping keyed state on the JS heap (the `memory` and `filesystem` presets). */
export class HeapStateBackend implements StateBackend {
  readonly name: string;
  readonly checkpointStorage?: CheckpointStorage;

  private readonly tuning: HeapBackendTuning;

  constructor(opts: HeapStateBackendOptions = {}) {
    const bad = checkSlicing(opts.snapshotSlicing);
    if (bad !== null) throw new StreamStateError('INVALID_ARGUMENT', bad);
    this.tuning = {
      ...(opts.snapshotChunkBytes === undefined ? {} : { snapshotChunkBytes: opts.snapshotChunkBytes }),
      ...(opts.snapshotSlicing === undefined ? {} : { snapshotSlicing: opts.snapshotSlicing }),
    };
    this.name = opts.name ?? 'heap';
    if (opts.checkpointStorage !== undefined) this.checkpointStorage = opts.checkpointStorage;
  }

  createKeyedStateBackend<K>(params: KeyedBackendParams<K>): Promise<KeyedStateBackend<K>> {
    // A checkpoint taken with the changelog on: restore its materialization and replay its log (changelog off).
    if (hasChangelogHandles(params.restore)) {
      return restorePlainFromChangelog((p) => HeapKeyedStateBackend.create(p, this.tuning), this.name, params);
    }
    return HeapKeyedStateBackend.create(params, this.tuning);
  }

  /** Operator state lives in memory for every backend. */
  createOperatorStateBackend(params: OperatorBackendParams): Promise<OperatorStateBackend> {
    return createHeapOperatorStateBackend(params);
  }

  /** Native = the heap-v1 key-groups stream; canonical = the sorted canonical-v1 layout of the same format. */
  supportsSavepointFormat(format: 'canonical' | 'native'): boolean {
    return format === 'native' || format === 'canonical';
  }
}
