import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import type { KeyedBackendParams, StateBackend } from '../../src/backend/contract.js';
import { changelog, withChangelogRestore } from '../../src/changelog/backend.js';
import { backendByName, keySerializerOf } from '../../src/cli/backends.js';
import { convertSnapshot } from '../../src/savepoint/convert.js';
import { locateSnapshot } from '../../src/savepoint/locate.js';
import { readJob, writeCheckpoints, type JobContents } from '../savepoint/support/job.js';
import { cli, entries, tempDir } from './support.js';

/**
 * verify, inspect, dump and convert on real changelog checkpoints (materialization + log), as the
 * library restores them: the wrapped backend restores the materialization and the log is replayed.
 */

let root: string;
let cleanup: () => Promise<void>;

const heap = (): HeapStateBackend => new HeapStateBackend({ name: 'memory' });
const level = (): StateBackend => leveldb({ workingDir: join(root, 'work') });

interface Variant {
  readonly name: string;
  readonly inner: () => StateBackend;
  chk: string;
  expected: JobContents;
}

const variants: Variant[] = [
  {
    name: 'changelog(filesystem)',
    inner: () => new HeapStateBackend({ name: 'filesystem' }),
    chk: '',
    expected: undefined as never,
  },
  { name: 'changelog(leveldb)', inner: level, chk: '', expected: undefined as never },
];

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-cli-cl-'));
  await mkdir(join(root, 'out'));
  for (const [i, v] of variants.entries()) {
    // The first checkpoint materializes (and references its materialization); the later ones
    // reference it plus the log written since: the last checkpoint holds both.
    const cl = changelog({ backend: v.inner(), materializationIntervalMs: Number.POSITIVE_INFINITY });
    const backend: StateBackend = {
      ...cl,
      async createKeyedStateBackend<K>(params: KeyedBackendParams<K>) {
        const keyed = await cl.createKeyedStateBackend(params);
        keyed.requestMaterialization();
        return keyed;
      },
    };
    const jobDir = await writeCheckpoints(backend, {
      root: join(root, `ck-${i}`),
      jobId: 'job-c',
      count: 4,
      numRetained: 1,
    });
    v.chk = join(jobDir, 'chk-4');
    v.expected = await readJob(withChangelogRestore(v.inner()), v.chk, { parallelism: 2 });
    expect(v.expected.keyed.length).toBeGreaterThan(100);
  }
}, 60_000);

afterAll(async () => cleanup());

describe.each(variants)('CLI on a $name checkpoint', (v) => {
  it('the checkpoint holds changelog handles with a materialization and a log', async () => {
    const r = await cli(['inspect', v.chk, '--json']);
    expect(r.code).toBe(0);
    const md = JSON.parse(r.stdout);
    expect(md.backend).toBe(v.name);
    const types = md.operators[0].subtasks.map((s: { keyed: { type: string }[] }) => s.keyed[0].type);
    expect(types).toEqual(['changelog', 'changelog']);
    const located = await locateSnapshot(v.chk);
    const handles = located.snapshot.metadata.operators[0].subtasks.map(
      (s) => s.keyed[0] as unknown as { materialized: unknown[]; logs: unknown[] },
    );
    expect(handles.some((h) => h.materialized.length > 0 && h.logs.length > 0)).toBe(true);
  });

  it('verify decodes every record and exits 0', async () => {
    const r = await cli(['verify', v.chk, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const result = JSON.parse(r.stdout);
    expect(result.ok).toBe(true);
    expect(result.records).toBeGreaterThan(100);
  });

  it('dump prints the replayed values (the last checkpoint saw count = i + 3)', async () => {
    const r = await cli(['dump', v.chk, '--operator', 'op-1', '--state', 'count']);
    expect(r.code).toBe(0);
    const lines = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { key: string; value: number });
    expect(lines).toHaveLength(30);
    for (const l of lines) expect(l.value).toBe(Number(l.key.slice('key-'.length)) + 3);
    const total = (await cli(['dump', v.chk, '--operator', 'op-1', '--state', 'total'])).stdout.trim().split('\n');
    expect(total).toHaveLength(30);
  });

  it('convert to canonical at another parallelism restores the same contents on a plain backend', async () => {
    const dst = join(root, 'out', `${v.name}-canonical`);
    const r = await cli(['convert', v.chk, dst, '--to', 'memory', '--parallelism', '3']);
    expect(r.stderr).not.toContain('error');
    expect(r.code).toBe(0);
    expect(await readJob(heap(), dst, { parallelism: 3 })).toEqual(v.expected);
    expect((await cli(['verify', dst])).code).toBe(0);
  });

  it('convert to native leveldb restores the same contents', async () => {
    const dst = join(root, 'out', `${v.name}-native`);
    const r = await cli(['convert', v.chk, dst, '--to', 'leveldb', '--format', 'native', '--parallelism', '1']);
    expect(r.code).toBe(0);
    expect(await readJob(level(), dst, { parallelism: 1 })).toEqual(v.expected);
  });

  it('convertSnapshot (library) turns it into a canonical savepoint', async () => {
    const dst = join(root, 'out', `${v.name}-lib`);
    const located = await locateSnapshot(v.chk);
    const result = await convertSnapshot(located, dst, {
      target: 'filesystem',
      format: 'canonical',
      backendFor: backendByName,
      keySerializerOf,
    });
    expect(result.metadata.operators[0].subtasks.every((s) => s.keyed.every((h) => h.type === 'key-groups'))).toBe(
      true,
    );
    expect(await readJob(heap(), dst, { parallelism: 2 })).toEqual(v.expected);
  });
});

it('nothing is left next to the converted savepoints', async () => {
  expect((await entries(join(root, 'out'))).filter((n) => n.startsWith('.'))).toEqual([]);
});
