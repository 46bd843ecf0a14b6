import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { StateFileReader } from '../../src/backend/contract.js';
import type { FileStreamHandle, KeyedStateMetaInfo, KeyGroupsStateHandle } from '../../src/backend/handles.js';
import { memoryCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { BlobStateFileReader } from '../../src/checkpoint/streams.js';
import { isStreamStateError } from '../../src/errors.js';
import {
  HEAP_LAYOUT,
  KeyGroupsStreamWriter,
  SectionWriter,
  listEntries,
  mapEntries,
  parseKeyGroupsStream,
  readAllKeyGroups,
  readKeyGroups,
  timerEntries,
  valueEntries,
  type RawKeyGroup,
} from '../../src/format/key-groups-stream.js';

const b = (s: string): Buffer => Buffer.from(s, 'utf8');
const snap = { id: 'streamstate.string', version: 1 };
const STATES: KeyedStateMetaInfo[] = [
  { name: 'v', kind: 'value', stateId: 0, namespaceSerializer: snap, valueSerializer: snap, ttl: false },
  { name: 'l', kind: 'list', stateId: 1, namespaceSerializer: snap, valueSerializer: snap, ttl: false },
  {
    name: 'm',
    kind: 'map',
    stateId: 2,
    namespaceSerializer: snap,
    valueSerializer: snap,
    userKeySerializer: snap,
    ttl: false,
  },
  { name: 't', kind: 'timers', stateId: 3, namespaceSerializer: snap, ttl: false },
];

/** Writes key groups 0..9 (odd ones empty) through real checkpoint streams. */
async function writeSample(opts: { inlineThreshold?: number; flushBytes?: number } = {}) {
  const storage = memoryCheckpointStorage({ inlineThreshold: opts.inlineThreshold ?? 0 });
  const streams = storage.checkpointStreams('job', 1);
  const writer = new KeyGroupsStreamWriter(
    streams.createOutputStream('exclusive'),
    {
      layout: HEAP_LAYOUT,
      keySerializer: snap,
      maxParallelism: 10,
      keyGroupRange: { start: 0, end: 9 },
      states: STATES,
    },
    opts.flushBytes === undefined ? {} : { flushBytes: opts.flushBytes },
  );
  const s = new SectionWriter();
  for (let kg = 0; kg < 10; kg++) {
    writer.beginKeyGroup(kg);
    if (kg % 2 === 0) {
      s.valueEntry(b(`k${kg}`), b(''), b(`v${kg}`));
      s.valueEntry(b(`k${kg}b`), b('ns'), b(`w${kg}`));
      writer.addSection(0, s);
      s.listEntry(b(`k${kg}`), b(''), 2);
      s.listElement(b('x'));
      s.listElement(b('y'));
      writer.addSection(1, s);
      s.mapEntry(b(`k${kg}`), b(''), 2);
      s.mapElement(b('a'), b('1'));
      s.mapElement(b('nil'), null);
      writer.addSection(2, s);
      s.timerEntry(kg * 1.5, b(`k${kg}`), b('w'));
      writer.addSection(3, s);
    } else {
      writer.addSection(0, s); // empty sections leave nothing
    }
    await writer.endKeyGroup();
  }
  const handle = (await writer.finish())!;
  const reader = new BlobStateFileReader(storage.store, storage.checkpointPointer('job', 1));
  return { storage, handle, reader };
}

async function collect(it: AsyncIterable<RawKeyGroup>): Promise<RawKeyGroup[]> {
  const out: RawKeyGroup[] = [];
  for await (const x of it) out.push(x);
  return out;
}

async function expectCode(p: Promise<unknown>, code: string, mention?: string): Promise<void> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(isStreamStateError(err), `expected a StreamStateError ${code}, got ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe(code);
  if (mention !== undefined) expect((err as Error).message).toContain(mention);
}

function fileOf(h: KeyGroupsStateHandle): FileStreamHandle {
  if (h.stream.type !== 'file') throw new Error('expected a file handle');
  return h.stream;
}

describe('key-groups stream', () => {
  it('round-trips every entry kind and indexes only key groups with data', async () => {
    const { handle, reader } = await writeSample();
    expect(handle.type).toBe('key-groups');
    expect(handle.blocks.map((x) => x.keyGroup)).toEqual([0, 2, 4, 6, 8]);
    const kgs = await collect(readKeyGroups(handle, reader, { start: 0, end: 9 }));
    expect(kgs.map((k) => k.keyGroup)).toEqual([0, 2, 4, 6, 8]);
    const kg4 = kgs[2];
    expect(kg4.sections.map((s) => [s.stateId, s.entryCount])).toEqual([
      [0, 2],
      [1, 1],
      [2, 1],
      [3, 1],
    ]);
    const values = [...valueEntries(kg4.sections[0])].map((e) => [
      e.key.toString(),
      e.namespace.toString(),
      e.value.toString(),
    ]);
    expect(values).toEqual([
      ['k4', '', 'v4'],
      ['k4b', 'ns', 'w4'],
    ]);
    expect([...listEntries(kg4.sections[1])].map((e) => e.elements.map(String))).toEqual([['x', 'y']]);
    const map = [...mapEntries(kg4.sections[2])][0];
    expect(map.entries.map(([k, v]) => [k.toString(), v === null ? null : v.toString()])).toEqual([
      ['a', '1'],
      ['nil', null],
    ]);
    const timer = [...timerEntries(kg4.sections[3])][0];
    expect([timer.timestamp, timer.key.toString(), timer.namespace.toString()]).toEqual([6, 'k4', 'w']);
  });

  it('the footer matches the handle and the whole stream parses without the handle', async () => {
    const { handle, reader } = await writeSample();
    const bytes = await reader.read(fileOf(handle));
    const parsed = parseKeyGroupsStream(bytes);
    // The footer has no entry counts; the handle records them (key-group sizes).
    expect(parsed.blocks).toEqual(handle.blocks.map(({ entries: _entries, ...b }) => b));
    expect(handle.blocks.every((b) => typeof b.entries === 'number' && b.entries > 0)).toBe(true);
    expect(parsed.header.states).toEqual(STATES);
    expect(parsed.canonical).toBe(false);
    expect([...readAllKeyGroups(bytes)].map((k) => k.keyGroup)).toEqual([0, 2, 4, 6, 8]);
  });

  it('a restore reads only the blocks of its own key groups (ranged reads, no footer)', async () => {
    const { handle, reader } = await writeSample({ flushBytes: 1 });
    const reads: Array<[number, number]> = [];
    const spy: StateFileReader = {
      read: () => Promise.reject(new Error('whole-file read not expected')),
      readRange: (f, offset, length) => {
        reads.push([offset, length]);
        return reader.readRange(f, offset, length);
      },
      download: (f, p) => reader.download(f, p),
      describe: (f) => reader.describe(f),
    };
    const kgs = await collect(readKeyGroups(handle, spy, { start: 3, end: 6 }));
    expect(kgs.map((k) => k.keyGroup)).toEqual([4, 6]);
    const kg4 = handle.blocks.find((x) => x.keyGroup === 4)!;
    const kg6 = handle.blocks.find((x) => x.keyGroup === 6)!;
    // header check + one coalesced read of the two adjacent blocks
    expect(reads).toEqual([
      [0, 12],
      [kg4.offset, kg6.offset + kg6.length - kg4.offset],
    ]);
    expect(await collect(readKeyGroups(handle, spy, { start: 9, end: 9 }))).toEqual([]);
  });

  it('inline handles decode from base64', async () => {
    const { handle, reader } = await writeSample({ inlineThreshold: 1 << 20 });
    expect(handle.stream.type).toBe('inline');
    const kgs = await collect(readKeyGroups(handle, reader, { start: 2, end: 2 }));
    expect(kgs.map((k) => k.keyGroup)).toEqual([2]);
  });

  it('detects a flipped bit with CHECKSUM_MISMATCH naming the file and key group', async () => {
    const { storage, handle, reader } = await writeSample();
    const name = `job/chk-1/${fileOf(handle).path}`;
    const bytes = Buffer.from(await storage.store.get(name));
    const kg6 = handle.blocks.find((x) => x.keyGroup === 6)!;
    bytes[kg6.offset + 7] ^= 0x10;
    await storage.store.put(name, bytes);
    // Other key groups still read fine.
    expect((await collect(readKeyGroups(handle, reader, { start: 0, end: 4 }))).length).toBe(3);
    await expectCode(collect(readKeyGroups(handle, reader, { start: 0, end: 9 })), 'CHECKSUM_MISMATCH', 'key group 6');
    await expectCode(
      collect(readKeyGroups(handle, reader, { start: 6, end: 6 })),
      'CHECKSUM_MISMATCH',
      fileOf(handle).path,
    );
  });

  it('rejects a wrong magic and a newer version', async () => {
    const { storage, handle, reader } = await writeSample();
    const name = `job/chk-1/${fileOf(handle).path}`;
    const good = await storage.store.get(name);
    const badMagic = Buffer.from(good);
    badMagic.write('XXXX', 0, 'latin1');
    await storage.store.put(name, badMagic);
    await expectCode(collect(readKeyGroups(handle, reader, { start: 0, end: 9 })), 'BAD_MAGIC');
    expect(() => parseKeyGroupsStream(badMagic)).toThrow(/not a streamstate key-groups stream/);
    const newer = Buffer.from(good);
    newer.writeUInt16BE(99, 4);
    await storage.store.put(name, newer);
    // An unknown version is checked against the file's crc32 first: a damaged version field is corruption,
    await expectCode(collect(readKeyGroups(handle, reader, { start: 0, end: 9 })), 'CHECKSUM_MISMATCH');
    // an intact file of a newer version asks for a newer streamstate.
    const newerHandle: KeyGroupsStateHandle = { ...handle, stream: { ...fileOf(handle), crc32: crc32(newer) } };
    await expectCode(
      collect(readKeyGroups(newerHandle, reader, { start: 0, end: 9 })),
      'UNSUPPORTED_VERSION',
      'newer streamstate',
    );
    const zero = Buffer.from(good);
    zero.writeUInt16BE(0, 4);
    await storage.store.put(name, zero);
    await expectCode(collect(readKeyGroups(handle, reader, { start: 0, end: 9 })), 'CORRUPT', 'version 0');
  });

  it('detects truncation', async () => {
    const { storage, handle, reader } = await writeSample();
    const name = `job/chk-1/${fileOf(handle).path}`;
    const good = await storage.store.get(name);
    const cut = good.subarray(0, handle.blocks[3].offset + 3);
    await storage.store.put(name, cut);
    await expectCode(collect(readKeyGroups(handle, reader, { start: 6, end: 9 })), 'TRUNCATED');
    expect(() => parseKeyGroupsStream(cut)).toThrow(expect.objectContaining({ code: 'TRUNCATED' }));
  });

  it('an empty stream yields a null handle and writes nothing', async () => {
    const storage = memoryCheckpointStorage({ inlineThreshold: 0 });
    const writer = new KeyGroupsStreamWriter(storage.checkpointStreams('job', 2).createOutputStream('exclusive'), {
      layout: HEAP_LAYOUT,
      keySerializer: snap,
      maxParallelism: 4,
      keyGroupRange: { start: 0, end: 3 },
      states: STATES,
    });
    for (let kg = 0; kg < 4; kg++) {
      writer.beginKeyGroup(kg);
      await writer.endKeyGroup();
    }
    expect(await writer.finish()).toBeNull();
    expect(await storage.listJobFiles('job')).toEqual([]);
  });

  it('refuses key groups out of order', async () => {
    const storage = memoryCheckpointStorage();
    const writer = new KeyGroupsStreamWriter(storage.checkpointStreams('job', 3).createOutputStream('exclusive'), {
      layout: HEAP_LAYOUT,
      keySerializer: snap,
      maxParallelism: 4,
      keyGroupRange: { start: 0, end: 3 },
      states: STATES,
    });
    writer.beginKeyGroup(2);
    await writer.endKeyGroup();
    expect(() => writer.beginKeyGroup(1)).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
  });
});
