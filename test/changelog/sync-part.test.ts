import { describe, expect, it } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import { singleSubtask } from '../../bench/lib/workload.js';
import type { CheckpointStreamFactory, KeyedStateBackend, StateOutputStream } from '../../src/backend/contract.js';
import { changelog } from '../../src/changelog/index.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';

// What a changelog checkpoint and a record's write do in the caller's turn: no segment is encoded
// or uploaded there (that work grows with the log tail), and one snapshot's uploads are bounded.

const vd = valueState<string>('v', { serializer: stringSerializer });

/** Counts the output streams a factory hands out: created, open at once (peak), written to. */
class Counting {
  created = 0;
  open = 0;
  peak = 0;
  writes = 0;
  wrap(inner: CheckpointStreamFactory): CheckpointStreamFactory {
    return {
      createOutputStream: (scope) => {
        const out = inner.createOutputStream(scope);
        this.created++;
        this.open++;
        this.peak = Math.max(this.peak, this.open);
        let ended = false;
        const end = () => {
          if (!ended) this.open--;
          ended = true;
        };
        const counted: StateOutputStream = {
          get position() {
            return out.position;
          },
          write: (chunk) => {
            this.writes++;
            return out.write(chunk);
          },
          closeAndGetHandle: () => out.closeAndGetHandle().finally(end),
          discard: () => out.discard().finally(end),
        };
        return counted;
      },
      uploadFile: (...args) => inner.uploadFile(...args),
      discardFiles: (files) => inner.discardFiles(files),
    };
  }
}

/** Storage whose background streams (preemptive uploads) are counted. */
class CountingStorage extends BlobCheckpointStorage {
  readonly background = new Counting();
  override checkpointStreams(jobId: string, checkpointId: number): CheckpointStreamFactory {
    return this.background.wrap(super.checkpointStreams(jobId, checkpointId));
  }
}

function write(b: KeyedStateBackend<string>, from: number, n: number): void {
  const v = b.getState(vd);
  for (let i = from; i < from + n; i++) {
    b.setCurrentKey(`k${i}`);
    v.update(`value-${i}`.padEnd(100, '.'));
  }
}

async function open(preemptivePersistBytes: number) {
  const storage = new CountingStorage(new MemoryBlobStore({ maxObjectBytes: 64 * 1024 * 1024 }), {
    inlineThreshold: 0,
  });
  const backend = changelog({
    backend: memory(),
    storage,
    materializationIntervalMs: Number.POSITIVE_INFINITY,
    preemptivePersistBytes,
  });
  const jobId = `job-sync-${process.pid}-${Math.random().toString(36).slice(2)}`;
  const kb = await backend.createKeyedStateBackend(singleSubtask(jobId));
  return { storage, kb, jobId };
}

describe('changelog: the caller’s turn does no segment work', () => {
  it('a checkpoint’s synchronous part encodes and uploads no segment, however long the log tail', async () => {
    const { storage, kb, jobId } = await open(Number.MAX_SAFE_INTEGER);
    // No completion notices: every checkpoint references (and uploads) the whole log since the
    // start, one chunk per earlier checkpoint: the tail the synchronous part must not walk.
    for (let id = 1; id <= 8; id++) {
      write(kb, id * 100, 100);
      await (await kb.snapshot(id, { type: 'checkpoint', streams: storage.checkpointStreams(jobId, id) })).done;
    }
    write(kb, 0, 100);
    const counting = new Counting();
    const pending = kb.snapshot(9, { type: 'checkpoint', streams: counting.wrap(storage.checkpointStreams(jobId, 9)) });
    expect(counting.created).toBe(0);
    const { done } = await pending;
    // Still the caller's turn (the snapshot resolved in a microtask): nothing encoded or written yet.
    expect(counting.created).toBe(0);
    expect(counting.writes).toBe(0);
    const handle = await done;
    expect(handle).not.toBeNull();
    // Nine chunks, each an upload of its own (no notice confirmed an earlier copy)...
    expect(counting.created).toBe(9);
    // ...and never more than two at once: the log tail is not queued on one turn.
    expect(counting.peak).toBeLessThanOrEqual(2);
    await kb.close();
  });

  it('a write that crosses the preemptive threshold does not encode or upload in its own turn', async () => {
    const { storage, kb } = await open(4096);
    const bg = storage.background;
    write(kb, 0, 200); // about 24 KB of records: several cuts
    expect(bg.created).toBe(0);
    expect(bg.writes).toBe(0);
    await new Promise((resolve) => setImmediate(resolve));
    await new Promise((resolve) => setImmediate(resolve));
    await kb.close();
    // The uploads did happen, later (closing discards them as spares).
    expect(bg.created).toBeGreaterThan(1);
  });
});
