import { afterAll, describe, expect, it } from 'vitest';
import type { LevelDbKeyedStateBackend } from '../../backends/leveldb/backend.js';
import { decodeRowKey, isCountRowStateId } from '../../backends/leveldb/row-keys.js';
import { int32Serializer } from '../../src/serializers/builtins.js';
import { mapState } from '../../src/state/descriptors.js';
import { LevelRig } from './support.js';

/**
 * Blind map puts (entries the write buffer knows nothing of) are not looked up in LevelDB when
 * their layer is written: they are counted when a count is needed, in one batch at a snapshot
 * point, and a later put of a row written meanwhile is not blind at all.
 */

const rig = new LevelRig({ writeBufferBytes: 1 << 20 }); // layers are sealed by flush() only here
afterAll(() => rig.cleanup());
const md = mapState<number, number>('m', { keySerializer: int32Serializer, valueSerializer: int32Serializer });

/** Counts the map entry rows LevelDB is asked for (getMany and getSync). */
function entryLookups(kb: LevelDbKeyedStateBackend<string>): { readonly n: number } {
  const db = kb.db;
  const seen = { n: 0 };
  const isEntry = (k: Buffer): boolean => !isCountRowStateId(decodeRowKey(k).stateId);
  const getMany = db.getMany.bind(db);
  const getSync = db.getSync.bind(db);
  db.getMany = ((keys: Buffer[], options?: object) => {
    for (const k of keys) if (isEntry(k)) seen.n++;
    return getMany(keys, options ?? {});
  }) as typeof db.getMany;
  db.getSync = ((key: Buffer, options?: object) => {
    if (isEntry(key)) seen.n++;
    return getSync(key, options ?? {});
  }) as typeof db.getSync;
  return seen;
}

/** Each map's count row as LevelDB holds it (0: no row). */
async function countRows(kb: LevelDbKeyedStateBackend<string>): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const [k, v] of kb.db.iterator()) {
    const row = decodeRowKey(k);
    if (isCountRowStateId(row.stateId)) out.set(row.key.toString(), v.readUInt32BE(0));
  }
  return out;
}

describe('leveldb deferred map counts', () => {
  it('blind puts cost no lookup when their layer is written; a snapshot point counts them in one batch', async () => {
    const kb = await rig.create();
    const map = kb.getState(md);
    for (let i = 0; i < 100; i++) {
      kb.setCurrentKey(`k${i}`);
      map.put(1, i);
    }
    await kb.flush();
    // Existing entries now: overwrites (blind: LevelDB holds them, the buffer does not) and new ones.
    const lookups = entryLookups(kb);
    for (let i = 0; i < 100; i++) {
      kb.setCurrentKey(`k${i}`);
      map.put(i % 2 === 0 ? 1 : 2, i);
    }
    await kb.flush();
    expect(lookups.n).toBe(0);
    const { id, handle } = await rig.snapshot(kb);
    expect(handle).not.toBeNull();
    expect(lookups.n).toBeGreaterThan(0);
    const expected = new Map(Array.from({ length: 100 }, (_, i) => [`k${i}`, i % 2 === 0 ? 1 : 2]));
    expect(await countRows(kb)).toEqual(expected);
    // The checkpoint's database holds the same counts.
    const restored = await rig.restore(id, [handle]);
    try {
      expect(await countRows(restored)).toEqual(expected);
    } finally {
      await restored.close();
    }
    await kb.close();
  });

  it('isEmpty() and remove() count a map exactly while its blind puts are pending', async () => {
    const kb = await rig.create();
    const map = kb.getState(md);
    kb.setCurrentKey('a');
    map.put(1, 1);
    map.put(2, 2);
    await kb.flush();
    kb.setCurrentKey('b');
    map.put(1, 1); // another map, also pending
    kb.setCurrentKey('a');
    map.put(2, 20); // a row written since the deferral began: a known overwrite
    await kb.flush();
    expect(map.isEmpty()).toBe(false);
    map.remove(1);
    await kb.flush(); // lowers the count of 'a': its pending puts are counted with it
    expect(map.isEmpty()).toBe(false);
    map.remove(2);
    expect(map.isEmpty()).toBe(true);
    await kb.flush();
    expect(map.isEmpty()).toBe(true);
    kb.setCurrentKey('b');
    expect(map.isEmpty()).toBe(false);
    await rig.snapshot(kb);
    expect(await countRows(kb)).toEqual(new Map([['b', 1]]));
    await kb.close();
  });

  it('a put of a row LevelDB received since the deferral began is not looked up', async () => {
    const kb = await rig.create();
    const map = kb.getState(md);
    const lookups = entryLookups(kb);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 50; i++) {
        kb.setCurrentKey(`k${i}`);
        map.put(1, round);
      }
      await kb.flush();
    }
    await rig.snapshot(kb);
    // One lookup per entry (its first put), none for the two later rounds.
    expect(lookups.n).toBe(50);
    expect(await countRows(kb)).toEqual(new Map(Array.from({ length: 50 }, (_, i) => [`k${i}`, 1])));
    await kb.close();
  });
});
