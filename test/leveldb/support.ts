import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LevelDbKeyedStateBackend, type LevelDbBackendOptions } from '../../backends/leveldb/backend.js';
import type { KeyedBackendParams, SnapshotOptions } from '../../src/backend/contract.js';
import type { KeyedStateHandle } from '../../src/backend/handles.js';
import { memoryCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { BlobStateFileReader } from '../../src/checkpoint/streams.js';
import { expect } from 'vitest';
import { decodeRowKey, isCountRowStateId } from '../../backends/leveldb/row-keys.js';
import { params } from '../heap/support.js';

/** LevelDB backends on one working directory, snapshotting into one in-memory checkpoint storage. */
export class LevelRig {
  readonly root = join(tmpdir(), `streamstate-leveldb-rig-${process.pid}-${Math.random().toString(16).slice(2)}`);
  readonly storage = memoryCheckpointStorage({ inlineThreshold: 0, maxSnapshotBytes: 256 << 20 });
  private nextId = 1;

  constructor(private readonly opts: LevelDbBackendOptions = {}) {}

  create<K = string>(
    over: Partial<KeyedBackendParams<K>> = {},
    opts: LevelDbBackendOptions = {},
  ): Promise<LevelDbKeyedStateBackend<K>> {
    return LevelDbKeyedStateBackend.create(params<K>(over), { workingDir: this.root, ...this.opts, ...opts });
  }

  /** Takes a snapshot (a checkpoint unless `kind` says otherwise) and waits for its handle. */
  async snapshot<K>(
    b:
      | { snapshot(id: number, o: SnapshotOptions): Promise<{ done: Promise<KeyedStateHandle | null> }> }
      | LevelDbKeyedStateBackend<K>,
    kind: 'checkpoint' | 'canonical' | 'native-savepoint' = 'checkpoint',
  ): Promise<{ id: number; handle: KeyedStateHandle | null }> {
    const id = this.nextId++;
    const streams = this.storage.checkpointStreams('job', id);
    const options: SnapshotOptions =
      kind === 'checkpoint'
        ? { type: 'checkpoint', streams }
        : { type: 'savepoint', format: kind === 'canonical' ? 'canonical' : 'native', streams };
    const task = await b.snapshot(id, options);
    return { id, handle: await task.done };
  }

  files(id: number): BlobStateFileReader {
    return new BlobStateFileReader(this.storage.store, this.storage.checkpointPointer('job', id));
  }

  restore<K = string>(
    id: number,
    handles: readonly (KeyedStateHandle | null)[],
    over: Partial<KeyedBackendParams<K>> = {},
    opts: LevelDbBackendOptions = {},
  ): Promise<LevelDbKeyedStateBackend<K>> {
    return this.create<K>(
      {
        ...over,
        restore: {
          handles: handles.filter((h): h is KeyedStateHandle => h !== null),
          files: this.files(id),
          checkpointId: id,
        },
      },
      opts,
    );
  }

  async cleanup(): Promise<void> {
    await rm(this.root, { recursive: true, force: true });
  }
}

/** Entry rows and count rows as LevelDB holds them at a snapshot point (every blind put counted): every count row equals its number of entries. */
export async function checkCountRows(kb: LevelDbKeyedStateBackend<string>): Promise<void> {
  await kb.store.settleCounts();
  const entries = new Map<string, number>();
  const counts = new Map<string, number>();
  for await (const [k, v] of kb.db.iterator()) {
    const row = decodeRowKey(k);
    const id = `${row.keyGroup}/${row.key.toString('hex')}/${row.namespace.toString('hex')}`;
    if (isCountRowStateId(row.stateId)) counts.set(id, v.readUInt32BE(0));
    else if (row.userKey.length > 0) entries.set(id, (entries.get(id) ?? 0) + 1);
  }
  expect(counts).toEqual(entries);
}
