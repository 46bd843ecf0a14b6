import { afterAll, describe, expect, it } from 'vitest';
import type { LevelDbKeyedStateBackend } from '../../backends/leveldb/backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { changelog } from '../../src/changelog/backend.js';
import type { ChangelogKeyedStateBackend } from '../../src/changelog/keyed-backend.js';
import { float64Serializer, int32Serializer, stringSerializer } from '../../src/serializers/builtins.js';
import { listState, mapState, reducingState, valueState, type TtlConfig } from '../../src/state/descriptors.js';
import { params } from '../heap/support.js';
import { LevelRig } from './support.js';

/**
 * TTL cleanup in LevelDB: full snapshots honour cleanupInFullSnapshot (false keeps expired values,
 * on leveldb and changelog(leveldb)), and the TTL sweep removes expired rows physically, so that
 * rows of keys that are never read again do not stay in the database for ever.
 */

const rig = new LevelRig();
afterAll(() => rig.cleanup());

const TTL_MS = 1000;
let now = 0;
const clock = (): number => now;

function descriptors(ttl: TtlConfig) {
  return {
    value: valueState<number>('v', { serializer: float64Serializer, ttl }),
    list: listState<number>('l', { serializer: int32Serializer, ttl }),
    map: mapState<string, number>('m', { keySerializer: stringSerializer, valueSerializer: float64Serializer, ttl }),
    reducing: reducingState<number>('r', (a, b) => a + b, { serializer: float64Serializer, ttl }),
  };
}

/** Writes every TTL state of `keys` at the current clock: lists get a base row and chunk rows. */
function write(kb: LevelDbKeyedStateBackend<string>, keys: readonly string[], ttl: TtlConfig): void {
  const d = descriptors(ttl);
  const value = kb.getState(d.value);
  const list = kb.getState(d.list);
  const map = kb.getState(d.map);
  const reducing = kb.getState(d.reducing);
  for (const k of keys) {
    kb.setCurrentKey(k);
    value.update(1);
    list.update([1, 2]);
    list.add(3);
    list.addAll([4, 5]);
    for (const e of ['a', 'b', 'c']) map.put(e, 1);
    reducing.add(2);
  }
}

/** Rows of the TTL states in LevelDB (entries, list chunks, count and chunk-counter rows). */
async function ttlRows(kb: LevelDbKeyedStateBackend<string>): Promise<number> {
  await kb.flush();
  const ids = new Set(['v', 'l', 'm', 'r'].map((n) => kb.catalog.get(n)?.stateId as number));
  let n = 0;
  for await (const [k] of kb.db.iterator()) if (ids.has(k.readUInt16BE(2) & 0x7fff)) n++;
  return n;
}

/** Sweeps until one full pass over the key-group range has ended. */
async function fullPass(kb: LevelDbKeyedStateBackend<string>, rowsPerStep: number): Promise<number> {
  let steps = 0;
  for (;;) {
    steps++;
    if ((await kb.sweepExpiredRows(rowsPerStep)).wrapped) return steps;
  }
}

