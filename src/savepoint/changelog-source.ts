import type { KeyedBackendParams, KeyedStateBackend, StateBackend } from '../backend/contract.js';
import type { KeyedStateHandle } from '../backend/handles.js';
import { restorePlainFromChangelog } from '../changelog/restore.js';
import { isChangelogHandle } from '../changelog/handle.js';
import { ChangelogKeyedStateBackend } from '../changelog/keyed-backend.js';
import { FormatError } from '../errors.js';
import { namespaceSerializerOf, opaqueDescriptor } from '../changelog/opaque-descriptor.js';

/**
 * Offline restore of a changelog checkpoint's subtask (convert, and through it verify and dump):
 * the wrapped backend restores the materialized part and the library's own replay
 * (restorePlainFromChangelog) applies the log. Replay runs when a state is registered, and a tool
 * has no user descriptors, so every state the log names is registered here with descriptors built
 * from what the log recorded (opaque serializers that keep bytes as they are). A snapshot of the
 * result then holds the replayed state in the wrapped backend's own format.
 */

/** The name of the backend a subtask's changelog handles wrap, or undefined when it has none. */
export function changelogInnerBackend(handles: readonly KeyedStateHandle[], where: string): string | undefined {
  const names = new Set(handles.filter(isChangelogHandle).map((h) => h.backend));
  if (names.size === 0) return undefined;
  const [name] = names;
  if (names.size > 1 || typeof name !== 'string' || name.length === 0) {
    throw new FormatError(
      'CORRUPT',
      `${where}: its changelog handles name different or no wrapped backends (${[...names].join(', ')}); the _metadata is damaged.`,
    );
  }
  return name;
}

/**
 * Restores a subtask whose handles include changelog handles into `plain` (the wrapped backend),
 * with every logged change replayed. The caller snapshots and closes the result.
 */
export async function restoreChangelogSubtask<K>(
  plain: StateBackend,
  innerName: string,
  params: KeyedBackendParams<K>,
): Promise<KeyedStateBackend<K>> {
  const keyed = await restorePlainFromChangelog((p) => plain.createKeyedStateBackend(p), innerName, params);
  try {
    if (!(keyed instanceof ChangelogKeyedStateBackend)) return keyed;
    for (const name of keyed.pendingStateNames()) {
      const meta = keyed.pendingStateMeta(name);
      if (meta === undefined) continue;
      if (meta.kind === 'timers') keyed.getTimerQueue(name, namespaceSerializerOf(meta));
      else keyed.getState(opaqueDescriptor(meta));
    }
    return keyed;
  } catch (err) {
    await keyed.close().catch(() => undefined);
    throw err;
  }
}
