import { chmod, mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isStreamStateError } from '../../src/errors.js';
import { LocalBlobStore, fsErrorToStorageError } from '../../src/storage/local-blob-store.js';

describe('LocalBlobStore specifics', () => {
  let dir: string;
  let store: LocalBlobStore;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ss-local-'));
    store = new LocalBlobStore(dir);
  });
  afterEach(async () => {
    await chmod(dir, 0o755).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  });

  it('maps names to files under the root and uses the absolute root as location', async () => {
    await store.put('job/chk-1/file', Buffer.from('x'));
    expect((await stat(join(dir, 'job', 'chk-1', 'file'))).size).toBe(1);
    expect(store.location).toBe(dir);
  });

  it('list skips putAtomic temp files left by a crash', async () => {
    await store.put('job/chk-1/data', Buffer.from('d'));
    await writeFile(join(dir, 'job', 'chk-1', '._metadata.tmp-0123abcd'), 'half-written');
    expect((await store.list('job/')).map((b) => b.name)).toEqual(['job/chk-1/data']);
  });

  it('delete also clears stale temp files of a crashed putAtomic so the directory goes; fresh ones stay', async () => {
    await store.put('job/chk-1/data', Buffer.from('d'));
    const stale = join(dir, 'job', 'chk-1', '._metadata.tmp-0123abcd');
    await writeFile(stale, 'half-written');
    const old = new Date(Date.now() - 120_000);
    await utimes(stale, old, old);
    await store.delete(['job/chk-1/data']);
    expect(await readdir(dir)).toEqual([]);

    await store.put('job/chk-2/data', Buffer.from('d'));
    await writeFile(join(dir, 'job', 'chk-2', '._metadata.tmp-fresh00'), 'in progress');
    await store.delete(['job/chk-2/data']);
    expect(await readdir(join(dir, 'job', 'chk-2'))).toEqual(['._metadata.tmp-fresh00']);
  });

  it('putAtomic leaves no temp file behind, also when exclusive fails', async () => {
    await store.putAtomic('m/_metadata', Buffer.from('a'), { exclusive: true });
    await expect(store.putAtomic('m/_metadata', Buffer.from('b'), { exclusive: true })).rejects.toMatchObject({
      code: 'ALREADY_EXISTS',
    });
    expect(await readdir(join(dir, 'm'))).toEqual(['_metadata']);
  });

  it('delete removes directories left empty, but never the root or non-empty ones', async () => {
    await store.put('job/chk-1/a', Buffer.from('a'));
    await store.put('job/chk-1/deep/b', Buffer.from('b'));
    await store.put('job/shared/s', Buffer.from('s'));
    await store.delete(['job/chk-1/a', 'job/chk-1/deep/b']);
    expect(await readdir(join(dir, 'job'))).toEqual(['shared']);
    await store.delete(['job/shared/s']);
    expect(await readdir(dir)).toEqual([]);
    expect((await stat(dir)).isDirectory()).toBe(true);
  });

  it('NOT_FOUND names the missing path', async () => {
    const err = await store.get('x/y').catch((e: unknown) => e);
    expect(isStreamStateError(err, 'NOT_FOUND')).toBe(true);
    expect((err as Error).message).toContain(join(dir, 'x', 'y'));
  });

  it('a file where a directory is expected is NOT_FOUND for reads, null for stat', async () => {
    await store.put('f', Buffer.from('x'));
    await expect(store.get('f/child')).rejects.toMatchObject({ code: 'NOT_FOUND' });
    expect(await store.stat('f/child')).toBeNull();
  });

  it.skipIf(process.getuid?.() === 0)('permission errors are STORAGE_IO with "permission denied"', async () => {
    await mkdir(join(dir, 'ro'));
    await chmod(join(dir, 'ro'), 0o500);
    const err = await store.put('ro/x', Buffer.from('x')).catch((e: unknown) => e);
    expect(isStreamStateError(err, 'STORAGE_IO')).toBe(true);
    expect((err as Error).message).toMatch(/permission denied/);
    await chmod(join(dir, 'ro'), 0o755);
  });

  it('a write error other than ENOENT is STORAGE_IO with the errno code', async () => {
    await store.put('dir/x', Buffer.from('x'));
    // "dir" exists as a directory: writing an object named "dir" fails with EISDIR.
    const err = await store.put('dir', Buffer.from('y')).catch((e: unknown) => e);
    expect(isStreamStateError(err, 'STORAGE_IO')).toBe(true);
    expect((err as Error).message).toContain('EISDIR');
  });

  it('fs errors map to StorageError codes with actionable messages', () => {
    const errno = (code: string) => Object.assign(new Error(`${code}: boom`), { code });
    const check = (code: string, expected: string, text: RegExp, missingIsNotFound = true) => {
      const mapped = fsErrorToStorageError(errno(code), 'write', '/data/x', missingIsNotFound);
      expect(isStreamStateError(mapped, expected as 'NOT_FOUND')).toBe(true);
      expect((mapped as Error).message).toMatch(text);
      expect((mapped as Error).message).toContain('/data/x');
    };
    check('ENOENT', 'NOT_FOUND', /does not exist/);
    check('ENOENT', 'STORAGE_IO', /ENOENT/, false);
    check('ENOSPC', 'STORAGE_IO', /disk full/);
    check('EACCES', 'STORAGE_IO', /permission denied/);
    check('EIO', 'STORAGE_IO', /EIO/);
  });
});
