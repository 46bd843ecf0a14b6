import { execFileSync } from 'node:child_process';
import { cp, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { META_MAGIC, META_VERSION, decodeMeta } from '../../backends/leveldb/meta.js';
import type { KeyGroupsStateHandle } from '../../src/backend/handles.js';
import type { CheckpointMetadata } from '../../src/checkpoint/metadata.js';
import { decodeMetadata, encodeMetadata } from '../../src/checkpoint/metadata-codec.js';
import { memoryCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { ByteWriter } from '../../src/format/bytes.js';
import { keyGroupBlockLimit } from '../../src/format/key-groups-stream.js';
import { HeapStateBackend } from '../../backends/heap/index.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import { LocalBlobStore } from '../../src/storage/local-blob-store.js';
import { BlobStateFileReader } from '../../src/checkpoint/streams.js';
import { cli } from '../cli/support.js';
import { BackendHarness } from '../support/backend-harness.js';
import {
  buildFamily,
  closeJob,
  newCoordinator,
  openJob,
  storageFor,
  type FamilyFixture,
} from '../support/corruption/fixtures.js';
import { OPERATOR_ID } from '../support/corruption/job.js';
import { expectRejectsCode, expectThrowsCode } from '../support/errors.js';
import { filesystem } from '../../backends/filesystem/index.js';

/**
 * Issue 12, "Hostile or odd files": FIFOs, devices, crafted lengths and counts end in a typed
 * error with bounded memory; nothing hangs, aborts or throws a RangeError. The vitest timeouts
 * are failure guards only (a hang would otherwise block the run); no outcome depends on time.
 */

const HANG_GUARD_MS = 20_000;

function mkfifo(path: string): void {
  execFileSync('mkfifo', [path]);
}

/** The first non-_metadata file of a snapshot directory. */
async function aStateFile(dir: string): Promise<string> {
  const name = (await readdir(dir)).find((n) => n !== '_metadata');
  if (name === undefined) throw new Error(`no state file in ${dir}`);
  return join(dir, name);
}

describe('odd files in a local snapshot', () => {
  let fam: FamilyFixture;
  let dir: string;
  let root: string;
  beforeAll(async () => {
    fam = await buildFamily('heap');
  }, 60_000);
  afterAll(async () => {
    await fam?.cleanup();
  });
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'streamstate-hostile-'));
    root = join(dir, 'store');
    await cp(fam.root, root, { recursive: true });
    return () => rm(dir, { recursive: true, force: true });
  });

  const pointer = (): string => fam.a.checkpoints[1];
  const restoreAll = async (): Promise<void> => {
    const backend = filesystem({ checkpointDir: root, inlineThreshold: 0 });
    const coordinator = newCoordinator(storageFor('heap', root), backend, fam.a.jobId, 2);
    const plan = await coordinator.restore(pointer());
    await closeJob(await openJob(backend, fam.a.jobId, 2, plan));
  };
  const cliCommands = (snapshot: string): string[][] => [
    ['inspect', snapshot],
    ['verify', snapshot],
    ['dump', snapshot, '--operator', OPERATOR_ID],
  ];

  it(
    'a FIFO as _metadata: resolve, restore and inspect/verify/dump end with CORRUPT instead of hanging',
    async () => {
      const metadata = join(root, pointer(), '_metadata');
      await rm(metadata);
      mkfifo(metadata);
      const err = await expectRejectsCode(storageFor('heap', root).resolve(pointer()), 'CORRUPT');
      expect(err.message).toContain('a FIFO');
      await expectRejectsCode(restoreAll(), 'CORRUPT');
      for (const args of cliCommands(join(root, pointer()))) {
        const r = await cli(args);
        expect(r.code, `${args[0]}: ${r.stderr}`).toBe(4);
        expect(r.stderr).toContain('not a regular file');
      }
    },
    HANG_GUARD_MS,
  );

  it(
    'a FIFO as a state file: restore and verify/dump end with CORRUPT instead of hanging',
    async () => {
      const file = await aStateFile(join(root, pointer()));
      await rm(file);
      mkfifo(file);
      await expectRejectsCode(restoreAll(), 'CORRUPT');
      for (const args of cliCommands(join(root, pointer())).slice(1)) {
        const r = await cli(args);
        expect(r.code, `${args[0]}: ${r.stdout}${r.stderr}`).toBe(4);
        expect(`${r.stdout}${r.stderr}`).toContain('a FIFO');
      }
    },
    HANG_GUARD_MS,
  );

  it(
    '_metadata symlinked to /dev/zero is refused without reading it (no unbounded memory)',
    async () => {
      const metadata = join(root, pointer(), '_metadata');
      await rm(metadata);
      await symlink('/dev/zero', metadata);
      const err = await expectRejectsCode(storageFor('heap', root).resolve(pointer()), 'CORRUPT');
      expect(err.message).toContain('a device');
      for (const args of cliCommands(join(root, pointer()))) {
        const r = await cli(args);
        expect(r.code, `${args[0]}: ${r.stderr}`).toBe(4);
      }
      // The store's own reads refuse it too.
      const store = new LocalBlobStore(root);
      await expectRejectsCode(store.get(`${pointer()}/_metadata`), 'CORRUPT');
      await expectRejectsCode(store.stat(`${pointer()}/_metadata`), 'CORRUPT');
    },
    HANG_GUARD_MS,
  );

  it(
    'a state file symlinked to /dev/zero (inside the snapshot) is refused by restore, verify and dump without reading it',
    async () => {
      const file = await aStateFile(join(root, pointer()));
      await rm(file);
      await symlink('/dev/zero', file);
      await expectRejectsCode(restoreAll(), 'CORRUPT');
      for (const args of cliCommands(join(root, pointer())).slice(1)) {
        const r = await cli(args);
        expect(r.code, `${args[0]}: ${r.stdout}${r.stderr}`).toBe(4);
        expect(`${r.stdout}${r.stderr}`).toContain('a device');
      }
    },
    HANG_GUARD_MS,
  );

  it('a _metadata larger than the bound is refused before it is parsed', async () => {
    const metadata = join(root, pointer(), '_metadata');
    const { MAX_METADATA_BYTES } = await import('../../src/checkpoint/streams.js');
    // Sparse: the file claims the size without taking the disk.
    execFileSync('truncate', ['-s', String(MAX_METADATA_BYTES + 10), metadata]);
    const err = await expectRejectsCode(storageFor('heap', root).resolve(pointer()), 'CORRUPT');
    expect(err.message).toContain(`larger than ${MAX_METADATA_BYTES} bytes`);
  });

  /** Sets the first key-groups block of the _metadata to `length` bytes (the declared file size grows to match). */
  async function craftBlockLength(length: number): Promise<void> {
    const file = join(root, pointer(), '_metadata');
    const metadata = decodeMetadata(await readFile(file)) as CheckpointMetadata;
    const keyed = metadata.operators[0].subtasks[0].keyed[0] as KeyGroupsStateHandle & {
      blocks: { length: number }[];
      stream: { size: number };
    };
    expect(keyed.type).toBe('key-groups');
    keyed.blocks[0].length = length;
    keyed.stream.size = keyed.blocks[0].offset + length + 100;
    await writeFile(file, encodeMetadata(metadata));
  }

  for (const length of [2 ** 31, 2 ** 31 - 1]) {
    it(`a crafted block length of ${length} bytes: restore, dump, convert and verify end with a typed error (no abort)`, async () => {
      await craftBlockLength(length);
      const err = await expectRejectsCode(restoreAll(), length > 2 ** 31 - 1 ? 'CORRUPT' : 'TRUNCATED');
      expect(err.message).toContain(pointer());
      const snapshot = join(root, pointer());
      for (const args of [
        ...cliCommands(snapshot).slice(1),
        ['convert', snapshot, join(dir, 'out'), '--to', 'memory'],
      ]) {
        const r = await cli(args);
        expect(r.code, `${args[0]}: ${r.stdout}${r.stderr}`).toBe(4);
      }
    }, 30_000);
  }
});

