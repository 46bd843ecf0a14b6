import { ListObjectsV2Command } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileStreamHandle } from '../../src/backend/handles.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { sampleMetadata } from '../storage/sample-metadata.js';
import { startS3rver, uniquePrefix, type S3rverFixture } from '../support/s3/s3rver-fixture.js';

let s3: S3rverFixture;
beforeAll(async () => {
  s3 = await startS3rver();
});
afterAll(async () => {
  await s3?.stop();
});

async function physicalKeys(base: string): Promise<string[]> {
  const raw = await s3.makeStore(uniquePrefix('raw')).client.send(new ListObjectsV2Command({ Bucket: s3.bucket }));
  return (raw.Contents ?? []).map((o) => o.Key ?? '').filter((k) => k.includes(base));
}

describe('entropy injection through checkpoint storage', () => {
  it('spreads checkpoint data files over random prefixes, keeps _metadata predictable, and reads them back', async () => {
    const base = uniquePrefix('entck');
    const store = s3.makeStore(`_entropy_/${base}`, { entropy: { marker: '_entropy_', length: 4 } });
    const storage = new BlobCheckpointStorage(store, { inlineThreshold: 0 });
    const streams = storage.checkpointStreams('job1', 1);
    const payload = Buffer.alloc(5000, 3);
    const handles: FileStreamHandle[] = [];
    for (const scope of ['exclusive', 'shared'] as const) {
      const out = streams.createOutputStream(scope);
      await out.write(payload);
      const h = await out.closeAndGetHandle();
      expect(h?.type).toBe('file');
      handles.push(h as FileStreamHandle);
    }
    expect(handles[0].path).toMatch(/^~[a-z0-9]{4}~[0-9a-f]+$/);
    expect(handles[1].path).toMatch(/^\.\.\/shared\/~[a-z0-9]{4}~[0-9a-f]+$/);
    await storage.writeMetadata(
      storage.checkpointPointer('job1', 1),
      sampleMetadata({ jobId: 'job1', checkpointId: 1 }),
    );

    const keys = await physicalKeys(base);
    expect(keys).toContain(`${base}/job1/chk-1/_metadata`);
    const dataKeys = keys.filter((k) => !k.endsWith('_metadata'));
    expect(dataKeys).toHaveLength(2);
    for (const k of dataKeys) expect(k).toMatch(new RegExp(`^[a-z0-9]{4}/${base}/job1/`));

    const resolved = await storage.resolve('job1/chk-1');
    for (const h of handles) expect(await resolved.files.read(h)).toEqual(payload);
  });

  it('leaves savepoints without entropy, so they stay relocatable', async () => {
    const base = uniquePrefix('entsp');
    const store = s3.makeStore(`_entropy_/${base}`, { entropy: { marker: '_entropy_', length: 4 } });
    const storage = new BlobCheckpointStorage(store, { inlineThreshold: 0 });
    const { streams } = storage.createSavepointLocation('job1');
    const out = streams.createOutputStream('exclusive');
    await out.write(Buffer.alloc(100, 1));
    const h = (await out.closeAndGetHandle()) as FileStreamHandle;
    expect(h.path).toMatch(/^[0-9a-f]+$/);
    const keys = await physicalKeys(base);
    expect(keys).toHaveLength(1);
    expect(keys[0].startsWith(`${base}/savepoint-job1-`)).toBe(true);
  });
});
