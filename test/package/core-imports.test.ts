import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureCrashChild } from '../support/proof/crash-child-build.js';

/**
 * The package's shape as a consumer sees it, on the built dist/ through the package's own
 * "exports" (a child process imports `streamstate`, `streamstate/s3`, ... by name): the core loads
 * neither the AWS SDK nor classic-level; with those packages absent (a loader hook hides them) the
 * core still loads and the features that need them fail with DEPENDENCY_MISSING naming the
 * package to install.
 */

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const REGISTER = join(ROOT, 'test', 'package', 'fixtures', 'register.mjs');
const run = promisify(execFile);

let dir: string;
beforeAll(async () => {
  await ensureCrashChild(); // builds dist/ when the sources are newer
  dir = await mkdtemp(join(tmpdir(), 'ss-pkg-'));
}, 300_000);
afterAll(async () => rm(dir, { recursive: true, force: true }));

interface Probe {
  readonly stdout: string;
  readonly stderr: string;
  /** Every module URL the loader resolved. */
  readonly resolved: string[];
}

let probes = 0;
/** Runs `code` (an ES module body) in a child process inside the package, with the recording hooks. */
async function probe(code: string, hide: readonly string[] = []): Promise<Probe> {
  const record = join(dir, `resolved-${probes++}.txt`);
  const env = { ...process.env, PROBE_RECORD: record, PROBE_HIDE: hide.join(',') };
  const { stdout, stderr } = await run(process.execPath, ['--import', REGISTER, '--input-type=module', '-e', code], {
    cwd: ROOT,
    env,
  });
  const resolved = (await readFile(record, 'utf8').catch(() => '')).split('\n').filter((l) => l !== '');
  return { stdout, stderr, resolved };
}

const CJS_LOADED = `
import { createRequire } from 'node:module';
const cache = Object.keys(createRequire(import.meta.url).cache);
console.log(JSON.stringify(cache.filter((k) => k.includes('@aws-sdk') || k.includes('classic-level'))));
`;

const OPTIONAL = /node_modules\/(@aws-sdk|classic-level)\//;
/** The conformance entry's peer dependencies: nothing but `streamstate/conformance` may load them. */
const TEST_ONLY = /node_modules\/(vitest|fast-check)\//;

describe('importing the core', () => {
  it.each([
    'streamstate',
    'streamstate/memory',
    'streamstate/filesystem',
    'streamstate/leveldb',
    'streamstate/changelog',
  ])('%s loads neither the AWS SDK nor classic-level', async (entry) => {
    const p = await probe(`await import(${JSON.stringify(entry)});\n${CJS_LOADED}`);
    expect(p.resolved.some((u) => u.includes('/dist/'))).toBe(true);
    expect(p.resolved.filter((u) => OPTIONAL.test(u))).toEqual([]);
    expect(p.resolved.filter((u) => TEST_ONLY.test(u))).toEqual([]);
    expect(JSON.parse(p.stdout)).toEqual([]);
  });

  it('streamstate/s3 does load the AWS SDK (the probe sees it)', async () => {
    const p = await probe(`await import('streamstate/s3');\n${CJS_LOADED}`);
    expect(p.resolved.some((u) => u.includes('node_modules/@aws-sdk/client-s3/'))).toBe(true);
    expect(JSON.parse(p.stdout).length).toBeGreaterThan(0);
  });
});

describe('streamstate/conformance', () => {
  it('loads vitest but not fast-check (only the model-based section needs it, when it runs)', async () => {
    const p = await probe(
      `const m = await import('streamstate/conformance'); console.log(JSON.stringify(Object.keys(m).sort()));`,
    );
    expect(JSON.parse(p.stdout)).toEqual(expect.arrayContaining(['describeBackendConformance', 'describeBlobStore']));
    expect(p.resolved.some((u) => u.includes('/dist/src/conformance/'))).toBe(true);
    expect(p.resolved.some((u) => u.includes('node_modules/vitest/'))).toBe(true);
    expect(p.resolved.filter((u) => u.includes('node_modules/fast-check/'))).toEqual([]);
    expect(p.resolved.filter((u) => OPTIONAL.test(u))).toEqual([]);
  });

  it('loads with fast-check absent', async () => {
    const p = await probe(
      `const m = await import('streamstate/conformance'); console.log(typeof m.describeBackendConformance);`,
      ['fast-check'],
    );
    expect(p.stdout.trim()).toBe('function');
  });

  it('a property-based test without fast-check fails with DEPENDENCY_MISSING naming it', async () => {
    // The loader the model section and the parity map-key tests call when they run (internal module).
    const loader = pathToFileURL(join(ROOT, 'dist', 'src', 'conformance', 'backend', 'fast-check.js')).href;
    const p = await probe(
      `const { loadFastCheck } = await import(${JSON.stringify(loader)});
       try { await loadFastCheck(); console.log('no error'); }
       catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })); }`,
      ['fast-check'],
    );
    const err = JSON.parse(p.stdout);
    expect(err.code).toBe('DEPENDENCY_MISSING');
    expect(err.message).toContain('npm install fast-check@');
  });
});

describe('without the optional peer dependencies', () => {
  const HIDE = ['@aws-sdk/client-s3', '@aws-sdk/lib-storage', 'classic-level'];

  it('an s3:// path fails with DEPENDENCY_MISSING naming the SDK packages', async () => {
    const p = await probe(
      `const { locateSnapshot } = await import('streamstate');
       try { await locateSnapshot('s3://bucket/savepoint-1'); console.log('no error'); }
       catch (err) { console.log(JSON.stringify({ name: err.name, code: err.code, message: err.message })); }`,
      HIDE,
    );
    const err = JSON.parse(p.stdout);
    expect(err.code).toBe('DEPENDENCY_MISSING');
    expect(err.name).toBe('StreamStateError');
    expect(err.message).toContain('npm install @aws-sdk/client-s3@');
    expect(err.message).toContain('@aws-sdk/lib-storage@');
  });

  it('the leveldb backend loads, and fails with DEPENDENCY_MISSING naming classic-level when it opens a database', async () => {
    const p = await probe(
      `const { KeyGroupRange, stringSerializer } = await import('streamstate');
       const { leveldb } = await import('streamstate/leveldb');
       const backend = leveldb({ workingDir: ${JSON.stringify(join(dir, 'work'))} });
       try {
         await backend.createKeyedStateBackend({ jobId: 'j', operatorId: 'op', subtaskIndex: 0, parallelism: 1, maxParallelism: 8, keyGroupRange: new KeyGroupRange(0, 7), keySerializer: stringSerializer });
         console.log('no error');
       } catch (err) { console.log(JSON.stringify({ code: err.code, message: err.message })); }`,
      HIDE,
    );
    const err = JSON.parse(p.stdout);
    expect(err.code).toBe('DEPENDENCY_MISSING');
    expect(err.message).toContain('npm install classic-level@');
  });

  it('the CLI reports it on one line with the documented prefix', async () => {
    const main = join(ROOT, 'dist', 'src', 'cli', 'main.js');
    const env = { ...process.env, PROBE_HIDE: HIDE.join(','), PROBE_RECORD: '' };
    const child = await run(process.execPath, ['--import', REGISTER, main, 'inspect', 's3://bucket/savepoint-1'], {
      cwd: dir,
      env,
    }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    );
    expect(child.code).toBe(1);
    expect(child.stderr.trim().split('\n')).toHaveLength(1);
    expect(child.stderr).toMatch(/^streamstate inspect: error DEPENDENCY_MISSING: .*npm install @aws-sdk\/client-s3@/);
  });
});
