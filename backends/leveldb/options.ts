import { StreamStateError } from '../../src/errors.js';
import type { LevelDbBackendOptions } from './backend.js';

const isCount = (n: unknown, min: number): boolean => typeof n === 'number' && Number.isSafeInteger(n) && n >= min;

/**
 * Checks the leveldb() options when the preset is made, so a typo fails at start-up with
 * INVALID_ARGUMENT instead of inside LevelDB (which clips or rejects some values) on first use.
 */
export function checkLevelDbOptions(opts: LevelDbBackendOptions): void {
  const bad = (what: string, value: unknown): never => {
    throw new StreamStateError('INVALID_ARGUMENT', `leveldb({ ${what} }); got ${String(value)}.`);
  };
  if (opts.workingDir !== undefined && !(typeof opts.workingDir === 'string' && opts.workingDir.length > 0))
    bad('workingDir must be a non-empty directory path', opts.workingDir);
  if (opts.incremental !== undefined && typeof opts.incremental !== 'boolean')
    bad('incremental must be true or false', opts.incremental);
  if (opts.cacheSize !== undefined && !isCount(opts.cacheSize, 0))
    bad('cacheSize must be an integer number of bytes, 0 or more', opts.cacheSize);
  if (opts.writeBufferBytes !== undefined && !isCount(opts.writeBufferBytes, 1))
    bad('writeBufferBytes must be a positive integer number of bytes', opts.writeBufferBytes);
  if (opts.memtableBytes !== undefined && !isCount(opts.memtableBytes, 1))
    bad('memtableBytes must be a positive integer number of bytes', opts.memtableBytes);
  if (opts.instanceDir !== undefined && typeof opts.instanceDir !== 'function')
    bad('instanceDir must be a function of the subtask', opts.instanceDir);
  const ttl = opts.ttlCleanup;
  if (ttl !== undefined && ttl !== false) {
    if (typeof ttl !== 'object' || ttl === null)
      bad('ttlCleanup must be false or { rowsPerSweep, everyAccesses }', ttl);
    if (ttl.rowsPerSweep !== undefined && !isCount(ttl.rowsPerSweep, 1))
      bad('ttlCleanup.rowsPerSweep must be a positive integer', ttl.rowsPerSweep);
    if (ttl.everyAccesses !== undefined && !isCount(ttl.everyAccesses, 1))
      bad('ttlCleanup.everyAccesses must be a positive integer', ttl.everyAccesses);
  }
}
