import { heapDriver } from '../../backends/heap/driver.js';
import { leveldbDriver } from '../../backends/leveldb/driver.js';
import type { StateBackend, StateFileReader } from '../backend/contract.js';
import type { BackendDriver } from '../backend/driver.js';
import type { KeyedStateHandle } from '../backend/handles.js';
import { changelog } from '../changelog/backend.js';
import { memoryCheckpointStorage } from '../checkpoint/checkpoint-storage.js';
import { StreamStateError } from '../errors.js';
import type { SerializerSnapshot } from '../serializers/serializer.js';

/**
 * The registry of state backends the offline tools know, by the name `_metadata` records (or
 * `--to` gives). A new backend registers its BackendDriver (backends/<name>/driver.ts) here;
 * nothing else in the CLI names a backend. Drivers load no native addon until used.
 */
const drivers: BackendDriver[] = [];
const byName = new Map<string, BackendDriver>();
const byHandleType = new Map<string, BackendDriver>();

/** Adds a backend to the registry; a name or handle type may belong to one driver only. */
export function registerBackendDriver(driver: BackendDriver): void {
  for (const name of driver.names) {
    if (byName.has(name) || /^changelog\(/.test(name))
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `a state backend named "${name}" is registered already (or reserved).`,
      );
  }
  for (const name of driver.names) byName.set(name, driver);
  for (const type of driver.handleTypes ?? []) byHandleType.set(type, driver);
  drivers.push(driver);
}

registerBackendDriver(heapDriver);
registerBackendDriver(leveldbDriver);

/** Backends the CLI can convert to (`--to`). */
export function targetBackendNames(): string[] {
  return drivers.flatMap((d) => d.convertTargets);
}

/** Backends the CLI can convert to (`--to`), at start-up. */
export const TARGET_BACKENDS: readonly string[] = targetBackendNames();

/**
 * A state backend by the name recorded in _metadata (or given to --to). The CLI only restores and
 * snapshots through it with explicit streams, so no checkpoint storage is configured, except for
 * the changelog wrapper, which needs one for background uploads (an in-memory one, never used
 * for the result).
 */
export function backendByName(name: string, workDir: string): StateBackend {
  const driver = byName.get(name);
  if (driver !== undefined) return driver.create(name, workDir);
  const m = /^changelog\((.+)\)$/.exec(name);
  if (m !== null)
    return changelog({
      backend: backendByName(m[1], workDir),
      storage: memoryCheckpointStorage({ maxSnapshotBytes: 1024 * 1024 * 1024 }),
    });
  const known = [...byName.keys(), 'changelog(...)'].join(', ');
  throw new StreamStateError('INVALID_ARGUMENT', `unknown state backend "${name}"; this streamstate knows ${known}.`);
}

/** Key serializers of handle types that keep them outside the handle (LevelDB incremental: in its meta stream). */
export async function keySerializerOf(
  handle: KeyedStateHandle,
  files: StateFileReader,
): Promise<SerializerSnapshot | undefined> {
  return byHandleType.get(handle.type)?.keySerializerOf?.(handle, files);
}
