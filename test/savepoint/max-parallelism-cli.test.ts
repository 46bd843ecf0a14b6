import { mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { leveldb } from '../../backends/leveldb/index.js';
import { assignKeyedState } from '../../src/checkpoint/assignment.js';
import { isStreamStateError } from '../../src/errors.js';
import { locateSnapshot } from '../../src/savepoint/locate.js';
import { cli, oneLine, tempDir } from '../cli/support.js';
import {
  BackendHarness,
  convert,
  convertOptions,
  misplacedEntries,
  normalizeModel,
  readContents,
  SOURCE_BACKENDS,
  writeSource,
  type KeyModel,
} from './max-parallelism-support.js';

/**
 * `streamstate convert --max-parallelism` from the command line: with --parallelism, --to and
 * --format; a restore at the old max parallelism is refused and says how to convert; bad input
 * is a typed error with nothing written; a failure midway leaves no scratch behind.
 */

const MODEL: KeyModel[] = Array.from({ length: 200 }, (_, i) => ({
  key: `user-${i}`,
  count: i,
  events: i % 3 === 0 ? [`e${i}`, `f${i}`] : [],
  attrs: i % 2 === 0 ? [[`a${i}`, i % 100] as const] : [],
  session: i % 4 === 0 ? `s${i}` : null,
  timers: i % 5 === 0 ? [[i, 'w1'] as const] : [],
}));

let root: string;
let cleanup: () => Promise<void>;
let src: string;
let split: readonly string[];
let h: BackendHarness;

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-maxp-cli-'));
  h = await BackendHarness.create(async () => SOURCE_BACKENDS.memory(root));
  const written = await writeSource(h, root, MODEL, { parallelism: 2, type: 'savepoint', format: 'canonical' });
  src = written.path;
  split = written.split;
}, 60_000);
afterAll(async () => {
  await h.dispose();
  await cleanup();
});

const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

describe('streamstate convert --max-parallelism', () => {
  it('re-hashes into a canonical savepoint at the new max parallelism and parallelism', async () => {
    const dst = join(root, 'sp-256');
    const r = await cli(['convert', src, dst, '--to', 'memory', '--max-parallelism', '256', '--parallelism', '3']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('op-1@3/256');
    const got = await readContents(dst);
    expect(got.keys).toEqual(normalizeModel(MODEL));
    expect(got.split).toEqual(split);
    expect(await misplacedEntries(dst)).toBe(0);
    const v = await cli(['verify', dst]);
    expect(v.code).toBe(0);
    const inspect = JSON.parse((await cli(['inspect', dst, '--json'])).stdout) as {
      operators: Array<{ maxParallelism: number; parallelism: number }>;
    };
    expect(inspect.operators.map((o) => [o.parallelism, o.maxParallelism])).toEqual([[3, 256]]);
  });

  it('writes a native LevelDB savepoint at the new max parallelism, which LevelDB restores', async () => {
    const dst = join(root, 'sp-native-64');
    const r = await cli(['convert', src, dst, '--to', 'leveldb', '--format', 'native', '--max-parallelism', '64']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const got = await readContents(dst, leveldb({ workingDir: join(root, 'ldb-read') }));
    expect(got.keys).toEqual(normalizeModel(MODEL));
    expect(got.sessionsAfterTtl).toBe(0);
  });

  it('--max-parallelism-check reports the change and writes nothing', async () => {
    const dst = join(root, 'never');
    const r = await cli([
      'convert',
      src,
      dst,
      '--to',
      'memory',
      '--max-parallelism',
      '1024',
      '--max-parallelism-check',
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('maxParallelism 128 -> 1024 (keys re-hashed): ok');
    expect(await exists(dst)).toBe(false);
  });

  it('a restore at the old max parallelism fails loudly and names the fix', async () => {
    const dst = join(root, 'sp-512');
    expect((await cli(['convert', src, dst, '--to', 'memory', '--max-parallelism', '512'])).code).toBe(0);
    const located = await locateSnapshot(dst);
    try {
      const op = located.snapshot.metadata.operators[0];
      let err: unknown;
      try {
        assignKeyedState(op, 2, 128);
      } catch (e) {
        err = e;
      }
      expect(isStreamStateError(err, 'MAX_PARALLELISM_MISMATCH')).toBe(true);
      expect((err as Error).message).toContain('streamstate convert');
      expect((err as Error).message).toContain('--max-parallelism 128');
    } finally {
      await located.close();
    }
  });
});

describe('bad input: typed errors, nothing written', () => {
  const cases: Array<[string, string[], string]> = [
    ['max parallelism 0', ['--max-parallelism', '0'], 'PARALLELISM_INVALID'],
    ['max parallelism above 32768', ['--max-parallelism', '32769'], 'PARALLELISM_INVALID'],
    ['max parallelism below the parallelism', ['--max-parallelism', '2', '--parallelism', '3'], 'PARALLELISM_INVALID'],
    ["max parallelism below the snapshot's parallelism", ['--max-parallelism', '1'], 'PARALLELISM_INVALID'],
  ];
  it.each(cases)('%s', async (_name, flags, code) => {
    const parent = join(root, `bad-${flags.join('')}`);
    await mkdir(parent, { recursive: true });
    const r = await cli(['convert', src, join(parent, 'sp'), '--to', 'memory', ...flags]);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toContain(`error ${code}:`);
    expect(oneLine(r.stderr)).toContain('--max-parallelism');
    expect(await readdir(parent)).toEqual([]);
  });

  it('a non-integer is a usage error', async () => {
    const r = await cli(['convert', src, join(root, 'x'), '--to', 'memory', '--max-parallelism', 'many']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('expected an integer');
  });

  it('an existing destination: ALREADY_EXISTS and it is left as it was', async () => {
    const dst = join(root, 'sp-256');
    const before = await readdir(dst);
    const r = await cli(['convert', src, dst, '--to', 'memory', '--max-parallelism', '300']);
    expect(r.code).toBe(2);
    expect(oneLine(r.stderr)).toContain('ALREADY_EXISTS');
    expect(await readdir(dst)).toEqual(before);
  });

  it('a failure while re-hashing removes the spill files with the scratch directory', async () => {
    const parent = join(root, 'fail-midway');
    await mkdir(parent, { recursive: true });
    const temps = new Set<string>();
    const seen: string[] = [];
    // Fails at the first write-phase event: the spill files sit in the registered scratch directory then.
    const failing = convertOptions(root, {
      maxParallelism: 1000,
      temporaryPaths: { add: (p) => void temps.add(p), delete: (p) => void temps.delete(p) },
      progress: (e) => {
        if (e.phase.startsWith('writing')) {
          seen.push(...temps);
          throw new Error('interrupted');
        }
      },
    });
    await expect(convert(src, join(parent, 'sp'), failing)).rejects.toThrow('interrupted');
    expect(seen.some((p) => p.includes('.sp.streamstate-scratch-'))).toBe(true);
    expect(temps.size).toBe(0);
    expect(await readdir(parent)).toEqual([]);
  });
});
