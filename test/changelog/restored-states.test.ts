import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leveldb } from '../../backends/leveldb/index.js';
import { memory } from '../../backends/memory/index.js';
import type { KeyedStateBackend, SnapshotOptions, StateBackend } from '../../src/backend/contract.js';
import type { KeyedStateHandle } from '../../src/backend/handles.js';
import { changelog } from '../../src/changelog/index.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { BlobStateFileReader } from '../../src/checkpoint/streams.js';
import { EVERY_KIND, writeEveryKind } from '../../src/conformance/backend/every-kind.js';
import { int32Serializer } from '../../src/serializers/builtins.js';
import { listState } from '../../src/state/descriptors.js';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.js';
import { collect } from '../support/backend-harness.js';
import { params } from '../heap/support.js';

/**
 * changelog(*) restored from a checkpoint whose log holds changes of states not registered again
 * yet (they wait in the log until getState replays them): every query and every snapshot sees
 * them as a plain backend sees its restored states. Also: mergeNamespaces before any namespace
 * was set (the current namespace is not part of a merge).
 */

const D = EVERY_KIND;
const writeAll = writeEveryKind;

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'ss-cl-restored-'));
});
afterAll(() => rm(root, { recursive: true, force: true }));

const storage = new BlobCheckpointStorage(new MemoryBlobStore({ maxObjectBytes: 256 << 20 }), { inlineThreshold: 0 });
let nextId = 1;

async function snap(
  b: KeyedStateBackend<string>,
  kind: 'checkpoint' | 'canonical',
): Promise<{ id: number; handle: KeyedStateHandle | null }> {
  const id = nextId++;
  const streams = storage.checkpointStreams('job', id);
  const options: SnapshotOptions =
    kind === 'checkpoint' ? { type: 'checkpoint', streams } : { type: 'savepoint', format: 'canonical', streams };
  const task = await b.snapshot(id, options);
  const handle = await task.done;
  if (kind === 'checkpoint') await b.notifyCheckpointComplete(id);
  return { id, handle };
}

function restoreFrom(
  backend: StateBackend,
  s: { id: number; handle: KeyedStateHandle | null },
): Promise<KeyedStateBackend<string>> {
  const files = new BlobStateFileReader(storage.store, storage.checkpointPointer('job', s.id));
  return backend.createKeyedStateBackend(
    params({ restore: { handles: s.handle === null ? [] : [s.handle], files, checkpointId: s.id } }),
  );
}

const variants: Record<string, () => StateBackend> = {
  'changelog(memory)': () =>
    changelog({ backend: memory(), storage, materializationIntervalMs: Number.POSITIVE_INFINITY }),
  'changelog(leveldb)': () =>
    changelog({
      backend: leveldb({ workingDir: join(root, 'work') }),
      storage,
      materializationIntervalMs: Number.POSITIVE_INFINITY,
    }),
};

/**
 * A changelog backend restored from a checkpoint made of a materialization (keys k0..k2) and a log
 * (keys k3..k9), so that the states' later changes wait in the log.
 */
async function restoredWithLog(make: () => StateBackend): Promise<KeyedStateBackend<string>> {
  const b = await make().createKeyedStateBackend(params());
  writeAll(b, 0, 3);
  await snap(b, 'checkpoint'); // materializes
  writeAll(b, 3, 10);
  const c2 = await snap(b, 'checkpoint'); // the materialization plus the log
  await b.close();
  return restoreFrom(make(), c2);
}

describe.each(Object.keys(variants))('%s: restored states whose changes wait in the log', (variant) => {
  const make = variants[variant];

  it('getKeys and getKeysAndNamespaces see them, for every kind', async () => {
    const r = await restoredWithLog(make);
    for (const name of Object.keys(D)) {
      expect((await collect(r.getKeys(name, ''))).sort()).toEqual(['k0', 'k1', 'k2', 'k3', 'k4']);
      expect((await collect(r.getKeys(name, 'w'))).sort()).toEqual(['k5', 'k6', 'k7', 'k8', 'k9']);
      const pairs = (await collect(r.getKeysAndNamespaces<string>(name))).map(([k, ns]) => `${k}/${ns}`).sort();
      expect(pairs).toEqual(Array.from({ length: 10 }, (_, i) => `k${i}/${i < 5 ? '' : 'w'}`).sort());
    }
    await r.close();
  });

  it('numEntries counts them, before and after they are registered', async () => {
    const r = await restoredWithLog(make);
    expect(await r.numEntries()).toBe(60);
    r.getState(D.v);
    expect(await r.numEntries()).toBe(60);
    await r.close();
  });

  it('a canonical savepoint taken right after restore is canonical and holds them', async () => {
    const r = await restoredWithLog(make);
    const sp = await snap(r, 'canonical');
    await r.close();
    expect({ type: sp.handle?.type, layout: (sp.handle as { layout?: string } | null)?.layout }).toEqual({
      type: 'key-groups',
      layout: 'canonical-v1',
    });
    const again = await restoreFrom(memory(), sp);
    expect(await again.numEntries()).toBe(60);
    again.setCurrentKey('k7');
    const l = again.getState(D.l);
    l.setCurrentNamespace('w');
    expect(l.get()).toEqual([7]);
    const red = again.getState(D.r);
    red.setCurrentNamespace('w');
    expect(red.get()).toBe(7);
    await again.close();
  });

  it('mergeNamespaces works on a state restored before its namespace was ever set', async () => {
    const r = await restoredWithLog(make);
    r.setCurrentKey('k6');
    const red = r.getState(D.r);
    const l = r.getState(D.l);
    red.mergeNamespaces('merged', ['w', '']);
    l.mergeNamespaces('merged', ['w']);
    red.setCurrentNamespace('merged');
    l.setCurrentNamespace('merged');
    expect(red.get()).toBe(6);
    expect(l.get()).toEqual([6]);
    red.setCurrentNamespace('w');
    expect(red.get()).toBeNull();
    // The merge was logged with the right namespaces: a checkpoint and restore see its result.
    const c = await snap(r, 'checkpoint');
    await r.close();
    const again = await restoreFrom(make(), c);
    again.setCurrentKey('k6');
    const red2 = again.getState(D.r);
    red2.setCurrentNamespace('merged');
    expect(red2.get()).toBe(6);
    await again.close();
  });

  it('mergeNamespaces with a non-string namespace serializer before any namespace was set', async () => {
    const b = await make().createKeyedStateBackend(params());
    const d = listState<number, number>('ln', { serializer: int32Serializer, namespace: int32Serializer });
    const l = b.getState(d);
    b.setCurrentKey('k');
    l.setCurrentNamespace(1);
    l.add(1);
    l.setCurrentNamespace(2);
    l.add(2);
    const c = await snap(b, 'checkpoint');
    await b.close();
    const r = await restoreFrom(make(), c);
    r.setCurrentKey('k');
    const l2 = r.getState(d);
    l2.mergeNamespaces(3, [1, 2]);
    l2.setCurrentNamespace(3);
    expect(l2.get()).toEqual([1, 2]);
    await r.close();
  });
});
