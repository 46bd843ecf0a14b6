import { cp, mkdir, open, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import { readJob, writeCheckpoints, writeJob, type JobContents } from '../savepoint/support/job.js';
import { cli, entries, errorLine, oneLine, tempDir } from './support.js';

let root: string;
let cleanup: () => Promise<void>;
let heapNative: string;
let levelNative: string;
let expected: JobContents;
let expectedLevel: JobContents;

const heap = (): HeapStateBackend => new HeapStateBackend({ name: 'memory' });
const level = (): ReturnType<typeof leveldb> => leveldb({ workingDir: join(root, 'work') });
const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-cli-conv-'));
  heapNative = await writeJob(heap(), { root, parallelism: 2, format: 'native' });
  levelNative = await writeJob(level(), { root, parallelism: 3, format: 'native' });
  await mkdir(join(root, 'out'));
  expected = await readJob(heap(), heapNative, { parallelism: 2 });
  expectedLevel = await readJob(level(), levelNative, { parallelism: 3 });
  expect(expected.keyed.length).toBeGreaterThan(100);
  // Same keyed state; operator state differs with the parallelism it was written at.
  expect(expectedLevel.keyed).toEqual(expected.keyed);
});

afterAll(async () => cleanup());

describe('streamstate convert', () => {
  it('heap native -> leveldb canonical at parallelism 3 restores the same contents', async () => {
    const dst = join(root, 'out', 'a');
    const r = await cli(['convert', heapNative, dst, '--to', 'leveldb', '--parallelism', '3']);
    expect(r.stderr).not.toContain('error');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/canonical savepoint for leveldb \(op-1@3\)/);
    const md = JSON.parse((await cli(['inspect', dst, '--json'])).stdout);
    expect(md.format).toBe('canonical');
    expect(md.backend).toBe('leveldb');
    expect(md.operators[0].parallelism).toBe(3);
    expect(await readJob(level(), dst, { parallelism: 3 })).toEqual(expected);
    expect(await readJob(heap(), dst, { parallelism: 1 })).toEqual(expected);
    // Only the savepoint (readJob's coordinator keeps its job lease under reader/): nothing hidden left over.
    expect((await entries(join(root, 'out'))).filter((n) => n !== 'reader')).toEqual(['a']);
  });

  it('leveldb native -> leveldb native at parallelism 1, and -> memory native at 4', async () => {
    const a = join(root, 'out', 'b');
    const r = await cli(['convert', levelNative, a, '--to', 'leveldb', '--format', 'native', '--parallelism', '1']);
    expect(r.code).toBe(0);
    const md = JSON.parse((await cli(['inspect', a, '--json'])).stdout);
    expect(md.operators[0].subtasks[0].keyed[0].type).toBe('leveldb-incremental');
    expect(await readJob(level(), a, { parallelism: 1 })).toEqual(expectedLevel);

    const b = join(root, 'out', 'c');
    expect((await cli(['convert', a, b, '--to', 'memory', '--format', 'native', '--parallelism', '4'])).code).toBe(0);
    const md2 = JSON.parse((await cli(['inspect', b, '--json'])).stdout);
    expect(md2.operators[0].subtasks.map((s: { keyed: { layout: string }[] }) => s.keyed[0].layout)).toEqual([
      'heap-v1',
      'heap-v1',
      'heap-v1',
      'heap-v1',
    ]);
    expect(await readJob(heap(), b, { parallelism: 4 })).toEqual(expectedLevel);
    expect((await cli(['verify', b])).code).toBe(0);
  });

  it('converts a checkpoint (not only savepoints) of a job directory', async () => {
    const jobDir = await writeCheckpoints(level(), {
      root: join(root, 'ck'),
      jobId: 'job-c',
      count: 2,
      numRetained: 1,
    });
    const dst = join(root, 'out', 'from-checkpoint');
    const r = await cli(['convert', join(jobDir, 'chk-2'), dst, '--to', 'memory', '--parallelism', '3']);
    expect(r.code).toBe(0);
    const md = JSON.parse((await cli(['inspect', dst, '--json'])).stdout);
    expect(md.kind).toBe('savepoint');
    expect(md.properties.convertedFrom).toBe('checkpoint 2 (native, leveldb)');
    expect((await cli(['verify', dst])).code).toBe(0);
    const dump = (await cli(['dump', dst, '--operator', 'op-1', '--state', 'count'])).stdout.trim().split('\n');
    expect(dump).toHaveLength(30);
    // the second checkpoint saw count = i + 1
    expect(dump.map((l) => JSON.parse(l) as { key: string; value: number }).find((x) => x.key === 'key-5')?.value).toBe(
      6,
    );
  });

  it('the result is relocatable: move the directory, restore from the new path', async () => {
    const a = join(root, 'out', 'to-move');
    expect((await cli(['convert', heapNative, a, '--to', 'filesystem'])).code).toBe(0);
    const moved = join(root, 'elsewhere', 'deeper', 'moved');
    await cp(a, moved, { recursive: true });
    await rm(a, { recursive: true });
    expect((await cli(['verify', moved])).code).toBe(0);
    expect(await readJob(heap(), moved, { parallelism: 2 })).toEqual(expected);
  });

  it('--parallelism above maxParallelism: exit 2, one line, nothing written', async () => {
    const before = await entries(join(root, 'out'));
    const r = await cli([
      'convert',
      heapNative,
      join(root, 'out', 'too-wide'),
      '--to',
      'leveldb',
      '--parallelism',
      '17',
    ]);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toMatch(
      /PARALLELISM_INVALID: --parallelism 17 is above operator op-1's maxParallelism 16/,
    );
    expect(await entries(join(root, 'out'))).toEqual(before);
  });

  it('--max-parallelism-check checks without writing', async () => {
    const dst = join(root, 'out', 'check-only');
    const ok = await cli([
      'convert',
      heapNative,
      dst,
      '--to',
      'leveldb',
      '--parallelism',
      '16',
      '--max-parallelism-check',
    ]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('operator op-1: parallelism 2 -> 16, maxParallelism 16: ok');
    expect(await exists(dst)).toBe(false);
    const bad = await cli([
      'convert',
      heapNative,
      dst,
      '--to',
      'leveldb',
      '--parallelism',
      '32',
      '--max-parallelism-check',
    ]);
    expect(bad.code).toBe(2);
  });

  it('a corrupt source: exit 4 and no partial output next to the destination', async () => {
    const src = join(root, 'corrupt-src');
    await cp(heapNative, src, { recursive: true });
    for (const name of await readdir(src)) {
      if (name === '_metadata') continue;
      const fh = await open(join(src, name), 'r+');
      await fh.write(Buffer.from([0xee]), 0, 1, 30);
      await fh.close();
    }
    const before = await entries(join(root, 'out'));
    const r = await cli(['convert', src, join(root, 'out', 'from-corrupt'), '--to', 'leveldb', '--format', 'native'], {
      progressDelayMs: 0,
    });
    expect(r.code).toBe(4);
    expect(errorLine(r.stderr)).toMatch(/CHECKSUM_MISMATCH/);
    expect(await entries(join(root, 'out'))).toEqual(before);
  });

  it('an existing destination: exit 2, left untouched', async () => {
    const r = await cli(['convert', heapNative, join(root, 'out', 'a'), '--to', 'leveldb']);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toContain('already exists');
  });

  it('usage errors: missing --to, unknown backend, bad --parallelism', async () => {
    expect((await cli(['convert', heapNative, join(root, 'x')])).code).toBe(2);
    const unknown = await cli(['convert', heapNative, join(root, 'x'), '--to', 'rocksdb']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('Allowed choices are memory, filesystem, leveldb');
    expect((await cli(['convert', heapNative, join(root, 'x'), '--to', 'memory', '--parallelism', '0'])).code).toBe(2);
  });

  it('progress: nothing on a non-terminal stderr unless --progress (then plain lines), a redrawn bar on a terminal', async () => {
    const quiet = await cli(['convert', heapNative, join(root, 'out', 'p0'), '--to', 'memory']);
    expect(quiet.stderr).toBe(''); // quick work shows no progress
    const unasked = await cli(['convert', heapNative, join(root, 'out', 'p3'), '--to', 'memory'], {
      progressDelayMs: 0,
    });
    expect(unasked.code).toBe(0);
    expect(unasked.stderr).toBe('');
    const plain = await cli(['--progress', 'convert', heapNative, join(root, 'out', 'p1'), '--to', 'memory'], {
      progressDelayMs: 0,
    });
    expect(plain.code).toBe(0);
    expect(plain.stderr).toMatch(/^rewriting op-1: \d+%$/m);
    expect(plain.stderr).not.toContain('\r');
    const tty = await cli(['convert', heapNative, join(root, 'out', 'p2'), '--to', 'memory'], {
      tty: true,
      progressDelayMs: 0,
    });
    expect(tty.code).toBe(0);
    expect(tty.stderr).toContain('\r');
    expect(tty.stderr).toMatch(/\[#+-*\]\s+\d+% rewriting op-1/);
  });

  it('--help on the program and on every command', async () => {
    const top = await cli(['--help']);
    expect(top.code).toBe(0);
    for (const c of ['inspect', 'verify', 'convert', 'dump', 'list', 'gc']) expect(top.stdout).toContain(c);
    for (const c of ['inspect', 'verify', 'convert', 'dump', 'list', 'gc']) {
      const r = await cli([c, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`Usage: streamstate ${c}`);
      expect(r.stdout).toContain('Exit codes:');
    }
    expect((await cli(['frobnicate'])).code).toBe(2);
  });
});
