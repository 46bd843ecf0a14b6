/**
 * fileSteps (src/storage/file-transfer.ts): the file-system steps of a LevelDB native checkpoint
 * as one worker task. A 'link' step links the first existing alternative of each file (same
 * inode), sizes in order; a file under none of its names is ENOENT. 'copy-numbered' copies the
 * numbered files asked for, 'write' writes, 'read' reads a tail (null for a missing file only when
 * asked to).
 */
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fileSteps, TransferFailure } from '../../src/storage/file-transfer.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ss-link-files-'));
  await mkdir(join(dir, 'db'));
  await mkdir(join(dir, 'chk'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("fileSteps: 'link'", () => {
  it('links the first name that exists, in order, with sizes', async () => {
    await writeFile(join(dir, 'db', '000005.ldb'), Buffer.alloc(5));
    await writeFile(join(dir, 'db', '000007.sst'), Buffer.alloc(7));
    const [files] = await fileSteps([
      {
        op: 'link',
        sourceDir: join(dir, 'db'),
        targetDir: join(dir, 'chk'),
        entries: [
          ['000007.ldb', '000007.sst'],
          ['000005.ldb', '000005.sst'],
        ],
      },
    ]);
    expect(files).toEqual([
      { name: '000007.sst', size: 7 },
      { name: '000005.ldb', size: 5 },
    ]);
    expect((await readdir(join(dir, 'chk'))).sort()).toEqual(['000005.ldb', '000007.sst']);
    const [a, b] = await Promise.all([stat(join(dir, 'db', '000005.ldb')), stat(join(dir, 'chk', '000005.ldb'))]);
    expect(b.ino).toBe(a.ino); // a link, not a copy
  });

  it('a file that exists under none of its names fails with ENOENT on the source side', async () => {
    await writeFile(join(dir, 'db', '000005.ldb'), Buffer.alloc(5));
    const err = await fileSteps([
      {
        op: 'link',
        sourceDir: join(dir, 'db'),
        targetDir: join(dir, 'chk'),
        entries: [['000005.ldb'], ['000009.ldb', '000009.sst']],
      },
    ]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransferFailure);
    expect((err as TransferFailure).code).toBe('ENOENT');
    expect((err as TransferFailure).side).toBe('source');
    expect((err as Error).message).toContain('000009.sst');
  });
});

describe('fileSteps', () => {
  it('resets a directory to empty and reads a file from an offset to its end, in one call', async () => {
    await writeFile(join(dir, 'chk', 'stale'), 'x');
    await writeFile(join(dir, 'db', 'MANIFEST-000002'), Buffer.from('0123456789'));
    const [reset, tail, whole] = await fileSteps([
      { op: 'reset-dir', path: join(dir, 'chk') },
      { op: 'read', path: join(dir, 'db', 'MANIFEST-000002'), from: 4 },
      { op: 'read', path: join(dir, 'db', 'MANIFEST-000002') },
    ]);
    expect(reset).toBeNull();
    expect(await readdir(join(dir, 'chk'))).toEqual([]);
    expect(tail?.size).toBe(10);
    expect(Buffer.from(tail?.bytes ?? []).toString()).toBe('456789');
    expect(Buffer.from(whole?.bytes ?? []).toString()).toBe('0123456789');
  });

  it('copies the numbered files asked for, writes files, and reads a missing file as null when asked to', async () => {
    for (const n of ['000003', '000004', '000008', '000009'])
      await writeFile(join(dir, 'db', `${n}.log`), Buffer.from(`log ${n}`));
    await writeFile(join(dir, 'db', 'LOCK.log2'), 'x');
    await writeFile(join(dir, 'db', 'x000010.log'), 'x');
    const [copied, written, missing] = await fileSteps([
      {
        op: 'copy-numbered',
        sourceDir: join(dir, 'db'),
        targetDir: join(dir, 'chk'),
        suffix: '.log',
        atLeast: 8,
        also: [3],
      },
      { op: 'write', path: join(dir, 'chk', 'CURRENT'), bytes: Buffer.from('MANIFEST-000002\n') },
      { op: 'read', path: join(dir, 'db', 'MANIFEST-000099'), missingOk: true },
    ]);
    expect(copied).toEqual(['000003.log', '000008.log', '000009.log']);
    expect(written).toBeNull();
    expect(missing).toBeNull();
    expect((await readdir(join(dir, 'chk'))).sort()).toEqual(['000003.log', '000008.log', '000009.log', 'CURRENT']);
    expect((await readFile(join(dir, 'chk', '000008.log'))).toString()).toBe('log 000008');
    const [a, b] = await Promise.all([stat(join(dir, 'db', '000008.log')), stat(join(dir, 'chk', '000008.log'))]);
    expect(b.ino).not.toBe(a.ino); // a copy: LevelDB goes on appending to its log
    expect((await readFile(join(dir, 'chk', 'CURRENT'))).toString()).toBe('MANIFEST-000002\n');
  });

  it('a missing file fails the call with ENOENT', async () => {
    const err = await fileSteps([{ op: 'read', path: join(dir, 'db', 'CURRENT') }]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TransferFailure);
    expect((err as TransferFailure).code).toBe('ENOENT');
  });
});
