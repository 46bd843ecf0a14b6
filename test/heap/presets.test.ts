import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import type { HeapSnapshotOptions, SnapshotSlicing } from '../../backends/heap/index.js';
import { memory } from '../../backends/memory/index.js';
import { KeyGroupRange } from '../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { valueState } from '../../src/state/descriptors.js';
import { rejection } from './support.js';

const keyed = {
  jobId: 'job',
  operatorId: 'op',
  subtaskIndex: 0,
  parallelism: 1,
  maxParallelism: 8,
  keyGroupRange: new KeyGroupRange(0, 7),
  keySerializer: stringSerializer,
};

describe('presets', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  it('memory(): heap state, in-process storage, snapshots above maxSnapshotBytes fail with SNAPSHOT_TOO_LARGE', async () => {
    const backend = memory({ maxSnapshotBytes: 4096 });
    expect(backend.name).toBe('memory');
    expect(backend.supportsSavepointFormat('native')).toBe(true);
    const b = await backend.createKeyedStateBackend(keyed);
    const v = b.getState(valueState<string>('v'));
    for (let i = 0; i < 200; i++) {
      b.setCurrentKey(`k${i}`);
      v.update('x'.repeat(100));
    }
    const storage = backend.checkpointStorage!;
    const task = await b.snapshot(1, { type: 'checkpoint', streams: storage.checkpointStreams('job', 1) });
    expect((await rejection(task.done)).code).toBe('SNAPSHOT_TOO_LARGE');
    expect(() => memory({ maxSnapshotBytes: 0 })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    const op = await backend.createOperatorStateBackend({
      jobId: 'job',
      operatorId: 'op',
      subtaskIndex: 0,
      parallelism: 1,
    });
    expect(op.stateNames()).toEqual([]);
  });

  it('filesystem(): snapshot files land in the checkpoint directory and restore from there', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'streamstate-heap-'));
    dirs.push(dir);
    const backend = filesystem({ checkpointDir: dir, inlineThreshold: 0 });
    expect(backend.name).toBe('filesystem');
    const b = await backend.createKeyedStateBackend(keyed);
    b.setCurrentKey('a');
    b.getState(valueState<string>('v')).update('persisted');
    const storage = backend.checkpointStorage!;
    const task = await b.snapshot(3, { type: 'checkpoint', streams: storage.checkpointStreams('job', 3) });
    const h = (await task.done)!;
    expect(await readdir(join(dir, 'job', 'chk-3'))).toHaveLength(1);
    await b.close();
    const { BlobStateFileReader } = await import('../../src/checkpoint/streams.js');
    const r = await backend.createKeyedStateBackend({
      ...keyed,
      restore: { handles: [h], files: new BlobStateFileReader(storage.store, 'job/chk-3') },
    });
    r.setCurrentKey('a');
    expect(r.getState(valueState<string>('v')).value()).toBe('persisted');
    expect(() => filesystem({ checkpointDir: '' })).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });

  it.each([
    ['memory', (o: HeapSnapshotOptions, _dir: string) => memory(o)],
    ['filesystem', (o: HeapSnapshotOptions, dir: string) => filesystem({ checkpointDir: dir, ...o })],
  ] as const)('%s(): takes the heap snapshot options and checks them', async (_name, preset) => {
    // maxSliceMs 0 yields to the event loop after every key group; Infinity never yields inside the
    // snapshot (only its store writes may): counted in event-loop turns, not time.
    const dir = await mkdtemp(join(tmpdir(), 'streamstate-heap-'));
    dirs.push(dir);
    const turnsDuringSnapshot = async (slicing: SnapshotSlicing): Promise<number> => {
      const backend = preset({ snapshotSlicing: slicing }, dir);
      const b = await backend.createKeyedStateBackend({
        ...keyed,
        maxParallelism: 128,
        keyGroupRange: new KeyGroupRange(0, 127),
      });
      const v = b.getState(valueState<string>('v'));
      for (let i = 0; i < 500; i++) {
        b.setCurrentKey(`k${i}`);
        v.update('x');
      }
      const task = await b.snapshot(1, {
        type: 'checkpoint',
        streams: backend.checkpointStorage!.checkpointStreams(`job-${randomUUID()}`, 1),
      });
      let turns = 0;
      let done = false;
      const tick = (): void => {
        if (done) return;
        turns++;
        setImmediate(tick);
      };
      setImmediate(tick);
      await task.done;
      done = true;
      await b.close();
      return turns;
    };
    const sliced = await turnsDuringSnapshot({ maxSliceMs: 0, cpuShare: 1 });
    const whole = await turnsDuringSnapshot({ maxSliceMs: Number.POSITIVE_INFINITY });
    expect(sliced).toBeGreaterThanOrEqual(100);
    expect(whole).toBeLessThan(20);
    for (const bad of [
      { snapshotSlicing: { cpuShare: 0 } },
      { snapshotChunkBytes: 0 },
      { snapshotChunkBytes: Number.NaN },
      { snapshotChunkBytes: 1.5 },
    ])
      expect(() => preset(bad, dir)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
