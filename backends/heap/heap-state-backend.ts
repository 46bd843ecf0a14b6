import { AbstractStateBackend } from '../../src/backend/abstract-state-backend.js';
import type { KeyedBackendParams, KeyedStateBackend } from '../../src/backend/contract.js';
import { StreamStateError } from '../../src/errors.js';
import { HeapKeyedStateBackend, type HeapBackendTuning } from './heap-keyed-backend.js';
import { checkSlicing } from './time-slicer.js';

/** How a heap snapshot's asynchronous part writes: what the `memory` and `filesystem` presets pass on. */
export type HeapSnapshotOptions = HeapBackendTuning;

/** The snapshot options out of a preset's options (which may mean something else by `name`). */
export function snapshotOptions(opts: HeapSnapshotOptions): HeapSnapshotOptions {
  return {
    ...(opts.snapshotChunkBytes === undefined ? {} : { snapshotChunkBytes: opts.snapshotChunkBytes }),
    ...(opts.snapshotSlicing === undefined ? {} : { snapshotSlicing: opts.snapshotSlicing }),
  };
}

export interface HeapStateBackendOptions extends HeapSnapshotOptions {
  /** The name recorded in _metadata (`memory`, `filesystem`, ...). Default `heap`. */
  readonly name?: string;
}

/** State backend factory keeping keyed state on the JS heap (the `memory` and `filesystem` presets). */
export class HeapStateBackend extends AbstractStateBackend {
  readonly name: string;

  private readonly tuning: HeapBackendTuning;

  constructor(opts: HeapStateBackendOptions = {}) {
    super();
    const bad = checkSlicing(opts.snapshotSlicing);
    if (bad !== null) throw new StreamStateError('INVALID_ARGUMENT', bad);
    const chunk = opts.snapshotChunkBytes;
    if (chunk !== undefined && !(Number.isSafeInteger(chunk) && chunk > 0))
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `snapshotChunkBytes must be a positive integer (bytes); got ${String(chunk)}.`,
      );
    this.tuning = snapshotOptions(opts);
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
