import fc from 'fast-check';
import { crc32 } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { CheckpointMetadata } from '../../src/checkpoint/metadata.js';
import { decodeMetadata, encodeMetadata } from '../../src/checkpoint/metadata-codec.js';
import { FormatError, isStreamStateError, type ErrorCode } from '../../src/errors.js';
import { sampleMetadata } from './sample-metadata.js';

function codeOf(fn: () => unknown): ErrorCode | 'no error' | 'other' {
  try {
    fn();
    return 'no error';
  } catch (err) {
    return isStreamStateError(err) ? err.code : 'other';
  }
}

/** Re-encodes a body as a valid frame (right length and crc), to test shape validation alone. */
function frame(body: unknown, version = 1): Buffer {
  const json = Buffer.from(JSON.stringify(body), 'utf8');
  const head = Buffer.alloc(12);
  head.write('SSMD', 0, 'ascii');
  head.writeUInt16BE(version, 4);
  head.writeUInt32BE(json.length, 8);
  const tail = Buffer.alloc(4);
  tail.writeUInt32BE(crc32(json));
  return Buffer.concat([head, json, tail]);
}

describe('_metadata codec', () => {
  it('round-trips', () => {
    const m = sampleMetadata();
    const bytes = encodeMetadata(m);
    expect(bytes.subarray(0, 4).toString('ascii')).toBe('SSMD');
    expect(bytes.readUInt16BE(4)).toBe(1);
    expect(bytes.readUInt16BE(6)).toBe(0);
    expect(bytes.readUInt32BE(8)).toBe(bytes.length - 16);
    expect(decodeMetadata(bytes)).toEqual(m);
  });

  it('every single bit flip is detected (never silently accepted)', () => {
    const bytes = encodeMetadata(sampleMetadata());
    fc.assert(
      fc.property(fc.integer({ min: 0, max: bytes.length * 8 - 1 }), (bit) => {
        const bad = Buffer.from(bytes);
        bad[bit >> 3] ^= 1 << (bit & 7);
        const code = codeOf(() => decodeMetadata(bad));
        expect(['BAD_MAGIC', 'UNSUPPORTED_VERSION', 'CORRUPT', 'TRUNCATED', 'CHECKSUM_MISMATCH']).toContain(code);
      }),
      { numRuns: 300 },
    );
  });

  it('a flipped bit in the body → CHECKSUM_MISMATCH', () => {
    const bytes = encodeMetadata(sampleMetadata());
    bytes[40] ^= 0x04;
    expect(codeOf(() => decodeMetadata(bytes))).toBe('CHECKSUM_MISMATCH');
  });

  it('every truncation → TRUNCATED; trailing garbage → CORRUPT', () => {
    const bytes = encodeMetadata(sampleMetadata());
    for (let n = 0; n < bytes.length; n++) {
      expect(codeOf(() => decodeMetadata(bytes.subarray(0, n)))).toBe('TRUNCATED');
    }
    expect(codeOf(() => decodeMetadata(Buffer.concat([bytes, Buffer.from([0])])))).toBe('CORRUPT');
  });

  it('wrong magic → BAD_MAGIC naming the file', () => {
    let err: unknown;
    try {
      decodeMetadata(Buffer.from('{"checkpointId": 1}'), '/data/chk-1/_metadata');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FormatError);
    expect((err as FormatError).code).toBe('BAD_MAGIC');
    expect((err as Error).message).toContain('/data/chk-1/_metadata is not a streamstate _metadata file');
    expect(codeOf(() => decodeMetadata(Buffer.from('SX')))).toBe('BAD_MAGIC');
  });

  it('a newer version → UNSUPPORTED_VERSION asking to upgrade; unknown flags too', () => {
    const bytes = encodeMetadata(sampleMetadata());
    bytes.writeUInt16BE(3, 4); // 2 is channel state (unaligned checkpoints); 3 does not exist yet
    expect(() => decodeMetadata(bytes)).toThrow(/newer streamstate \(format 3.*upgrade/);
    expect(codeOf(() => decodeMetadata(bytes))).toBe('UNSUPPORTED_VERSION');
    const flagged = encodeMetadata(sampleMetadata());
    flagged.writeUInt16BE(1, 6);
    expect(codeOf(() => decodeMetadata(flagged))).toBe('UNSUPPORTED_VERSION');
  });

  it('valid frame, JSON of the wrong shape → CORRUPT with the field path', () => {
    const m = sampleMetadata() as unknown as Record<string, unknown>;
    const cases: Array<[unknown, RegExp]> = [
      ['not an object', /body/],
      [{ ...m, checkpointId: 1.5 }, /checkpointId/],
      [{ ...m, checkpointId: -1 }, /checkpointId/],
      [{ ...m, kind: 'snapshot' }, /kind/],
      [{ ...m, operators: 'x' }, /operators/],
      [{ ...m, properties: { a: { nested: 1 } } }, /properties\.a/],
    ];
    const ops = (sampleMetadata().operators as unknown[]).map(
      (o) => JSON.parse(JSON.stringify(o)) as Record<string, any>,
    );
    const mutate = (f: (o: Array<Record<string, any>>) => void): unknown => {
      const copy = JSON.parse(JSON.stringify(ops)) as Array<Record<string, any>>;
      f(copy);
      return { ...m, operators: copy };
    };
    cases.push(
      [mutate((o) => (o[0].parallelism = 200)), /operators\[0\]\.parallelism/],
      [mutate((o) => (o[0].maxParallelism = 40000)), /operators\[0\]\.maxParallelism/],
      [mutate((o) => (o[1].operatorId = 'window-agg')), /appears twice/],
      [mutate((o) => (o[0].subtasks[1].subtaskIndex = 2)), /subtaskIndex/],
      [mutate((o) => (o[0].subtasks[1].subtaskIndex = 0)), /appears twice/],
      [mutate((o) => (o[0].subtasks[0].keyed[0].keyGroupRange = { start: 0, end: 128 })), /keyGroupRange/],
      [mutate((o) => delete o[0].subtasks[0].keyed[0].type), /keyed\[0\]\.type/],
      [mutate((o) => (o[0].subtasks[0].keyed[0].maxParallelism = 64)), /maxParallelism/],
      [mutate((o) => (o[0].subtasks[0].keyed[0].stream = { type: 'weird' })), /stream\.type/],
      [mutate((o) => (o[0].subtasks[0].keyed[0].stream.path = '/etc/passwd')), /stream\.path/],
      [mutate((o) => (o[0].subtasks[1].keyed[0].sharedFiles[0].size = -3)), /sharedFiles\[0\]/],
      [mutate((o) => (o[1].subtasks[0].operator[0].states[0].mode = 'weird')), /states\[0\]/],
    );
    for (const [body, where] of cases) {
      let err: unknown;
      try {
        decodeMetadata(frame(body));
      } catch (e) {
        err = e;
      }
      expect(isStreamStateError(err, 'CORRUPT'), `${where}: ${String(err)}`).toBe(true);
      expect((err as Error).message).toMatch(where);
    }
    expect(codeOf(() => decodeMetadata(frame(m)))).toBe('no error');
  });

  it('invalid JSON in a valid frame → CORRUPT', () => {
    const json = Buffer.from('{"checkpointId": ', 'utf8');
    const good = frame({});
    const head = Buffer.from(good.subarray(0, 12));
    head.writeUInt32BE(json.length, 8);
    const tail = Buffer.alloc(4);
    tail.writeUInt32BE(crc32(json));
    expect(codeOf(() => decodeMetadata(Buffer.concat([head, json, tail])))).toBe('CORRUPT');
  });

  it('encode refuses malformed metadata with INVALID_ARGUMENT', () => {
    const bad = { ...sampleMetadata(), checkpointId: Number.NaN } as CheckpointMetadata;
    expect(codeOf(() => encodeMetadata(bad))).toBe('INVALID_ARGUMENT');
  });
});
