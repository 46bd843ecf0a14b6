import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import { backendByName } from '../../src/cli/backends.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { decodeMetadata } from '../../src/checkpoint/metadata-codec.js';
import { openSnapshot } from '../../src/processor/reader.js';
import { convertSnapshot } from '../../src/savepoint/convert.js';
import { locateSnapshot } from '../../src/savepoint/locate.js';
import { checkCounts, countingInput, countingJob, runPipeline } from '../../src/testing/index.js';

/**
 * A savepoint has no place for in-flight records: converting an unaligned checkpoint would silently
 * lose them, so it is refused with CHANNEL_STATE_UNPLACEABLE and nothing is written. Read-only views
 * (the processor reader) still open it: they read state, and their temporary copy is never restored.
 */
let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'ss-unaligned-convert-'));
});
afterAll(async () => rm(root, { recursive: true, force: true }));

it('converting an unaligned checkpoint is refused, nothing written; the reader still opens it', async () => {
  const dir = join(root, 'chk');
  const input = countingInput({ records: 1500, keys: 30, partitions: 3, seed: 8 });
  const r = await runPipeline(countingJob(input, { parallelism: 2, jobId: 'job' }), {
    backend: memory(),
    checkpointStorage: localCheckpointStorage(dir),
    checkpointEvery: 100,
    channelCapacity: 16,
    seed: 9,
    numRetainedCheckpoints: 100,
    checkpointingMode: { unaligned: true },
  });
  expect(checkCounts(r.committed, input).ok).toBe(true);
  let unaligned: string | undefined;
  for (const c of r.checkpointsCompleted) {
    const md = decodeMetadata(await readFile(join(dir, c.pointer, '_metadata')));
    if (md.operators.some((o) => o.subtasks.some((s) => s.channel))) unaligned = join(dir, c.pointer);
  }
  expect(unaligned).toBeDefined();

  const located = await locateSnapshot(unaligned!);
  const dst = join(root, 'converted');
  try {
    for (const format of ['canonical', 'native'] as const) {
      await expect(
        convertSnapshot(located, dst, { target: 'memory', format, backendFor: backendByName }),
      ).rejects.toMatchObject({
        code: 'CHANNEL_STATE_UNPLACEABLE',
        message: expect.stringContaining('in-flight records'),
      });
      await expect(stat(dst)).rejects.toMatchObject({ code: 'ENOENT' });
    }
  } finally {
    await located.close();
  }
  expect((await readdir(root)).sort()).toEqual(['chk']);

  const reader = await openSnapshot(unaligned!);
  try {
    expect(reader.operatorIds.length).toBeGreaterThan(0);
  } finally {
    await reader.close();
  }
});
