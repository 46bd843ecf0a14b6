import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import type { CheckpointStreamFactory, StateOutputStream, StateScope } from '../../src/backend/contract.js';
import type { FileStreamHandle } from '../../src/backend/handles.js';
import { GatedStreamFactory } from '../../src/conformance/backend/gated-streams.js';
import { SnapshotError } from '../../src/errors.js';
import { subtaskForKey } from '../../src/keygroups/key-groups.js';
import { int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import { BackendHarness } from '../support/backend-harness.js';

/**
 * BackendHarness.complete() (shipped in streamstate/conformance) with one subtask failing while
 * another still writes: the checkpoint fails only after every part stopped, so nothing the failed
 * checkpoint writes lands after the caller cleaned up its directory (a CI run saw a sibling's
 * retried S3 upload arrive after discardCheckpointDirectory).
 */
class FailingStreams implements CheckpointStreamFactory {
  constructor(private readonly inner: CheckpointStreamFactory) {}
  createOutputStream(_scope: StateScope): StateOutputStream {
    return {
      position: 0,
      write: async () => {
        throw new SnapshotError('SNAPSHOT_FAILED', 'injected: this subtask cannot write');
      },
      closeAndGetHandle: async () => {
        throw new SnapshotError('SNAPSHOT_FAILED', 'injected: this subtask cannot write');
      },
      discard: async () => undefined,
    };
  }
  uploadFile(localPath: string, scope: StateScope, name?: string): Promise<FileStreamHandle> {
    return this.inner.uploadFile(localPath, scope, name);
  }
  discardFiles(files: readonly FileStreamHandle[]): Promise<void> {
    return this.inner.discardFiles(files);
  }
}

let dir: string;
let h: BackendHarness;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ss-harness-'));
  h = await BackendHarness.create(async () => ({
    backend: filesystem({ checkpointDir: dir, inlineThreshold: 0 }),
    cleanup: async () => undefined,
  }));
});
afterEach(async () => {
  await h.dispose();
  await rm(dir, { recursive: true, force: true });
});

it('a failed part fails the checkpoint only after its siblings stopped writing; their files stay inside its directory', async () => {
  const subtasks = await h.createKeyedOperator({ keySerializer: int32Serializer, parallelism: 2 });
  const v = valueState<string>('v', { serializer: stringSerializer });
  for (let k = 0; k < 2000; k++) {
    const b = subtasks[subtaskForKey(k, int32Serializer, subtasks[0].maxParallelism, 2)];
    b.setCurrentKey(k);
    b.getState(v).update(`value-${k}`);
  }
  let gated: GatedStreamFactory | undefined;
  const run = await h.startSnapshot(subtasks, {
    wrapStreams: (inner, i) => (i === 0 ? new FailingStreams(inner) : (gated = new GatedStreamFactory(inner))),
  });
  if (gated === undefined) throw new Error('subtask 1 was not gated');
  let sibling = 'running';
  run.done[1].then(
    () => (sibling = 'done'),
    () => (sibling = 'failed'),
  );
  let outcome = 'pending';
  const completing = run.complete().then(
    () => (outcome = 'completed'),
    (e: unknown) => (outcome = e instanceof SnapshotError ? `failed: ${e.code}` : `failed: ${String(e)}`),
  );
  await expect(run.done[0]).rejects.toThrow(/injected/);
  await gated.reached; // subtask 1 is writing and cannot finish until the gate opens
  await new Promise((r) => setImmediate(r));
  expect(outcome).toBe('pending');
  gated.gate.open();
  await completing;
  expect(outcome).toBe('failed: SNAPSHOT_FAILED');
  expect(sibling).not.toBe('running'); // settled before complete() rejected
  const files = await h.jobFiles();
  for (const f of files) expect(f).toMatch(new RegExp(`/chk-${run.checkpointId}/`));
  expect(files.some((f) => f.endsWith('_metadata'))).toBe(false);
});
