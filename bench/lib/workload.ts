/**
 * Pieces the checkpoint benchmarks share: incompressible values, deterministic key choice, a
 * single-subtask keyed backend, and a checkpointer that measures duration and newly written bytes
 * the way a coordinator with retention 1 would see them.
 */
import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';
import type { KeyedBackendParams, KeyedStateBackend, RestoreSource } from '../../src/backend/contract.js';
import { referencedFiles, type FileStreamHandle, type KeyedStateHandle } from '../../src/backend/handles.js';
import type { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { KeyGroupRange } from '../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../src/serializers/builtins.js';

/** Deterministic pseudo-random numbers in [0, 1) (xorshift32): the same keys change in every variant. */
export function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

const POOL_BYTES = 1024 * 1024;
const pool = randomBytes(POOL_BYTES + 4096);

/** An incompressible value of `bytes` (<= 4096) for key `i` in round `round`, in a buffer of its own (as a job's state would be). */
export function incompressibleValue(i: number, round: number, bytes: number): Buffer {
  const off = ((Math.imul(i, 7919) + Math.imul(round, 104729)) >>> 0) % POOL_BYTES;
  return Buffer.from(pool.subarray(off, off + bytes));
}

/** Gives background I/O (uploads, LevelDB writes) the event loop, as a runtime does between input batches. */
export const yieldToIo = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Parameters of the one subtask (parallelism 1, maxParallelism 128, string keys) the benchmarks run. */
export function singleSubtask(jobId: string, restore?: RestoreSource<KeyedStateHandle>): KeyedBackendParams<string> {
  return {
    jobId,
    operatorId: 'op',
    subtaskIndex: 0,
    parallelism: 1,
    maxParallelism: 128,
    keyGroupRange: new KeyGroupRange(0, 127),
    keySerializer: stringSerializer,
    ...(restore !== undefined ? { restore } : {}),
  };
}

/** Store-relative names of the files a checkpoint's handle references. */
function fileKeys(
  storage: BlobCheckpointStorage,
  jobId: string,
  id: number,
  handle: KeyedStateHandle | null,
): Map<string, FileStreamHandle> {
  const pointer = storage.checkpointPointer(jobId, id);
  const out = new Map<string, FileStreamHandle>();
  for (const f of referencedFiles(handle)) out.set(posix.normalize(`${pointer}/${f.path}`), f);
  return out;
}

/** Takes checkpoints of one keyed backend with retention 1, measuring each. */
export class Checkpointer {
  private previous: { id: number; files: Map<string, FileStreamHandle> } | null = null;
  private nextId = 1;

  constructor(
    private readonly kb: KeyedStateBackend<string>,
    private readonly storage: BlobCheckpointStorage,
    private readonly jobId: string,
  ) {}

  /** Takes one checkpoint; returns its duration, synchronous pause and the bytes it newly wrote. */
  async take(): Promise<{ ms: number; pauseMs: number; bytes: number }> {
    const id = this.nextId++;
    const t0 = performance.now();
    const task = await this.kb.snapshot(id, {
      type: 'checkpoint',
      streams: this.storage.checkpointStreams(this.jobId, id),
    });
    const t1 = performance.now();
    const handle = await task.done;
    const t2 = performance.now();
    await this.kb.notifyCheckpointComplete(id);
    const files = fileKeys(this.storage, this.jobId, id, handle);
    let bytes = 0;
    for (const [k, f] of files) if (!this.previous?.files.has(k)) bytes += f.size;
    // Retention 1: drop what the previous checkpoint referenced and this one no longer does
    // (the coordinator's shared-state registry would), so the disk holds one checkpoint.
    if (this.previous !== null) {
      const gone = [...this.previous.files].filter(([k]) => !files.has(k)).map(([, f]) => f);
      await this.storage.deleteFiles(this.storage.checkpointPointer(this.jobId, this.previous.id), gone);
    }
    this.previous = { id, files };
    return { ms: t2 - t0, pauseMs: t1 - t0, bytes };
  }
}
