import { cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator } from '../../src/checkpoint/coordinator.js';
import { checkChannelStatePlaceable, placeInFlightRecords } from '../../src/checkpoint/channel-state-restore.js';
import { ChannelStateWriter, readChannelState, type ChannelStateHandle } from '../../src/checkpoint/channel-state.js';
import { decodeMetadata, encodeMetadata, METADATA_VERSION } from '../../src/checkpoint/metadata-codec.js';
import type { CheckpointMetadata } from '../../src/checkpoint/metadata.js';
import { fileKeys } from '../../src/checkpoint/snapshot-files.js';
import { BlobCheckpointStreamFactory, BlobStateFileReader } from '../../src/checkpoint/streams.js';
import { ChannelStateError, FormatError } from '../../src/errors.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { msgpackSerializer, stringSerializer } from '../../src/serializers/builtins.js';
import { LocalBlobStore } from '../../src/storage/local-blob-store.js';

/**
 * The library side of unaligned checkpoints: the channel-state writer and reader, _metadata
 * version 2, placement of in-flight records on a restore at another parallelism, and the typed
 * errors for bad channel state. The golden fixture pins the byte format.
 */

const FIXTURE = new URL('../fixtures/golden-channel-state/', import.meta.url).pathname;
const update = process.env.UPDATE_GOLDEN === '1';
const serializer = msgpackSerializer<{ key: string; n: number }>();
const MAX_P = 16;

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'ss-channel-state-'));
});
afterAll(async () => rm(root, { recursive: true, force: true }));

const rec = (sequence: number, key: string, keyGroup?: number) =>
  keyGroup === undefined
    ? { sequence, value: { key, n: sequence } }
    : { sequence, value: { key, n: sequence }, keyGroup };

function factory(dir: string, inlineThreshold = 0): BlobCheckpointStreamFactory {
  return new BlobCheckpointStreamFactory({
    store: new LocalBlobStore(dir),
    baseDir: 'job/chk-3',
    sharedDir: 'job/shared',
    inlineThreshold,
  });
}

function writer(inputChannels = 2, outputChannels = 2) {
  return new ChannelStateWriter({ subtask: 'keyed[0]', checkpointId: 3, inputChannels, outputChannels, serializer });
}

/** A two-operator snapshot (source p=2 -> keyed p=2) with channel state on both sides of the keyed exchange. */
async function twoOperatorSnapshot(dir: string): Promise<CheckpointMetadata> {
  const f = factory(dir);
  // keyed[d] read these from source[u] after its snapshot (input state); source[u] had these queued for keyed[d] (output state).
  const kg = (k: number) => k % MAX_P;
  const k0 = writer();
  k0.addInput(1, 'keyed', [rec(10, 'a', kg(1)), rec(11, 'b', kg(9))]);
  const k1 = writer();
  k1.addInput(0, 'keyed', [rec(4, 'c', kg(12))]);
  const s0 = writer(0, 2);
  s0.addOutput(1, 'keyed', [rec(5, 'd', kg(15)), rec(6, 'e', kg(2))]);
  const s1 = writer(0, 2);
  s1.addOutput(0, 'keyed', [rec(12, 'f', kg(3))]);
  const sub = async (w: ChannelStateWriter<{ key: string; n: number }>, i: number) => {
    const channel = await w.finish(f);
    return { subtaskIndex: i, keyed: [], operator: [], ...(channel ? { channel } : {}) };
  };
  return {
    checkpointId: 3,
    jobId: 'job',
    kind: 'checkpoint',
    format: 'native',
    backend: 'memory',
    timestamp: Date.UTC(2026, 0, 1),
    operators: [
      { operatorId: 'source', parallelism: 2, maxParallelism: MAX_P, subtasks: [await sub(s0, 0), await sub(s1, 1)] },
      { operatorId: 'keyed', parallelism: 2, maxParallelism: MAX_P, subtasks: [await sub(k0, 0), await sub(k1, 1)] },
    ],
  };
}

