import { cp, open, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { changelog } from '../../src/changelog/backend.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { writeHandmadeSavepoint } from '../savepoint/support/handmade.js';
import { writeJob } from '../savepoint/support/job.js';
import { cli, oneLine, tempDir } from './support.js';

let root: string;
let cleanup: () => Promise<void>;
let heapNative: string;
let levelNative: string;
let changelogNative: string;

/** A fresh copy of a savepoint to damage. */
async function copyOf(dir: string, name: string): Promise<string> {
  const target = join(root, 'damaged', name);
  await cp(dir, target, { recursive: true });
  return target;
}

async function dataFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n !== '_metadata').map((n) => join(dir, n));
}

async function flipByte(file: string, at: number): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, at);
    b[0] ^= 0x10;
    await fh.write(b, 0, 1, at);
  } finally {
    await fh.close();
  }
}

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-cli-iv-'));
  heapNative = await writeJob(new HeapStateBackend({ name: 'memory' }), { root, parallelism: 2, format: 'native' });
  levelNative = await writeJob(leveldb({ workingDir: join(root, 'work') }), { root, parallelism: 2, format: 'native' });
  changelogNative = await writeJob(
    changelog({
      backend: leveldb({ workingDir: join(root, 'work') }),
      storage: localCheckpointStorage(join(root, 'cl')),
    }),
    {
      root,
      parallelism: 2,
      format: 'native',
    },
  );
});

afterAll(async () => cleanup());