describe('crafted counts', () => {
  it('a LevelDB meta stream claiming 2^33 timers is CORRUPT, not a RangeError', () => {
    const w = new ByteWriter(256);
    w.raw(META_MAGIC)
      .u16(META_VERSION)
      .string(
        JSON.stringify({
          keySerializer: { id: 'string' },
          maxParallelism: 128,
          keyGroupRange: { start: 0, end: 127 },
          states: [],
        }),
      );
    w.varint(1)
      .string('timers')
      .varint(2 ** 33);
    w.f64(1).u16(0).bytes(Buffer.from('k')).bytes(Buffer.from('n'));
    const err = expectThrowsCode(() => decodeMeta(w.toBuffer(), 'meta'), 'CORRUPT');
    expect(err.message).toContain(`${2 ** 33} timers`);
  });

  it('a count that fits the remaining bytes still decodes', () => {
    const w = new ByteWriter(256);
    w.raw(META_MAGIC)
      .u16(META_VERSION)
      .string(
        JSON.stringify({
          keySerializer: { id: 'string' },
          maxParallelism: 128,
          keyGroupRange: { start: 0, end: 127 },
          states: [],
        }),
      );
    w.varint(1).string('timers').varint(1);
    w.f64(1).u16(0).bytes(Buffer.from('k')).bytes(Buffer.from('n'));
    expect(decodeMeta(w.toBuffer(), 'meta').timers.get('timers')).toHaveLength(1);
  });
});