describe('ChannelStateWriter and readChannelState', () => {
  it('round-trips input and output records per channel, in order, with sequence numbers and key groups', async () => {
    const dir = join(root, 'roundtrip');
    const w = writer();
    w.addInput(1, 'keyed', [rec(7, 'x', 3), rec(8, 'y', 4)]);
    w.addInput(1, 'keyed', [rec(9, 'z', 5)]);
    w.addOutput(0, 'round-robin', [rec(0, 'o')]);
    const h = (await w.finish(factory(dir)))!;
    expect(h.type).toBe('channel-state');
    expect(h.stream.type).toBe('file');
    expect(h.entries.map((e) => [e.direction, e.channel, e.firstSequence, e.count])).toEqual([
      ['input', 1, 7, 3],
      ['output', 0, 0, 1],
    ]);
    const read = await readChannelState(
      h,
      new BlobStateFileReader(new LocalBlobStore(dir), 'job/chk-3'),
      serializer,
      'test',
    );
    expect(read.map((r) => r.records)).toEqual([[rec(7, 'x', 3), rec(8, 'y', 4), rec(9, 'z', 5)], [rec(0, 'o')]]);
  });

  it('nothing in flight: no handle and no file', async () => {
    const dir = join(root, 'empty');
    await mkdir(dir, { recursive: true });
    const w = writer();
    w.addInput(0, 'keyed', []);
    expect(await w.finish(factory(dir))).toBeNull();
    expect(await readdir(dir)).toEqual([]);
  });

  it('refuses a channel the subtask does not have (CHANNEL_STATE_UNKNOWN_CHANNEL)', () => {
    const w = writer(2, 0);
    expect(() => w.addInput(2, 'keyed', [rec(0, 'a', 1)])).toThrow(
      expect.objectContaining({
        code: 'CHANNEL_STATE_UNKNOWN_CHANNEL',
        message: expect.stringMatching(/channel 2.*2 input channel/),
      }),
    );
    expect(() => w.addOutput(0, 'round-robin', [rec(0, 'a')])).toThrow(ChannelStateError);
  });

  it('refuses a gap or a step back in a channel’s sequence numbers (CHANNEL_STATE_SEQUENCE_GAP)', () => {
    const w = writer();
    w.addInput(0, 'keyed', [rec(3, 'a', 1)]);
    expect(() => w.addInput(0, 'keyed', [rec(5, 'b', 1)])).toThrow(
      expect.objectContaining({
        code: 'CHANNEL_STATE_SEQUENCE_GAP',
        message: expect.stringMatching(/sequence 5 follows 3; expected 4/),
      }),
    );
    expect(() => w.addInput(1, 'keyed', [rec(2, 'a', 1), rec(2, 'b', 1)])).toThrow(
      expect.objectContaining({ code: 'CHANNEL_STATE_SEQUENCE_GAP' }),
    );
  });

  it('refuses a keyed record without a key group (CHANNEL_STATE_UNPLACEABLE)', () => {
    expect(() => writer().addInput(0, 'keyed', [rec(0, 'a')])).toThrow(
      expect.objectContaining({ code: 'CHANNEL_STATE_UNPLACEABLE' }),
    );
  });

  it('a handle that promises more records than its stream holds is a gap on read', async () => {
    const dir = join(root, 'short');
    const w = writer();
    w.addInput(0, 'keyed', [rec(0, 'a', 1), rec(1, 'b', 2)]);
    const h = (await w.finish(factory(dir)))!;
    const lying: ChannelStateHandle = { ...h, entries: [{ ...h.entries[0], count: 3 }] };
    await expect(
      readChannelState(lying, new BlobStateFileReader(new LocalBlobStore(dir), 'job/chk-3'), serializer, 'test'),
    ).rejects.toMatchObject({ code: 'CHANNEL_STATE_SEQUENCE_GAP' });
  });

  it('a restore with another record serializer fails clearly', async () => {
    const dir = join(root, 'ser');
    const w = writer();
    w.addInput(0, 'round-robin', [rec(0, 'a')]);
    const h = (await w.finish(factory(dir)))!;
    await expect(
      readChannelState(h, new BlobStateFileReader(new LocalBlobStore(dir), 'job/chk-3'), stringSerializer, 'test'),
    ).rejects.toMatchObject({ code: 'SERIALIZER_INCOMPATIBLE' });
  });
});

