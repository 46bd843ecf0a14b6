import { readdir, readFile } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import type { BlobStore } from '../../../src/storage/blob-store.js';

/** Every file under `dir`, as posix paths relative to it, sorted. */
export async function localFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)).split(sep).join('/'));
  }
  return out.sort();
}

/** Uploads a local directory tree into `store` under `prefix` ("" = the store root): the same layout, byte for byte. */
export async function uploadTree(dir: string, store: BlobStore, prefix = ''): Promise<number> {
  const files = await localFiles(dir);
  for (const f of files) await store.put(prefix === '' ? f : `${prefix}/${f}`, await readFile(join(dir, f)));
  return files.length;
}

/** Names of the blobs under `prefix`, sorted. */
export async function blobNames(store: BlobStore, prefix: string): Promise<string[]> {
  return (await store.list(prefix)).map((b) => b.name).sort();
}
