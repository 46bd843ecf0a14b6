import { cp, mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import type { KeyGroupsStateHandle } from '../../src/backend/handles.js';
import { keyGroupForKey, keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { locateSnapshot } from '../../src/savepoint/locate.js';
import type { OperatorKeyGroups } from '../../src/savepoint/key-group-sizes.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { GOLDEN_DATA, GOLDEN_DIR, GOLDEN_PARALLELISM } from '../fixtures/make-golden.js';
import { BackendHarness, SOURCE_BACKENDS, writeSource, type KeyModel } from '../savepoint/max-parallelism-support.js';
import { writeJob } from '../savepoint/support/job.js';
import { cli, oneLine, tempDir } from './support.js';

/**
 * `streamstate inspect --key-groups` (issue 17 item 4): bytes and entries per key group, recorded
 * by the writers in blocks[].entries; golden fixture for that field; sizes add up to the files;
 * subtask shares at a proposed parallelism; native handles through a canonical view; old files
 * (no entries recorded) are counted by reading them.
 *
 * Regenerate the fixture on purpose only: UPDATE_GOLDEN=1 npx vitest run test/cli/key-groups.test.ts
 */

const FIXTURE_DIR = new URL('../fixtures/golden-key-group-sizes/', import.meta.url).pathname;
const FIXTURE = join(FIXTURE_DIR, 'memory-canonical');
const FIXTURE_JSON = join(FIXTURE_DIR, 'expected-key-groups.json');
const update = process.env.UPDATE_GOLDEN === '1';

interface KeyGroupsJson {
  readonly basis: 'snapshot' | 'canonical-view';
  readonly operators: OperatorKeyGroups[];
}

async function keyGroupsJson(path: string, extra: string[] = []): Promise<KeyGroupsJson> {
  const r = await cli(['inspect', path, '--key-groups', '--json', ...extra]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as KeyGroupsJson;
}

/** The golden job, written by today's memory backend (same data and clock as test/fixtures/golden). */
async function writeGoldenJob(root: string): Promise<string> {
  return writeJob(new HeapStateBackend({ name: 'memory' }), {
    root,
    parallelism: GOLDEN_PARALLELISM,
    format: 'canonical',
    data: GOLDEN_DATA,
    jobId: 'golden',
    clock: () => Date.UTC(2026, 0, 1),
  });
}

const MODEL: KeyModel[] = Array.from({ length: 200 }, (_, i) => ({
  key: `user-${i}`,
  count: i,
  events: i % 3 === 0 ? [`e${i}`, `f${i}`] : i === 7 ? Array.from({ length: 500 }, (_, j) => `hot-${j}`) : [],
  attrs: i % 2 === 0 ? [[`a${i}`, i % 100] as const] : [],
  session: i % 4 === 0 ? `s${i}` : null,
  timers: i % 5 === 0 ? [[i, 'w1'] as const] : [],
}));
/** value entries (count, session), list entries, map entries (one per key and namespace), timers. */
const MODEL_ENTRIES = 200 + 50 + (67 + 1) + 100 + 40;

let root: string;
let cleanup: () => Promise<void>;

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-kg-sizes-'));
});
afterAll(async () => cleanup());

describe.runIf(update)('regenerate the key-group-sizes fixture', () => {
  it('writes test/fixtures/golden-key-group-sizes', async () => {
    await rm(FIXTURE_DIR, { recursive: true, force: true });
    await mkdir(FIXTURE_DIR, { recursive: true });
    const sp = await writeGoldenJob(join(root, 'regen'));
    await rename(sp, FIXTURE);
    await writeFile(FIXTURE_JSON, `${JSON.stringify(await keyGroupsJson(FIXTURE), null, 1)}\n`);
  });
});

describe.skipIf(update)('golden fixture: blocks[].entries', () => {
  let copy: string;
  beforeAll(async () => {
    copy = join(root, 'fixture');
    await cp(FIXTURE, copy, { recursive: true });
  });

  it('verifies, records entries for every block, and inspect --key-groups reports them as recorded', async () => {
    expect((await cli(['verify', copy])).code).toBe(0);
    const located = await locateSnapshot(copy);
    const blocks = located.snapshot.metadata.operators[0].subtasks.flatMap((s) =>
      (s.keyed as KeyGroupsStateHandle[]).flatMap((h) => h.blocks),
    );
    await located.close();
    expect(blocks.length).toBeGreaterThan(5);
    expect(blocks.every((b) => Number.isInteger(b.entries) && b.entries! > 0)).toBe(true);
    const got = await keyGroupsJson(copy);
    expect(got).toEqual(JSON.parse(await readFile(FIXTURE_JSON, 'utf8')));
    expect(got.operators[0].entriesFrom).toBe('recorded');
  });

  it("today's writer records the same blocks (offsets, lengths, checksums, entries)", async () => {
    const fresh = await writeGoldenJob(join(root, 'fresh'));
    const blocksOf = async (dir: string) => {
      const l = await locateSnapshot(dir);
      await l.close();
      return l.snapshot.metadata.operators[0].subtasks.map((s) =>
        (s.keyed as KeyGroupsStateHandle[]).map((h) => h.blocks),
      );
    };
    expect(await blocksOf(fresh)).toEqual(await blocksOf(copy));
  });

  it('an older savepoint without entries still reads: entries are counted by reading its blocks', async () => {
    const old = join(root, 'old');
    await cp(join(GOLDEN_DIR, 'memory-canonical'), old, { recursive: true });
    const got = await keyGroupsJson(old);
    expect(got.operators[0].entriesFrom).toBe('scanned');
    const recorded = await keyGroupsJson(copy);
    expect(got.operators[0].keyGroups).toEqual(recorded.operators[0].keyGroups);
  });
});

describe('key-group sizes of a savepoint', () => {
  let sp: string;
  let h: BackendHarness;
  beforeAll(async () => {
    h = await BackendHarness.create(async () => SOURCE_BACKENDS.memory(join(root, 'model')));
    sp = (await writeSource(h, join(root, 'model'), MODEL, { parallelism: 2, type: 'savepoint', format: 'canonical' }))
      .path;
  }, 60_000);
  afterAll(async () => h.dispose());

  it('key-group bytes plus each stream header and footer sum to the file sizes; entries to what was written', async () => {
    const report = (await keyGroupsJson(sp)).operators[0];
    const located = await locateSnapshot(sp);
    await located.close();
    let fileBytes = 0;
    let framing = 0;
    for (const s of located.snapshot.metadata.operators[0].subtasks) {
      for (const k of s.keyed as KeyGroupsStateHandle[]) {
        if (k.stream.type !== 'file') throw new Error('expected a file');
        const file = join(sp, k.stream.path);
        const size = (await stat(file)).size;
        fileBytes += size;
        // Framing read from the file itself: fixed header + JSON header, footer + its length and end magic.
        const fd = await open(file, 'r');
        try {
          const head = Buffer.alloc(12);
          await fd.read(head, 0, 12, 0);
          const tail = Buffer.alloc(8);
          await fd.read(tail, 0, 8, size - 8);
          framing += 12 + head.readUInt32BE(8) + tail.readUInt32BE(0) + 8;
        } finally {
          await fd.close();
        }
      }
    }
    expect(report.bytes + framing).toBe(fileBytes);
    expect(report.streamBytes).toBe(fileBytes);
    expect(report.keyGroups.reduce((n, k) => n + k.bytes, 0)).toBe(report.bytes);
    expect(report.entries).toBe(MODEL_ENTRIES);
    expect(report.keyGroups.reduce((n, k) => n + k.entries, 0)).toBe(MODEL_ENTRIES);
  });

  it('names the hot key group and the skew, and shares at a proposed parallelism follow the range assignment', async () => {
    const report = (await keyGroupsJson(sp, ['--parallelism', '5'])).operators[0];
    const hot = keyGroupForKey('user-7', stringSerializer, 128);
    expect(report.largest[0].keyGroup).toBe(hot);
    expect(report.maxBytes).toBe(report.largest[0].bytes);
    expect(report.skew).toBeCloseTo(report.maxBytes / (report.bytes / 128), 10);
    expect(report.histogram.reduce((n, b) => n + b.keyGroups, 0)).toBe(128);
    expect(report.histogram[0].keyGroups).toBe(128 - report.keyGroupsWithData);
    expect(report.subtasks.map((s) => s.keyGroupRange)).toEqual(
      [0, 1, 2, 3, 4].map((i) => keyGroupRangeForSubtask(128, 5, i).toJSON()),
    );
    expect(report.subtasks.reduce((n, s) => n + s.bytes, 0)).toBe(report.bytes);
    const holder = report.subtasks.find((s) => s.keyGroupRange.start <= hot && hot <= s.keyGroupRange.end)!;
    expect(Math.max(...report.subtasks.map((s) => s.bytes))).toBe(holder.bytes);
  });

  it('prints a histogram, the largest key groups and the skew as text', async () => {
    const r = await cli(['inspect', sp, '--key-groups', '--parallelism', '3'], { tty: true });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('skew');
    expect(r.stdout).toContain('bytes per key group:');
    expect(r.stdout).toMatch(/empty {2}#+/);
    expect(r.stdout).toContain(`key group ${String(keyGroupForKey('user-7', stringSerializer, 128)).padStart(5)}`);
    expect(r.stdout).toContain('at the proposed parallelism 3');
    expect(r.stdout.match(/^ {4}subtask /gm)).toHaveLength(3);
  });

  it('bad input: a proposed parallelism above maxParallelism, or --parallelism without --key-groups', async () => {
    const above = await cli(['inspect', sp, '--key-groups', '--parallelism', '129']);
    expect(above.code).toBe(2);
    expect(oneLine(above.stderr)).toContain('PARALLELISM_INVALID');
    const alone = await cli(['inspect', sp, '--parallelism', '2']);
    expect(alone.code).toBe(2);
    expect(oneLine(alone.stderr)).toContain('--key-groups');
  });

  it('native LevelDB incremental checkpoints: sizes of a canonical view, the same as the savepoint', async () => {
    const ldbRoot = join(root, 'ldb');
    const lh = await BackendHarness.create(async () => SOURCE_BACKENDS.leveldb(ldbRoot));
    try {
      const chk = (await writeSource(lh, ldbRoot, MODEL, { parallelism: 2 })).path;
      const got = await keyGroupsJson(chk);
      expect(got.basis).toBe('canonical-view');
      const want = (await keyGroupsJson(sp)).operators[0];
      expect(got.operators[0].keyGroups).toEqual(want.keyGroups);
    } finally {
      await lh.dispose();
    }
  });
});