const keys = (prefix: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

describe('leveldb TTL sweep', () => {
  const ttl: TtlConfig = { ttlMs: TTL_MS };

  it('removes every expired row (values, map entries and counts, list rows and counters) and nothing else', async () => {
    now = 0;
    const kb = await rig.create(
      { clock },
      { ttlCleanup: { rowsPerSweep: 37, everyAccesses: Number.MAX_SAFE_INTEGER } },
    );
    write(kb, keys('old', 60), ttl);
    now = 500;
    write(kb, keys('new', 40), ttl);
    const before = await ttlRows(kb);
    // Per key: 1 value, 3 list rows + 1 chunk counter, 3 map entries + 1 count row, 1 reducing.
    expect(before).toBe(100 * 10);
    now = 1200; // the 'old' keys have expired, the 'new' ones not
    await fullPass(kb, 37);
    expect(await ttlRows(kb)).toBe(40 * 10);
    // The live keys read as before; the expired ones are gone (also for isEmpty, which reads count rows).
    const d = descriptors(ttl);
    const map = kb.getState(d.map);
    const list = kb.getState(d.list);
    kb.setCurrentKey('new3');
    expect(list.get()).toEqual([1, 2, 3, 4, 5]);
    expect(map.isEmpty()).toBe(false);
    kb.setCurrentKey('old3');
    expect(map.isEmpty()).toBe(true);
    expect(list.get()).toBeNull();
    // Later everything expires: after enough sweeps no row of the TTL states survives.
    now = 10_000;
    await fullPass(kb, 37);
    expect(await ttlRows(kb)).toBe(0);
    expect(await kb.numEntries()).toBe(0);
    await kb.close();
  });

  it('drops only the expired elements of a list row', async () => {
    now = 0;
    const kb = await rig.create({ clock }, { ttlCleanup: { everyAccesses: Number.MAX_SAFE_INTEGER } });
    const list = kb.getState(
      listState<number>('l', {
        serializer: int32Serializer,
        ttl: { ttlMs: TTL_MS, visibility: 'returnExpiredIfNotCleanedUp' },
      }),
    );
    kb.setCurrentKey('k');
    list.add(1);
    list.add(2);
    now = 600;
    list.add(3);
    list.addAll([4]);
    now = 1100; // 1 and 2 expired
    await fullPass(kb, 1000);
    expect(list.get()).toEqual([3, 4]);
    await kb.close();
  });

  it('never deletes a row refreshed after the sweep read it', async () => {
    now = 0;
    const kb = await rig.create({ clock }, { ttlCleanup: { everyAccesses: Number.MAX_SAFE_INTEGER } });
    const value = kb.getState(valueState<number>('v', { serializer: float64Serializer, ttl }));
    for (const k of keys('k', 20)) {
      kb.setCurrentKey(k);
      value.update(1);
    }
    now = 5000;
    const step = kb.sweepExpiredRows(1000); // has read its rows (buffered ones included) before returning
    kb.setCurrentKey('k7');
    value.update(2); // a fresh write of an expired row
    expect((await step).removed).toBe(19);
    kb.setCurrentKey('k7');
    expect(value.value()).toBe(2);
    await kb.close();
  });

  it('runs in the background as TTL states are accessed', async () => {
    now = 0;
    const kb = await rig.create({ clock }, { ttlCleanup: { everyAccesses: 50, rowsPerSweep: 100_000 } });
    const value = kb.getState(valueState<number>('v', { serializer: float64Serializer, ttl }));
    for (const k of keys('k', 30)) {
      kb.setCurrentKey(k);
      value.update(1);
    }
    now = 5000;
    kb.setCurrentKey('other');
    for (let i = 0; i < 60; i++) value.value(); // past 50 accesses: a background step starts
    await kb.sweepExpiredRows(0); // waits for the running step
    expect(await ttlRowsOf(kb, 'v')).toBe(0);
    await kb.close();
  });

  it('sweeps the wrapped leveldb of changelog(leveldb) too', async () => {
    now = 0;
    const backend = changelog({
      backend: leveldb({ workingDir: rig.root, ttlCleanup: { everyAccesses: 50, rowsPerSweep: 100_000 } }),
      storage: rig.storage,
    });
    const kb = (await backend.createKeyedStateBackend(params({ clock }))) as ChangelogKeyedStateBackend<string>;
    const inner = kb.inner as LevelDbKeyedStateBackend<string>;
    const value = kb.getState(valueState<number>('v', { serializer: float64Serializer, ttl }));
    for (const k of keys('k', 30)) {
      kb.setCurrentKey(k);
      value.update(1);
    }
    now = 5000;
    kb.setCurrentKey('other');
    for (let i = 0; i < 60; i++) value.value();
    await inner.sweepExpiredRows(0); // waits for the background step
    expect(await ttlRowsOf(inner, 'v')).toBe(0);
    await kb.close();
  });

  it('ttlCleanup: false leaves expired rows alone', async () => {
    now = 0;
    const kb = await rig.create({ clock }, { ttlCleanup: false });
    write(kb, keys('k', 5), ttl);
    now = 5000;
    expect((await kb.sweepExpiredRows()).removed).toBe(0);
    expect(await ttlRows(kb)).toBe(50);
    await kb.close();
  });
});

async function ttlRowsOf(kb: LevelDbKeyedStateBackend<string>, name: string): Promise<number> {
  await kb.flush();
  const id = kb.catalog.get(name)?.stateId as number;
  let n = 0;
  for await (const [k] of kb.db.iterator()) if ((k.readUInt16BE(2) & 0x7fff) === id) n++;
  return n;
}

describe('cleanupInFullSnapshot on leveldb and changelog(leveldb)', () => {
  /** Entries in a canonical savepoint of 10 keys written at 0 and taken at 5000 (all expired), restored into leveldb. */
  async function savedEntries(
    variant: 'leveldb' | 'changelog(leveldb)',
    cleanupInFullSnapshot: boolean | undefined,
  ): Promise<number> {
    now = 0;
    const ttl: TtlConfig = { ttlMs: TTL_MS, ...(cleanupInFullSnapshot === undefined ? {} : { cleanupInFullSnapshot }) };
    const level = leveldb({ workingDir: rig.root, ttlCleanup: false });
    const backend = variant === 'leveldb' ? level : changelog({ backend: level, storage: rig.storage });
    const kb = await backend.createKeyedStateBackend(params({ clock }));
    const value = kb.getState(valueState<number>('v', { serializer: float64Serializer, ttl }));
    const map = kb.getState(
      mapState<string, number>('m', { keySerializer: stringSerializer, valueSerializer: float64Serializer, ttl }),
    );
    const list = kb.getState(listState<number>('l', { serializer: int32Serializer, ttl }));
    for (const k of keys('k', 10)) {
      kb.setCurrentKey(k);
      value.update(1);
      map.put('a', 1);
      list.add(1);
    }
    now = 5000;
    const sp = await rig.snapshot(kb, 'canonical');
    await kb.close();
    const restored = await rig.restore(sp.id, [sp.handle], { clock }, { ttlCleanup: false });
    const n = await restored.numEntries();
    await restored.close();
    return n;
  }

  it.each(['leveldb', 'changelog(leveldb)'] as const)(
    '%s keeps expired values with false and drops them by default',
    async (variant) => {
      expect(await savedEntries(variant, false)).toBe(30);
      expect(await savedEntries(variant, true)).toBe(0);
      expect(await savedEntries(variant, undefined)).toBe(0);
    },
  );
});