describe('streamstate inspect', () => {
  it('shows operators, states with kinds and serializers, key groups, sizes and files', async () => {
    const r = await cli(['inspect', heapNative]);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('operator op-1: parallelism 2, maxParallelism 16');
    expect(r.stdout).toMatch(/keyed map\s+attrs/);
    expect(r.stdout).toMatch(/keyed list\s+events/);
    expect(r.stdout).toMatch(/keyed timers\s+timers/);
    expect(r.stdout).toMatch(/operator union\s+sources\s+\(2 elements/);
    expect(r.stdout).toMatch(/operator broadcast rules\s+\(2 entries/);
    expect(r.stdout).toContain('key groups 0-7');
    expect(r.stdout).toContain('files:');
  });

  it('--json gives the same facts as data', async () => {
    const r = await cli(['inspect', heapNative, '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.kind).toBe('savepoint');
    expect(report.format).toBe('native');
    const op = report.operators[0];
    expect(op.keyedStates.map((s: { name: string }) => s.name)).toEqual([
      'attrs',
      'count',
      'events',
      'profile',
      'timers',
      'total',
    ]);
    expect(op.subtasks.map((s: { keyed: { keyGroupRange: unknown }[] }) => s.keyed[0].keyGroupRange)).toEqual([
      { start: 0, end: 7 },
      { start: 8, end: 15 },
    ]);
    const files = report.files as { path: string; size: number }[];
    expect(files.length).toBeGreaterThanOrEqual(4);
    expect(report.totalBytes).toBe(report.metadataBytes + files.reduce((n, f) => n + f.size, 0));
  });

  it('names the handle types whose states live in backend files (LevelDB native)', async () => {
    const r = await cli(['inspect', levelNative]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('leveldb-incremental');
  });

  it('accepts the _metadata file and relative paths', async () => {
    const a = await cli(['inspect', join(heapNative, '_metadata'), '--json']);
    const b = await cli(['inspect', heapNative.slice(root.length + 1), '--json'], { cwd: root });
    expect(a.code).toBe(0);
    expect(b.code).toBe(0);
    expect(JSON.parse(a.stdout).operators).toEqual(JSON.parse(b.stdout).operators);
  });

  it('a missing path: exit 3, one line', async () => {
    const r = await cli(['inspect', join(root, 'nope')]);
    expect(r.code).toBe(3);
    expect(oneLine(r.stderr)).toMatch(/streamstate inspect: error NOT_FOUND: .*nope: no such file or directory/);
    expect(r.stdout).toBe('');
  });

  it('a directory that is not a savepoint: exit 3 and says why', async () => {
    const r = await cli(['inspect', join(root, 'work')]);
    expect(r.code).toBe(3);
    expect(oneLine(r.stderr)).toContain('has no _metadata');
  });

  it('a data file instead of a directory: exit 2 (usage)', async () => {
    const [file] = await dataFiles(heapNative);
    const r = await cli(['inspect', file]);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toContain('pass the directory that holds _metadata');
  });

  it('a _metadata with bad magic: exit 4; a newer format version: exit 6', async () => {
    const bad = await copyOf(heapNative, 'bad-magic');
    await writeFile(join(bad, '_metadata'), Buffer.from('this is not a savepoint at all'));
    const r = await cli(['inspect', bad]);
    expect(r.code).toBe(4);
    expect(oneLine(r.stderr)).toContain('BAD_MAGIC');

    const newer = await copyOf(heapNative, 'newer');
    const bytes = await readFile(join(newer, '_metadata'));
    bytes.writeUInt16BE(9, 4);
    await writeFile(join(newer, '_metadata'), bytes);
    const v = await cli(['inspect', newer]);
    expect(v.code).toBe(6);
    expect(oneLine(v.stderr)).toMatch(/UNSUPPORTED_VERSION: .*upgrade streamstate/);
  });

  it('a truncated _metadata: exit 4', async () => {
    const t = await copyOf(heapNative, 'truncated-md');
    await truncate(join(t, '_metadata'), 40);
    const r = await cli(['inspect', t]);
    expect(r.code).toBe(4);
    expect(oneLine(r.stderr)).toContain('TRUNCATED');
  });
});

describe('streamstate verify', () => {
  it('passes an intact savepoint and counts decoded records', async () => {
    const r = await cli(['verify', heapNative]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^OK .*: \d+ files .*, 4 handles, \d+ records decoded/);
    const j = await cli(['verify', heapNative, '--json']);
    const result = JSON.parse(j.stdout);
    expect(result.ok).toBe(true);
    // 60 keys: 60 count + 20 profile + 60+30 event lists + 150 map entries + 60 totals + 60 timers, plus 2+2 split, 2 union, 4 broadcast
    expect(result.records).toBe(60 + 20 + 90 + 150 + 60 + 60 + 4 + 2 + 4);
  });

  it('decodes LevelDB native savepoints by restoring them through LevelDB', async () => {
    const r = await cli(['verify', levelNative, '--json']);
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout);
    expect(result.undecodedHandleTypes).toEqual([]);
    expect(result.records).toBe(60 + 20 + 90 + 150 + 60 + 60 + 4 + 2 + 4);
  });

  it('decodes changelog(leveldb) native savepoints through their backend', async () => {
    const r = await cli(['verify', changelogNative, '--json']);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).records).toBe(60 + 20 + 90 + 150 + 60 + 60 + 4 + 2 + 4);
  });

  it('a missing data file: exit 3', async () => {
    const d = await copyOf(heapNative, 'missing-file');
    const [file] = await dataFiles(d);
    await rm(file);
    const r = await cli(['verify', d]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('is missing');
    expect(r.stdout).toMatch(/^FAILED/);
  });

  it('a bit flip in a data file: exit 4 (checksum)', async () => {
    const d = await copyOf(heapNative, 'bitflip');
    for (const f of await dataFiles(d)) await flipByte(f, 20);
    const r = await cli(['verify', d]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('CHECKSUM_MISMATCH');
  });

  it('a truncated data file: exit 4', async () => {
    const d = await copyOf(heapNative, 'truncated');
    const [file] = await dataFiles(d);
    await truncate(file, 10);
    const r = await cli(['verify', d]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain('TRUNCATED');
  });

  it('intact files whose records do not decode: exit 5', async () => {
    const dir = await writeHandmadeSavepoint(root, 'undecodable', {
      states: [
        {
          name: 'n',
          kind: 'value',
          stateId: 0,
          namespaceSerializer: { id: 'streamstate.string', version: 1 },
          valueSerializer: { id: 'streamstate.int32', version: 1 },
          ttl: false,
        },
      ],
      // int32 values are 4 bytes: 3 bytes cannot be one.
      values: [{ stateId: 0, key: Buffer.from('k1'), value: Buffer.from([1, 2, 3]) }],
    });
    const r = await cli(['verify', dir]);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/DECODE_FAILED: .*state "n": a record does not decode/);
  });

  it('records of custom serializers are framing-checked, not decoded', async () => {
    const dir = await writeHandmadeSavepoint(root, 'wrong-kg', {
      states: [
        {
          name: 'n',
          kind: 'value',
          stateId: 0,
          namespaceSerializer: { id: 'streamstate.string', version: 1 },
          valueSerializer: { id: 'custom.thing', version: 3 },
          ttl: false,
        },
      ],
      values: [{ stateId: 0, key: Buffer.from('k1'), value: Buffer.from('opaque') }],
      maxParallelism: 16,
    });
    const ok = await cli(['verify', dir, '--json']);
    expect(ok.code).toBe(0);
    expect(JSON.parse(ok.stdout).opaqueRecords).toBe(1);
  });

  it('--help documents exit codes', async () => {
    const r = await cli(['verify', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Usage: streamstate verify');
    expect(r.stdout).toContain('3 not found, 4 corrupt, 5 decode error');
  });
});