describe('_metadata with channel state (format version 2)', () => {
  it('is written as version 2 and read back; a file without channel state stays version 1', async () => {
    const md = await twoOperatorSnapshot(join(root, 'md'));
    const bytes = encodeMetadata(md);
    expect(bytes.readUInt16BE(4)).toBe(2);
    expect(METADATA_VERSION).toBe(2);
    expect(decodeMetadata(bytes)).toEqual(md);
    const aligned: CheckpointMetadata = {
      ...md,
      operators: md.operators.map((o) => ({ ...o, subtasks: o.subtasks.map(({ channel: _, ...s }) => s) })),
    };
    expect(encodeMetadata(aligned).readUInt16BE(4)).toBe(1);
  });

  it('a version-1 file holding channel state is corrupt; a bad entry names its field', async () => {
    const md = await twoOperatorSnapshot(join(root, 'md1'));
    const bytes = Buffer.from(encodeMetadata(md));
    bytes.writeUInt16BE(1, 4);
    expect(() => decodeMetadata(bytes)).toThrow(
      expect.objectContaining({
        code: 'CORRUPT',
        message: expect.stringMatching(/version 1 cannot hold channel state/),
      }),
    );
    const ch = md.operators[1].subtasks[0].channel!;
    const broken: CheckpointMetadata = {
      ...md,
      operators: [
        md.operators[0],
        {
          ...md.operators[1],
          subtasks: [
            { ...md.operators[1].subtasks[0], channel: { ...ch, entries: [{ ...ch.entries[0], offset: 0 }] } },
          ],
        },
      ],
    };
    expect(() => encodeMetadata(broken)).toThrow(/operators\[1\]\.subtasks\[0\]\.channel\.entries\[0\]/);
  });

  it('its channel-state files are files of the checkpoint (what retention, abort and gc enumerate)', async () => {
    const md = await twoOperatorSnapshot(join(root, 'files'));
    const keys = [...fileKeys('job/chk-3', md)];
    expect(keys).toHaveLength(4);
    for (const op of md.operators)
      for (const s of op.subtasks) expect(keys).toContain(`job/chk-3/${(s.channel!.stream as { path: string }).path}`);
  });
});

const exchange = (parallelism: number) => ({
  producer: 'source',
  consumer: 'keyed',
  parallelism,
  maxParallelism: MAX_P,
});

