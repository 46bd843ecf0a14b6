import { describe, expect, it } from 'vitest';
import { leveldb, type LevelDbOptions } from '../../backends/leveldb/index.js';
import { expectThrowsCode } from '../support/errors.js';

/** leveldb() checks its options when the preset is made: a typo fails at start-up, naming the option. */
describe('leveldb() options', () => {
  it.each<[string, unknown]>([
    ['workingDir', ''],
    ['workingDir', 42],
    ['incremental', 'yes'],
    ['cacheSize', -1],
    ['cacheSize', 1.5],
    ['writeBufferBytes', 0],
    ['writeBufferBytes', Number.NaN],
    ['memtableBytes', 0],
    ['memtableBytes', '16MB'],
    ['memtableBytes', Number.POSITIVE_INFINITY],
    ['instanceDir', '/tmp/x'],
    ['ttlCleanup', true],
    ['ttlCleanup', { rowsPerSweep: 0 }],
    ['ttlCleanup', { everyAccesses: -5 }],
  ])('rejects %s = %j with INVALID_ARGUMENT naming it', (option, value) => {
    const err = expectThrowsCode(() => leveldb({ [option]: value } as LevelDbOptions), 'INVALID_ARGUMENT');
    expect(err.message).toContain(option === 'ttlCleanup' && typeof value === 'object' ? 'ttlCleanup.' : option);
  });

  it('accepts every option at a legal value (without opening anything)', () => {
    const b = leveldb({
      workingDir: '/tmp/streamstate-options-test',
      incremental: false,
      cacheSize: 0,
      writeBufferBytes: 1,
      memtableBytes: 64 * 1024,
      infoLog: false,
      instanceDir: () => '/tmp/streamstate-options-test/x',
      ttlCleanup: { rowsPerSweep: 1, everyAccesses: 1 },
    });
    expect(b.name).toBe('leveldb');
    expect(leveldb({ ttlCleanup: false }).name).toBe('leveldb');
  });
});
