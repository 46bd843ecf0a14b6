import type { KeyedStateHandle, StreamHandle } from '../../src/backend/handles.js';
import type { BackendDriver } from '../../src/backend/driver.js';
import type { StateFileReader } from '../../src/backend/contract.js';
import { readStreamHandle } from '../../src/checkpoint/streams.js';
import type { SerializerSnapshot } from '../../src/serializers/serializer.js';
import { INCREMENTAL_HANDLE_TYPE } from './incremental-snapshot.js';
import { leveldb } from './index.js';
import { decodeMeta } from './meta.js';

/** The leveldb backend for offline tools: its incremental handles keep the key serializer in their meta stream. */
export const leveldbDriver: BackendDriver = {
  names: ['leveldb'],
  convertTargets: ['leveldb'],
  create: (_name, workDir) => leveldb({ workingDir: workDir }),
  handleTypes: [INCREMENTAL_HANDLE_TYPE],
  async keySerializerOf(handle: KeyedStateHandle, files: StateFileReader): Promise<SerializerSnapshot | undefined> {
    const meta = (handle as { readonly meta?: unknown }).meta as StreamHandle;
    return decodeMeta(await readStreamHandle(meta, files), 'LevelDB snapshot meta').keySerializer;
  },
};
