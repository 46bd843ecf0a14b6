import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { memory } from '../../backends/memory/index.js';
import type { KeyedStateBackend, StateBackend } from '../../src/backend/contract.js';
import { referencedFiles } from '../../src/backend/handles.js';
import { changelog } from '../../src/changelog/index.js';
import { localCheckpointStorage, type BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { resolveHandlePath } from '../../src/checkpoint/streams.js';
import { KeyGroupRange } from '../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import { MAX_P, MiniJob, OPERATOR } from './job.js';

/**
 * Issue 12, "Materializing often": changelog(leveldb) materializing at every checkpoint
 * (materializationIntervalMs 0) with numRetained 2 completed checkpoints that referenced a table
 * file retention had already deleted: a materialization was first referenced by a checkpoint after
 * the one that wrote it, and the wrapped backend's reuse of earlier table files was vouched for only
 * until its writer completed. changelog(filesystem) left the last materialization's files in
 * shared/ after a clean close (no checkpoint referenced them, nobody deleted them).
 */
const JOB = 'job-materialize-often';
const KEYS = 3000;
const value = valueState<string>('v', { serializer: stringSerializer });

const inners: { name: string; make: (root: string) => StateBackend }[] = [
  { name: 'memory', make: () => memory() },
  { name: 'filesystem', make: (root) => filesystem({ checkpointDir: join(root, 'cp'), inlineThreshold: 0 }) },
  {
    name: 'leveldb',
    make: (root) =>
      leveldb({
        workingDir: join(root, `work-${Math.random().toString(16).slice(2)}`),
        writeBufferBytes: 64 * 1024,
        memtableBytes: 64 * 1024,
      }),
  },
];

const roots: string[] = [];
afterEach(async () => {
  for (const r of roots.splice(0)) await rm(r, { recursive: true, force: true });
});

/** Round `round`: 1000 keys get incompressible 256-byte values (so LevelDB writes and compacts table files). */
function writeRound(b: KeyedStateBackend<string>, model: Map<string, string>, round: number): void {
  const v = b.getState(value);
  for (let i = 0; i < 1000; i++) {
    const key = `k${(round * 677 + i * 3) % KEYS}`;
    const val = createHash('sha256').update(`${round}-${i}`).digest('hex').repeat(4);
    b.setCurrentKey(key);
    v.update(val);
    model.set(key, val);
  }
}

/** Every file the checkpoint references exists, and it restores into a fresh backend with exactly `expected`. */
async function expectRestores(
  storage: BlobCheckpointStorage,
  backend: StateBackend,
  pointer: string,
  expected: ReadonlyMap<string, string>,
): Promise<void> {
  const { metadata, files } = await storage.resolve(pointer);
  const handles = metadata.operators[0].subtasks[0].keyed;
  for (const f of referencedFiles(handles)) {
    const key = resolveHandlePath(pointer, f.path);
    expect(await storage.store.stat(key).catch(() => null), `${key} referenced by ${pointer}`).not.toBeNull();
  }
  const kb = await backend.createKeyedStateBackend({
    jobId: `${JOB}-restore`,
    operatorId: OPERATOR,
    subtaskIndex: 0,
    parallelism: 1,
    maxParallelism: MAX_P,
    keyGroupRange: new KeyGroupRange(0, MAX_P - 1),
    keySerializer: stringSerializer,
    restore: { handles, files, mode: 'no-claim', checkpointId: metadata.checkpointId },
  });
  try {
    const v = kb.getState(value);
    const got = new Map<string, string>();
    for (let i = 0; i < KEYS; i++) {
      kb.setCurrentKey(`k${i}`);
      const x = v.value();
      if (x !== null && x !== undefined) got.set(`k${i}`, x);
    }
    expect(got).toEqual(expected);
  } finally {
    await kb.close();
  }
}

async function sharedFilesReferenced(storage: BlobCheckpointStorage, pointers: readonly string[]): Promise<string[]> {
  const out = new Set<string>();
  for (const pointer of pointers) {
    const { metadata } = await storage.resolve(pointer);
    for (const op of metadata.operators)
      for (const s of op.subtasks)
        for (const f of referencedFiles([s.keyed, s.operator])) out.add(resolveHandlePath(pointer, f.path));
  }
  return [...out].filter((k) => k.includes('/shared/')).sort();
}

describe('changelog materializing at every checkpoint, numRetained 2', () => {
  it.each(inners)(
    'changelog($name): every retained checkpoint stays restorable over 12 checkpoints; after a clean close shared/ holds exactly what they reference',
    async ({ make }) => {
      const root = await mkdtemp(join(tmpdir(), 'streamstate-materialize-often-'));
      roots.push(root);
      const storage = localCheckpointStorage(join(root, 'cp'), { inlineThreshold: 0 });
      const backend = changelog({ backend: make(root), storage, materializationIntervalMs: 0 });
      const restoreWith = changelog({ backend: make(root), storage, materializationIntervalMs: 0 });
      const job = await MiniJob.start({ jobId: JOB, backend, storage, parallelism: 1, numRetained: 2 });
      const model = new Map<string, string>();
      const models = new Map<number, Map<string, string>>();
      let materialized = 0;
      for (let round = 1; round <= 12; round++) {
        writeRound(job.backends[0], model, round);
        const { info, handles } = await job.checkpoint(); // throws if the coordinator declines it
        models.set(info.checkpointId, new Map(model));
        if ((handles[0] as unknown as { materializationId: number }).materializationId === info.checkpointId)
          materialized++;
        for (const c of job.coordinator.completedCheckpoints())
          await expectRestores(storage, restoreWith, c.pointer, models.get(c.checkpointId)!);
      }
      expect(materialized).toBe(12); // every checkpoint had changes: every one materialized
      const retained = job.coordinator.completedCheckpoints().map((c) => c.pointer);
      expect(retained.length).toBe(2);
      await job.close();
      const shared = (await storage.listJobFiles(JOB)).filter((k) => k.includes('/shared/')).sort();
      expect(shared).toEqual(await sharedFilesReferenced(storage, retained));
    },
    60_000,
  );
});
