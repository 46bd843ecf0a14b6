import { referencedFiles } from '../backend/handles.js';
import { encodeMetadata } from './metadata-codec.js';
import { subtaskStateHandles, type CheckpointMetadata, type CompletedCheckpointInfo } from './metadata.js';
import { resolveHandlePath } from './streams.js';

/** Store-relative names of every file the snapshot at `pointer` references. */
export function fileKeys(pointer: string, metadata: CheckpointMetadata): Set<string> {
  const keys = new Set<string>();
  for (const op of metadata.operators) {
    for (const s of op.subtasks)
      for (const f of referencedFiles(subtaskStateHandles(s))) keys.add(resolveHandlePath(pointer, f.path));
  }
  return keys;
}

/** Files a checkpoint references outside its own directory: those several checkpoints may share. */
export function sharedKeys(pointer: string, metadata: CheckpointMetadata): string[] {
  return [...fileKeys(pointer, metadata)].filter((k) => !k.startsWith(`${pointer}/`));
}

/** A completed checkpoint's listing entry; `size` counts _metadata plus its exclusive files. */
export function completedInfo(pointer: string, metadata: CheckpointMetadata): CompletedCheckpointInfo {
  let size = encodeMetadata(metadata).length;
  const seen = new Set<string>();
  for (const op of metadata.operators) {
    for (const s of op.subtasks) {
      for (const f of referencedFiles(subtaskStateHandles(s))) {
        const key = resolveHandlePath(pointer, f.path);
        if (key.startsWith(`${pointer}/`) && !seen.has(key)) {
          seen.add(key);
          size += f.size;
        }
      }
    }
  }
  return { checkpointId: metadata.checkpointId, pointer, timestamp: metadata.timestamp, size };
}