describe('a key group larger than the largest single write', () => {
  it('is refused at snapshot time with SNAPSHOT_TOO_LARGE naming the key group and what to do (limit lowered for the test)', async () => {
    const saved = keyGroupBlockLimit.maxBytes;
    keyGroupBlockLimit.maxBytes = 4096;
    const harness = await BackendHarness.create(async () => ({
      backend: new HeapStateBackend({ name: 'memory' }),
      storage: memoryCheckpointStorage({ inlineThreshold: 0 }),
      cleanup: async () => undefined,
    }));
    try {
      const [backend] = await harness.createKeyedOperator({ keySerializer: stringSerializer, parallelism: 1 });
      const v = valueState<string>('v', { serializer: stringSerializer });
      backend.setCurrentKey('small');
      backend.getState(v).update('x');
      backend.setCurrentKey('big');
      backend.getState(v).update('y'.repeat(10_000));
      const err = await expectRejectsCode(harness.checkpoint([backend]), 'SNAPSHOT_TOO_LARGE');
      expect(err.message).toMatch(/key group \d+ serializes to more than 4096 bytes/);
      expect(err.message).toContain('Raise maxParallelism');
      // Below the limit the same backend checkpoints fine.
      backend.getState(v).update('y'.repeat(100));
      await harness.checkpoint([backend]);
    } finally {
      keyGroupBlockLimit.maxBytes = saved;
      await harness.dispose();
    }
  });
});

describe('downloads (LevelDB table files) check the file before copying it', () => {
  it(
    'a file larger than its handle says, or a FIFO, is refused and nothing is copied',
    async () => {
      const dir = await mkdtemp(join(tmpdir(), 'streamstate-hostile-download-'));
      try {
        const store = new LocalBlobStore(join(dir, 'store'));
        await store.put('sp/big', Buffer.alloc(1000));
        const reader = new BlobStateFileReader(store, 'sp');
        await expectRejectsCode(
          reader.download({ type: 'file', path: 'big', size: 10, crc32: 0 }, join(dir, 'out-1')),
          'CORRUPT',
        );
        mkfifo(join(dir, 'store', 'sp', 'fifo'));
        const err = await expectRejectsCode(
          reader.download({ type: 'file', path: 'fifo', size: 10, crc32: 0 }, join(dir, 'out-2')),
          'CORRUPT',
        );
        expect(err.message).toContain('a FIFO');
        expect((await readdir(dir)).sort()).toEqual(['store']);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
    HANG_GUARD_MS,
  );
});
