import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { CheckpointStreamFactory, StateScope } from '../../src/backend/contract.js';
import { referencedFiles, type FileStreamHandle, type KeyedStateHandle } from '../../src/backend/handles.js';
import { localCheckpointStorage, type BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import type { AcknowledgeResult } from '../../src/checkpoint/acknowledgement.js';
import type { CheckpointCoordinator, PendingCheckpoint, SubtaskAck } from '../../src/checkpoint/coordinator.js';
import { resolveHandlePath } from '../../src/checkpoint/streams.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';

/** A temp directory with checkpoint storage (files always, never inline). */
export async function tempStorage(): Promise<{
  storage: BlobCheckpointStorage;
  dir: string;
  cleanup(): Promise<void>;
}> {
  const dir = await mkdtemp(join(tmpdir(), 'streamstate-coord-'));
  return {
    storage: localCheckpointStorage(dir, { inlineThreshold: 0 }),
    dir,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

export async function writeFile(
  streams: CheckpointStreamFactory,
  scope: StateScope,
  content: string,
): Promise<FileStreamHandle> {
  const out = streams.createOutputStream(scope);
  await out.write(Buffer.from(content));
  const handle = await out.closeAndGetHandle();
  if (handle?.type !== 'file') throw new Error('expected a file handle');
  return handle;
}

/**
 * A subtask of an incremental backend, faked: each snapshot writes one exclusive file and one new
 * shared file and (unless the checkpoint must be full) reuses the shared file of its previous
 * snapshot when the coordinator says it may (SnapshotOptions.mayReuse). `reuse: 'blindly'` skips
 * the question, as a backend with the ordering bug would.
 */
export class FakeIncrementalSubtask {
  private previousShared: FileStreamHandle | null = null;

  constructor(
    readonly operatorId: string,
    readonly subtaskIndex: number,
    readonly parallelism: number,
    readonly maxParallelism = 128,
  ) {}

  async snapshot(p: PendingCheckpoint, reuse: boolean | 'blindly' = true): Promise<SubtaskAck> {
    const options = p.snapshotOptions(this.operatorId, this.subtaskIndex);
    const streams = options.streams;
    const tag = `${p.checkpointId}-${this.operatorId}-${this.subtaskIndex}`;
    const exclusive = await writeFile(streams, 'exclusive', `exclusive ${tag}`);
    const fresh = await writeFile(streams, 'shared', `shared ${tag}`);
    const shared = [fresh];
    const previous = this.previousShared;
    if (previous && (reuse === 'blindly' || (reuse && !p.full && options.mayReuse?.(previous.path) === true)))
      shared.push(previous);
    this.previousShared = fresh;
    const handle: KeyedStateHandle = {
      type: 'fake-incremental',
      keyGroupRange: keyGroupRangeForSubtask(this.maxParallelism, this.parallelism, this.subtaskIndex).toJSON(),
      maxParallelism: this.maxParallelism,
      exclusive,
      shared,
    };
    return { keyed: [handle], operator: [] };
  }
}

/** Triggers a checkpoint and acknowledges it from every subtask; `info` is the completed checkpoint, else null. */
export async function runCheckpoint(
  coord: CheckpointCoordinator,
  subtasks: readonly FakeIncrementalSubtask[],
  reuse: boolean | 'blindly' = true,
) {
  const p = coord.triggerCheckpoint();
  let last: AcknowledgeResult | null = null;
  for (const s of subtasks)
    last = await coord.acknowledge(p.checkpointId, s.operatorId, s.subtaskIndex, await s.snapshot(p, reuse));
  return { pending: p, result: last, info: last?.status === 'completed' ? last.checkpoint : null };
}

/** What must exist for the coordinator's retained checkpoints: their _metadata and every file they reference. */
export async function expectedJobFiles(
  storage: BlobCheckpointStorage,
  coord: CheckpointCoordinator,
): Promise<string[]> {
  const out = new Set<string>();
  for (const info of coord.completedCheckpoints()) {
    const { metadata } = await storage.resolve(info.pointer);
    out.add(`${info.pointer}/_metadata`);
    for (const op of metadata.operators) {
      for (const s of op.subtasks)
        for (const f of referencedFiles([s.keyed, s.operator])) out.add(resolveHandlePath(info.pointer, f.path));
    }
  }
  return [...out].sort();
}

export async function jobFiles(storage: BlobCheckpointStorage, jobId: string): Promise<string[]> {
  return (await storage.listJobFiles(jobId)).sort();
}
