import { describe, expect, it } from 'vitest';
import { decodeSegment, encodeSegment, encodeSegmentParts } from '../../src/changelog/segment-format.js';

const header = {
  logId: 'log-1',
  jobId: 'job',
  operatorId: 'op',
  subtaskIndex: 0,
  backend: 'memory',
  maxParallelism: 128,
  keyGroupRange: { start: 0, end: 127 },
  fromSeq: 5,
  toSeq: 7,
  records: 3,
};

describe('changelog segment parts', () => {
  it('are the segment’s bytes in order, with the body itself in the middle (not a copy)', () => {
    const body = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 31) & 0xff));
    const parts = encodeSegmentParts(header, body);
    expect(parts[1]).toBe(body);
    const joined = Buffer.concat(parts);
    const decoded = decodeSegment(joined, header, 'test segment');
    expect(decoded.body.equals(body)).toBe(true);
    expect(decoded.header).toEqual(header);
    expect(encodeSegment(header, body).equals(joined)).toBe(true);
  });
});