describe('placing in-flight records on a restore', () => {
  it('keyed: every record goes to the subtask that owns its key group, per old channel input state before output state', async () => {
    const dir = join(root, 'place');
    const md = await twoOperatorSnapshot(dir);
    const files = new BlobStateFileReader(new LocalBlobStore(dir), 'job/chk-3');
    for (const p of [1, 2, 3, 5]) {
      const placed = await placeInFlightRecords(md, files, exchange(p), serializer);
      expect(placed).toHaveLength(p);
      expect(
        placed
          .flat()
          .map((r) => r.value.key)
          .sort(),
      ).toEqual(['a', 'b', 'c', 'd', 'e', 'f']);
      placed.forEach((records, i) => {
        const range = keyGroupRangeForSubtask(MAX_P, p, i);
        for (const r of records) expect(r.keyGroup! >= range.start && r.keyGroup! <= range.end).toBe(true);
      });
    }
    // One subtask: old channels by d, then u; each channel's input state (read by keyed) before its output state (still queued at source).
    const one = await placeInFlightRecords(md, files, exchange(1), serializer);
    expect(one[0].map((r) => r.value.key)).toEqual(['a', 'b', 'f', 'c', 'd', 'e']);
  });

  it('round-robin: old subtask d goes to d mod the new parallelism, order kept', async () => {
    const dir = join(root, 'rr');
    const f = factory(dir);
    const sink = async (i: number, recs: ReturnType<typeof rec>[]) => {
      const w = new ChannelStateWriter({
        subtask: `sink[${i}]`,
        checkpointId: 3,
        inputChannels: 1,
        outputChannels: 0,
        serializer,
      });
      w.addInput(0, 'round-robin', recs);
      return { subtaskIndex: i, keyed: [], operator: [], channel: (await w.finish(f))! };
    };
    const md: CheckpointMetadata = {
      checkpointId: 3,
      jobId: 'job',
      kind: 'checkpoint',
      format: 'native',
      backend: 'memory',
      timestamp: 0,
      operators: [
        { operatorId: 'keyed', parallelism: 1, maxParallelism: MAX_P, subtasks: [] },
        {
          operatorId: 'sink',
          parallelism: 3,
          maxParallelism: MAX_P,
          subtasks: [
            await sink(0, [rec(1, 'a'), rec(2, 'b')]),
            await sink(1, [rec(0, 'c')]),
            await sink(2, [rec(5, 'd')]),
          ],
        },
      ],
    };
    const placed = await placeInFlightRecords(
      md,
      new BlobStateFileReader(new LocalBlobStore(dir), 'job/chk-3'),
      { producer: 'keyed', consumer: 'sink', parallelism: 2, maxParallelism: MAX_P },
      serializer,
    );
    expect(placed.map((rs) => rs.map((r) => r.value.key))).toEqual([['a', 'b', 'd'], ['c']]);
  });

  it('channel state of an operator no exchange reads cannot be placed (CHANNEL_STATE_UNPLACEABLE)', async () => {
    const md = await twoOperatorSnapshot(join(root, 'unplaced'));
    expect(() => checkChannelStatePlaceable(md, [exchange(2)])).not.toThrow();
    expect(() => checkChannelStatePlaceable(md, [])).toThrow(
      expect.objectContaining({
        code: 'CHANNEL_STATE_UNPLACEABLE',
        message: expect.stringMatching(/no exchange out of source/),
      }),
    );
  });

  it('an input channel beyond the upstream parallelism recorded in the snapshot is refused (CHANNEL_STATE_UNKNOWN_CHANNEL)', async () => {
    const dir = join(root, 'unknown');
    const md = await twoOperatorSnapshot(dir);
    const shrunk: CheckpointMetadata = {
      ...md,
      operators: [{ ...md.operators[0], parallelism: 1, subtasks: [md.operators[0].subtasks[0]] }, md.operators[1]],
    };
    await expect(
      placeInFlightRecords(
        shrunk,
        new BlobStateFileReader(new LocalBlobStore(dir), 'job/chk-3'),
        exchange(2),
        serializer,
      ),
    ).rejects.toMatchObject({ code: 'CHANNEL_STATE_UNKNOWN_CHANNEL' });
  });
});

