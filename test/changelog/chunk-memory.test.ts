import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { CheckpointStreamFactory, StateOutputStream } from '../../src/backend/contract.js';
import type { StreamHandle } from '../../src/backend/handles.js';
import { ChangeLog } from '../../src/changelog/change-log.js';
import type { ChangelogSegmentRef } from '../../src/changelog/handle.js';
import { decodeSegment } from '../../src/changelog/segment-format.js';

/**
 * The log copies each cut into memory that released chunks gave back (fresh memory per chunk cost
 * milliseconds of page faults inside a record's commit). Memory is reused only once nobody reads
 * it: bytes planned for an upload stay intact when a completion notice drops them meanwhile.
 */

const identity = { logId: 'log', jobId: 'job', operatorId: 'op', subtaskIndex: 0, backend: 'memory' };
const newLog = (maxMemoryBytes?: number) =>
  new ChangeLog({
    ...identity,
    maxParallelism: 128,
    keyGroupRange: { start: 0, end: 127 },
    ...(maxMemoryBytes !== undefined ? { maxMemoryBytes } : {}),
  });

/** Appends `n` records of 1 KiB filled with `fill`; returns what the chunk's body must be. */
function appendRecords(log: ChangeLog, n: number, fill: number): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const body = Buffer.alloc(1024, (fill + i) & 0xff);
    log.append(body);
    parts.push(Buffer.from([0x80, 0x08]), body); // varint 1024 | body
  }
  return Buffer.concat(parts);
}

/** Streams that keep copies of what is written (also in `closed`) and hand back inline handles. */
function inlineStreams(closed: Buffer[] = []): CheckpointStreamFactory {
  return {
    createOutputStream(): StateOutputStream {
      const parts: Buffer[] = [];
      return {
        get position() {
          return parts.reduce((n, p) => n + p.length, 0);
        },
        async write(chunk) {
          parts.push(Buffer.from(chunk));
        },
        async closeAndGetHandle(): Promise<StreamHandle> {
          const data = Buffer.concat(parts);
          closed.push(data);
          return { type: 'inline', data: data.toString('base64'), size: data.length, crc32: crc32(data) };
        },
        async discard() {},
      };
    },
    uploadFile: () => Promise.reject(new Error('not used')),
    discardFiles: async () => undefined,
  };
}

function segmentBody(ref: ChangelogSegmentRef): Buffer {
  if (ref.file.type !== 'inline') throw new Error('expected an inline segment');
  return decodeSegment(Buffer.from(ref.file.data, 'base64'), { ...identity, ...ref }, 'test').body;
}

const confirmedRef: ChangelogSegmentRef = {
  file: { type: 'inline', data: '', size: 0, crc32: 0 },
  fromSeq: 1,
  toSeq: 400,
};

describe('changelog chunk memory', () => {
  it('reuses the memory of a chunk whose bytes were dropped for a later cut', () => {
    const log = newLog();
    appendRecords(log, 400, 1);
    const first = log.cut()!;
    const memory = first.bytes!.buffer;
    first.confirm(confirmedRef, 1);
    appendRecords(log, 400, 2);
    const second = log.cut()!;
    expect(second.bytes!.buffer).toBe(memory);
  });

  it('keeps bytes planned for an upload intact when a notice drops them before the upload runs', async () => {
    const log = newLog();
    const expected = appendRecords(log, 400, 1);
    const chunk = log.cut()!;
    const planned = log.plan(0, undefined)!;
    expect(planned).toHaveLength(1);
    // A completion notice of an earlier checkpoint confirms a copy: the log drops the bytes...
    chunk.confirm(confirmedRef, 1);
    // ...and more records are cut before the planned upload runs.
    const later = appendRecords(log, 400, 99);
    const next = log.cut()!;
    expect(next.bytes!.buffer).not.toBe(planned[0].bytes!.buffer);
    const used = await log.persist(planned[0], inlineStreams(), null);
    expect(segmentBody(used.copy.ref).equals(expected)).toBe(true);
    expect(next.bytes!.equals(later)).toBe(true);
    // Once the upload released them, the memory serves the next cut.
    next.confirm({ ...confirmedRef, fromSeq: 401, toSeq: 800 }, 2);
    appendRecords(log, 400, 3);
    expect(log.cut()!.bytes!.buffer).toBe(planned[0].bytes!.buffer);
  });

  it('keeps the bytes of a preemptive upload intact when the chunk is truncated while it runs', async () => {
    const log = newLog();
    const expected = appendRecords(log, 400, 7);
    const chunk = log.cut()!;
    const memory = chunk.bytes!.buffer;
    const written: Buffer[] = [];
    const upload = log.persistEarly(chunk, inlineStreams(written));
    await log.truncate(400);
    appendRecords(log, 400, 200);
    expect(log.cut()!.bytes!.buffer).not.toBe(memory);
    await upload;
    // Truncated meanwhile: the copy is not kept, but it was written from the original records.
    expect(chunk.spare).toBeNull();
    expect(written).toHaveLength(1);
    const segment = { ...identity, fromSeq: 1, toSeq: 400 };
    expect(decodeSegment(written[0], segment, 'test').body.equals(expected)).toBe(true);
  });

  it('past the memory bound, a chunk a preemptive upload holds gives its memory to the next cut', async () => {
    const log = newLog(0);
    const expected = appendRecords(log, 400, 5);
    const chunk = log.cut()!;
    const memory = chunk.bytes!.buffer;
    await log.persistEarly(chunk, inlineStreams());
    expect(chunk.spare).not.toBeNull();
    expect(chunk.bytes).toBeNull();
    appendRecords(log, 400, 6);
    expect(log.cut()!.bytes!.buffer).toBe(memory);
    // The records live on in the spare, which the next checkpoint references.
    const planned = log.plan(0, undefined)!;
    const used = await log.persist(planned[0], inlineStreams(), null);
    expect(segmentBody(used.copy.ref).equals(expected)).toBe(true);
  });

  it('within the memory bound, a chunk keeps its bytes after a preemptive upload (for a re-upload after a decline)', async () => {
    const log = newLog();
    appendRecords(log, 400, 5);
    const chunk = log.cut()!;
    await log.persistEarly(chunk, inlineStreams());
    expect(chunk.spare).not.toBeNull();
    expect(chunk.bytes).not.toBeNull();
  });

  it('a spare whose bytes are gone is taken by one plan only; the next plan says materialize; a failed snapshot gives it back', async () => {
    const log = newLog(0);
    appendRecords(log, 400, 5);
    const chunk = log.cut()!;
    await log.persistEarly(chunk, inlineStreams());
    const spare = chunk.spare!;
    const planned = log.plan(0, undefined)!;
    expect(planned[0].spare).toBe(spare);
    expect(log.plan(0, undefined)).toBeNull();
    const used = await log.persist(planned[0], inlineStreams(), null);
    expect(used.copy).toBe(spare);
    // The snapshot failed before it was acknowledged: the copy is the chunk's spare again.
    await log.giveBack([used]);
    expect(chunk.spare).toBe(spare);
    expect(log.plan(0, undefined)![0].spare).toBe(spare);
  });
});
