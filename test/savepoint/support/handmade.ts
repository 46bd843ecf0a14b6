import { join } from 'node:path';
import type { KeyedStateMetaInfo } from '../../../src/backend/handles.js';
import { localCheckpointStorage } from '../../../src/checkpoint/checkpoint-storage.js';
import { BlobCheckpointStreamFactory } from '../../../src/checkpoint/streams.js';
import { CANONICAL_LAYOUT, KeyGroupsStreamWriter, SectionWriter } from '../../../src/format/key-groups-stream.js';
import { keyGroupForBytes } from '../../../src/keygroups/key-groups.js';
import { LocalBlobStore } from '../../../src/storage/local-blob-store.js';

/**
 * A one-operator, one-subtask canonical savepoint built byte by byte from value entries, for
 * tests that need data no backend would write (values that do not decode, odd serializers).
 */
export async function writeHandmadeSavepoint(
  root: string,
  name: string,
  spec: {
    states: KeyedStateMetaInfo[];
    values: Array<{ stateId: number; key: Buffer; namespace?: Buffer; value: Buffer }>;
    maxParallelism?: number;
  },
): Promise<string> {
  const maxParallelism = spec.maxParallelism ?? 16;
  const store = new LocalBlobStore(root);
  const streams = new BlobCheckpointStreamFactory({ store, baseDir: name, sharedDir: name, inlineThreshold: 0 });
  const range = { start: 0, end: maxParallelism - 1 };
  const writer = new KeyGroupsStreamWriter(
    streams.createOutputStream('exclusive'),
    {
      layout: CANONICAL_LAYOUT,
      keySerializer: { id: 'streamstate.string', version: 1 },
      maxParallelism,
      keyGroupRange: range,
      states: spec.states,
    },
    { canonical: true },
  );
  const byKg = new Map<number, typeof spec.values>();
  for (const v of spec.values) {
    const kg = keyGroupForBytes(v.key, maxParallelism);
    byKg.set(kg, [...(byKg.get(kg) ?? []), v]);
  }
  const section = new SectionWriter();
  for (const kg of [...byKg.keys()].sort((a, b) => a - b)) {
    writer.beginKeyGroup(kg);
    const vs = byKg.get(kg)!;
    for (const id of [...new Set(vs.map((v) => v.stateId))].sort((a, b) => a - b)) {
      for (const v of vs.filter((x) => x.stateId === id))
        section.valueEntry(v.key, v.namespace ?? Buffer.alloc(0), v.value);
      writer.addSection(id, section);
    }
    await writer.endKeyGroup();
  }
  const handle = await writer.finish();
  await localCheckpointStorage(root).writeMetadata(name, {
    checkpointId: 1,
    jobId: 'handmade',
    kind: 'savepoint',
    format: 'canonical',
    backend: 'memory',
    timestamp: 0,
    operators: [
      {
        operatorId: 'op-1',
        parallelism: 1,
        maxParallelism,
        subtasks: [{ subtaskIndex: 0, keyed: handle ? [handle] : [], operator: [] }],
      },
    ],
  });
  return join(root, name);
}