describe('golden fixture: test/fixtures/golden-channel-state', () => {
  it.runIf(update)('regenerates the fixture', async () => {
    await rm(FIXTURE, { recursive: true, force: true });
    const work = join(root, 'golden');
    const md = await twoOperatorSnapshot(work);
    await writeFile(join(work, 'job', 'chk-3', '_metadata'), encodeMetadata(md));
    await mkdir(FIXTURE, { recursive: true });
    await cp(join(work, 'job', 'chk-3'), join(FIXTURE, 'chk-3'), { recursive: true });
  });

  it.skipIf(update)('reads: version 2, every record of every channel, placed as before', async () => {
    const store = new LocalBlobStore(FIXTURE);
    const bytes = await readFile(join(FIXTURE, 'chk-3', '_metadata'));
    expect(bytes.readUInt16BE(4)).toBe(2);
    const md = decodeMetadata(bytes);
    const files = new BlobStateFileReader(store, 'chk-3');
    const placed = await placeInFlightRecords(md, files, exchange(3), serializer);
    expect(placed.map((rs) => rs.map((r) => [r.sequence, r.value.key, r.keyGroup]))).toEqual(
      (
        await placeInFlightRecords(
          await twoOperatorSnapshot(join(root, 'golden-fresh')),
          new BlobStateFileReader(new LocalBlobStore(join(root, 'golden-fresh')), 'job/chk-3'),
          exchange(3),
          serializer,
        )
      ).map((rs) => rs.map((r) => [r.sequence, r.value.key, r.keyGroup])),
    );
    expect(placed.flat()).toHaveLength(6);
  });

  it.skipIf(update)("today's writer writes the fixture's stream bytes", async () => {
    const md = decodeMetadata(await readFile(join(FIXTURE, 'chk-3', '_metadata')));
    const dir = join(root, 'golden-bytes');
    const fresh = await twoOperatorSnapshot(dir);
    for (let o = 0; o < md.operators.length; o++) {
      for (let s = 0; s < md.operators[o].subtasks.length; s++) {
        const a = md.operators[o].subtasks[s].channel!;
        const b = fresh.operators[o].subtasks[s].channel!;
        expect(b.entries).toEqual(a.entries);
        const want = await readFile(join(FIXTURE, 'chk-3', (a.stream as { path: string }).path));
        const got = await readFile(join(dir, 'job', 'chk-3', (b.stream as { path: string }).path));
        expect(got.equals(want)).toBe(true);
      }
    }
  });

  it.skipIf(update)('damage is found: a byte flipped in a channel-state file fails its checksum', async () => {
    const copy = join(root, 'golden-damaged');
    await cp(FIXTURE, copy, { recursive: true });
    const md = decodeMetadata(await readFile(join(copy, 'chk-3', '_metadata')));
    const h = md.operators[1].subtasks[0].channel!;
    const path = join(copy, 'chk-3', (h.stream as { path: string }).path);
    const b = await readFile(path);
    b[b.length - 1] ^= 0xff;
    await writeFile(path, b);
    await expect(
      readChannelState(h, new BlobStateFileReader(new LocalBlobStore(copy), 'chk-3'), serializer, 'x'),
    ).rejects.toBeInstanceOf(FormatError);
  });
});

describe('the coordinator and channel state', () => {
  it('records an acknowledged channel handle in _metadata (version 2), refuses one in a savepoint, and enumerates its file', async () => {
    const dir = join(root, 'coordinator');
    const storage = localCheckpointStorage(dir, { inlineThreshold: 0 });
    const coord = new CheckpointCoordinator({
      jobId: 'job',
      storage,
      backendName: 'fake',
      operators: [{ operatorId: 'op', parallelism: 1, maxParallelism: MAX_P }],
    });
    await coord.restore();
    const sp = coord.triggerSavepoint({ target: join(dir, 'sp') });
    sp.completion.catch(() => undefined);
    const spw = writer(1, 0);
    spw.addInput(0, 'round-robin', [rec(0, 'a')]);
    const spHandle = (await spw.finish(sp.streamsFor('op', 0)))!;
    await expect(
      coord.acknowledge(sp.checkpointId, 'op', 0, { keyed: [], operator: [], channel: spHandle }),
    ).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
      message: expect.stringMatching(/savepoints are always aligned/),
    });
    await coord.abort(sp.checkpointId, 'test');
    const p = coord.triggerCheckpoint();
    const w = writer(1, 0);
    w.addInput(0, 'round-robin', [rec(4, 'a'), rec(5, 'b')]);
    const channel = (await w.finish(p.streamsFor('op', 0)))!;
    const done = await coord.acknowledge(p.checkpointId, 'op', 0, { keyed: [], operator: [], channel });
    expect(done.status).toBe('completed');
    const bytes = await readFile(join(dir, 'job', `chk-${p.checkpointId}`, '_metadata'));
    expect(bytes.readUInt16BE(4)).toBe(2);
    const md = decodeMetadata(bytes);
    expect(md.operators[0].subtasks[0].channel).toEqual(channel);
    expect([...fileKeys(`job/chk-${p.checkpointId}`, md)]).toHaveLength(1);
    await coord.shutdown('cancel');
  });
});
