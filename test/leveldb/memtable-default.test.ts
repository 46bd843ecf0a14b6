import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LevelDbKeyedStateBackend } from '../../backends/leveldb/backend.js';
import { bytesSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import { params } from '../heap/support.js';

/**
 * The default memtable is large enough that a few MB of random-key writes stay in it: every
 * level-0 table LevelDB writes costs each point read a probe and level-0 compactions rewrite
 * level 1, so small memtables slowed read-update loops on large states (DEFAULT_MEMTABLE_BYTES).
 */

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'streamstate-leveldb-memtable-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('LevelDB backend default memtable', () => {
  it('keeps 8 MB of writes in the memtable: no level-0 table is written', async () => {
    const dir = join(root, 'instance');
    const kb = await LevelDbKeyedStateBackend.create(params({}), { instanceDir: () => dir });
    try {
      const v = kb.getState(valueState<Uint8Array>('v', { serializer: bytesSerializer }));
      const value = Buffer.alloc(200, 7);
      for (let i = 0; i < 40_000; i++) {
        kb.setCurrentKey(`key-${(i * 7919) % 40_000}`);
        v.update(value);
      }
      await kb.store.flush(); // every buffered layer is in LevelDB
      const tables = (await readdir(join(dir, 'db'))).filter((f) => f.endsWith('.ldb'));
      expect(tables).toEqual([]);
      kb.setCurrentKey('key-123');
      expect(Buffer.from(v.value() ?? [])).toEqual(value);
    } finally {
      await kb.close();
    }
  });
});
