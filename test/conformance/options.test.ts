import {
  type BackendConformanceOptions,
  type BlobStoreSupports,
  describeBackendConformance,
  describeBlobStore,
} from 'streamstate/conformance';
import { MemoryBlobStore } from 'streamstate';
import { describe, expect, it } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import { expectThrowsCode } from '../support/errors.js';

// A typo in the options must fail the test file at once, not run or skip the wrong tests. These
// calls throw before they register anything (a valid call inside a test would be a vitest error).
const bad = (options: unknown) => () =>
  describeBackendConformance('bad options', () => memory(), options as BackendConformanceOptions);

describe('describeBackendConformance rejects options it does not know', () => {
  it('an unknown capability, naming the known ones', () => {
    const err = expectThrowsCode(bad({ supports: { tll: false } }), 'INVALID_ARGUMENT');
    expect(err.message).toContain('supports.tll');
    expect(err.message).toContain('ttl, canonicalSavepoints, rescaling, operatorState');
  });

  it('a capability that is not true or false', () => {
    expect(expectThrowsCode(bad({ supports: { ttl: 'no' } }), 'INVALID_ARGUMENT').message).toContain('"no"');
  });

  it('an unknown parity behaviour in skip', () => {
    const err = expectThrowsCode(bad({ skip: ['ttl.everything'] }), 'INVALID_ARGUMENT');
    expect(err.message).toContain("'ttl.everything'");
    expect(err.message).toContain('map-keys.bytes-decide');
  });

  it('an unknown or empty list of sections', () => {
    expect(expectThrowsCode(bad({ sections: ['keyd'] }), 'INVALID_ARGUMENT').message).toContain("'keyd'");
    expect(expectThrowsCode(bad({ sections: [] }), 'INVALID_ARGUMENT').message).toContain('sections is empty');
  });

  it.each([[[0, 2]], [[2]], [[2, 129]], [[1.5, 2]], ['2,4']])('a rescaling case %j', (pair) => {
    expect(expectThrowsCode(bad({ rescaling: [pair] }), 'INVALID_ARGUMENT').message).toContain('rescaling:');
  });
});

describe('describeBlobStore rejects a manifest it does not know', () => {
  const store = async () => ({ store: new MemoryBlobStore(), cleanup: async () => undefined });
  it('an unknown capability, or one that is not true or false', () => {
    const unknown = () => describeBlobStore('bad', store, { putfile: true } as BlobStoreSupports);
    expect(expectThrowsCode(unknown, 'INVALID_ARGUMENT').message).toContain('supports.putfile');
    const notBoolean = () => describeBlobStore('bad', store, { putFile: 1 } as unknown as BlobStoreSupports);
    expect(expectThrowsCode(notBoolean, 'INVALID_ARGUMENT').message).toContain('true or false');
  });
});
