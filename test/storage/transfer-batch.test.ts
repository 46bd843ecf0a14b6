import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { StorageError } from '../../src/errors.js';

/**
 * LocalBlobStore.putFile hands its transfers to worker threads, and the main thread sees a reply
 * only when its event loop turns. Transfers asked for in the same turn (a checkpoint's uploads)
 * go together (here one task per worker), not a message and a reply each; a missing directory is created by
 * the worker, not by an awaited mkdir of its own turn. Each transfer still fails on its own, and
 * a failed one leaves no target file.
 */
const seen = vi.hoisted(() => ({ messages: [] as { op?: string; files?: unknown[] }[], mkdirs: 0 }));
vi.mock('node:worker_threads', async (importOriginal) => {
  const wt = await importOriginal<typeof import('node:worker_threads')>();
  class CountingWorker extends wt.Worker {
    override postMessage(
      message: { op?: string; files?: unknown[] },
      transfer?: readonly import('node:worker_threads').Transferable[],
    ): void {
      seen.messages.push(message);
      super.postMessage(message, transfer);
    }
  }
  return { ...wt, Worker: CountingWorker, default: { ...wt, Worker: CountingWorker } };
});
vi.mock('node:fs/promises', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs/promises')>();
  const mkdirCounted = ((...args: Parameters<typeof fs.mkdir>) => {
    seen.mkdirs++;
    return fs.mkdir(...args);
  }) as typeof fs.mkdir;
  return { ...fs, mkdir: mkdirCounted, default: { ...fs, mkdir: mkdirCounted } };
});

const { LocalBlobStore } = await import('../../src/storage/local-blob-store.js');

let scratch: string;
let root: string;
beforeEach(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'streamstate-batch-src-'));
  root = await mkdtemp(join(tmpdir(), 'streamstate-batch-store-'));
  seen.messages.length = 0;
  seen.mkdirs = 0;
});
afterEach(async () => {
  await rm(scratch, { recursive: true, force: true });
  await rm(root, { recursive: true, force: true });
});

const bytesOf = (i: number): Buffer => Buffer.alloc(10_000 + i * 101, i + 1);

describe('LocalBlobStore.putFile: transfers of one turn together', () => {
  it('eight uploads started together: at most one task per worker; the two that fail fail alone, typed, leaving no target', async () => {
    for (let i = 0; i < 8; i++) if (i !== 3 && i !== 5) await writeFile(join(scratch, `f${i}`), bytesOf(i));
    await mkdir(join(scratch, 'f5')); // f5: a directory, f3: missing
    const store = new LocalBlobStore(root);
    seen.mkdirs = 0;
    const settled = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) =>
        store.putFile(`job/shared/f${i}`, join(scratch, `f${i}`), { immutable: i % 2 === 0 }),
      ),
    );
    const transferTasks = seen.messages.filter((m) => m.op !== 'steps');
    expect(transferTasks.length).toBeLessThanOrEqual(2);
    expect(transferTasks.reduce((n, m) => n + (m.files?.length ?? 1), 0)).toBe(8);
    for (const [i, s] of settled.entries()) {
      if (i === 3 || i === 5) {
        expect(s.status).toBe('rejected');
        const err = (s as PromiseRejectedResult).reason;
        expect(err).toBeInstanceOf(StorageError);
        expect(err).toMatchObject({ code: i === 3 ? 'NOT_FOUND' : 'STORAGE_IO' });
      } else {
        expect(s).toEqual({ status: 'fulfilled', value: { size: bytesOf(i).length, crc32: crc32(bytesOf(i)) } });
        expect(Buffer.compare(await readFile(store.pathOf(`job/shared/f${i}`)), bytesOf(i))).toBe(0);
      }
    }
    expect((await readdir(join(root, 'job', 'shared'))).sort()).toEqual(['f0', 'f1', 'f2', 'f4', 'f6', 'f7']);
    // The directories were made by the worker, with the transfers.
    expect(seen.mkdirs).toBe(0);
  });

  it('an upload whose reply started the next one: that one goes in a task of its own turn, and all complete', async () => {
    for (let i = 0; i < 6; i++) await writeFile(join(scratch, `g${i}`), bytesOf(i));
    const store = new LocalBlobStore(root);
    // Two chains of three, as a bounded number of uploads in flight makes them.
    const chain = async (first: number): Promise<void> => {
      for (let i = first; i < first + 3; i++) {
        expect(await store.putFile(`c/g${i}`, join(scratch, `g${i}`))).toEqual({
          size: bytesOf(i).length,
          crc32: crc32(bytesOf(i)),
        });
      }
    };
    await Promise.all([chain(0), chain(3)]);
    expect((await readdir(join(root, 'c'))).length).toBe(6);
    expect(seen.messages.reduce((n, m) => n + (m.files?.length ?? 1), 0)).toBe(6);
  });
});
