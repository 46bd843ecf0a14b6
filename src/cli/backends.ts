import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { decodeMeta } from '../../backends/leveldb/meta.js';
import type { StateBackend, StateFileReader } from '../backend/contract.js';
import type { KeyedStateHandle, StreamHandle } from '../backend/handles.js';
import { changelog } from '../changelog/backend.js';
import { memoryCheckpointStorage } from '../checkpoint/checkpoint-storage.js';
import { readStreamHandle } from '../checkpoint/streams.js';
import { StreamStateError } from '../errors.js';
import type { SerializerSnapshot } from '../serializers/serializer.js';

/** Backends the CLI can convert to (`--to`). */
export const TARGET_BACKENDS = ['memory', 'filesystem', 'leveldb'] as const;

/**
 * A state backend by the name recorded in _metadata (or given to --to). The CLI only restores and
 * snapshots through it with explicit streams, so no checkpoint storage is configured, except for
 * the changelog wrapper, which needs one for background uploads (an in-memory one, never used
 * for the result).
 */
export function backendByName(name: string, workDir: string): StateBackend {
  switch (name) {
    case 'memory':
    case 'filesystem':
    case 'heap':
      return new HeapStateBackend({ name });
    case 'leveldb':
      return leveldb({ workingDir: workDir });
  }
  const m = /^changelog\((.+)\)$/.exec(name);
  if (m !== null) return changelog({ backend: backendByName(m[1], workDir), storage: memoryCheckpointStorage({ maxSnapshotBytes: 1024 * 1024 * 1024 }) });
  throw new StreamStateError('INVALID_ARGUMENT', `unknown state backend "${name}"; this streamstate knows memory, filesystem, leveldb and changelog(...).`);
}

/** Key serializers of handle types that keep them outside the handle (LevelDB incremental: in its meta stream). */
export async function keySerializerOf(handle: KeyedStateHandle, files: StateFileReader): Promise<SerializerSnapshot | undefined> {
  if (handle.type === 'leveldb-incremental') {
    const meta = handle.meta as StreamHandle;
    return decodeMeta(await readStreamHandle(meta, files), 'LevelDB snapshot meta').keySerializer;
  }
  return undefined;
}
