import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StateFileReader } from '../../src/backend/contract.js';
import { isKeyGroupsHandle, type FileStreamHandle, type KeyGroupsStateHandle } from '../../src/backend/handles.js';
import { BlobCheckpointStreamFactory } from '../../src/checkpoint/streams.js';
import { locateSnapshot, type LocatedSnapshot } from '../../src/savepoint/locate.js';
import { rehashKeyedState, type RehashOptions, type RehashSource } from '../../src/savepoint/rehash.js';
import { LocalBlobStore } from '../../src/storage/local-blob-store.js';
import {
  BackendHarness,
  convert,
  convertOptions,
  keyModels,
  SOURCE_BACKENDS,
  writeSource,
} from './max-parallelism-support.js';

/**
 * The StateFileReader contract does not promise a fresh buffer per readRange: a reader may hand
 * out one buffer it overwrites on the next read. Re-hashing keeps entries across reads (in memory,
 * until the whole source is partitioned), so it must copy what it keeps. Every route is run with
 * such a reader and must write exactly what it writes with an ordinary one.
 */

/** Returns every range in the same buffer, overwritten by the next read. */
class ReusingReader implements StateFileReader {
  private scratch = Buffer.alloc(1024 * 1024);

  constructor(private readonly inner: StateFileReader) {}

  async readRange(file: FileStreamHandle, offset: number, length: number): Promise<Buffer> {
    const got = await this.inner.readRange(file, offset, length);
    if (this.scratch.length < length) this.scratch = Buffer.alloc(length);
    this.scratch.fill(0xee);
    got.copy(this.scratch);
    return this.scratch.subarray(0, length);
  }

  read(file: FileStreamHandle): Promise<Buffer> {
    return this.inner.read(file);
  }

  download(file: FileStreamHandle, localPath: string): Promise<void> {
    return this.inner.download(file, localPath);
  }

  describe(file: FileStreamHandle): string {
    return this.inner.describe(file);
  }
}

let root: string;
let located: LocatedSnapshot;
let handles: KeyGroupsStateHandle[];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'ss-rehash-reuse-'));
  const h = await BackendHarness.create(async () => SOURCE_BACKENDS.memory(root));
  try {
    // Several samples' keys (first of each key kept): enough keys to fill many key groups.
    const byKey = new Map(
      fc.sample(keyModels, { seed: 17, numRuns: 10 }).flatMap((m) => m.map((k) => [k.key, k] as const)),
    );
    const model = [...byKey.values()];
    const written = await writeSource(h, root, model, { parallelism: 2 });
    // A canonical savepoint: keyed state in files (read by range), not inline.
    await convert(written.path, join(root, 'canonical'), convertOptions(root));
  } finally {
    await h.dispose();
  }
  located = await locateSnapshot(join(root, 'canonical'));
  handles = located.snapshot.metadata.operators
    .flatMap((op) => op.subtasks.flatMap((s) => s.keyed))
    .filter(isKeyGroupsHandle);
}, 60_000);

afterAll(async () => {
  await located?.close();
  await rm(root, { recursive: true, force: true });
});

async function rehash(name: string, files: StateFileReader, opts: Partial<RehashOptions>): Promise<unknown> {
  const sources: RehashSource[] = handles.map((handle) => ({ handle, files }));
  const dir = join(root, name);
  const result = await rehashKeyedState(sources, {
    maxParallelism: 4096,
    parallelism: 2,
    streams: new BlobCheckpointStreamFactory({
      store: new LocalBlobStore(dir),
      baseDir: 'out',
      sharedDir: 'out',
      inlineThreshold: 0,
    }),
    scratchDir: join(dir, 'scratch'),
    what: 'operator test',
    ...opts,
  });
  expect(result.entries).toBeGreaterThan(0);
  // What was written, without the random file names.
  return result.handles.map((h) => h?.blocks);
}

describe('re-hashing with a reader that reuses its buffer', () => {
  it.each([
    ['in memory', { maxParallelism: 4096 }],
    ['through spill files', { maxParallelism: 4096, memoryBytes: 0 }],
    ['merging divisors', { maxParallelism: 32 }],
  ] as const)('%s: writes what it writes with an ordinary reader', async (name, opts) => {
    expect(handles.length).toBeGreaterThan(0);
    expect(handles.every((h) => h.stream.type === 'file')).toBe(true);
    const files = located.snapshot.files;
    const want = await rehash(`${name}-fresh`, files, opts);
    expect(await rehash(`${name}-reused`, new ReusingReader(files), opts)).toEqual(want);
  });
});
