import { describeBackendConformance } from 'streamstate/conformance';
import { memory } from '../../backends/memory/index.js';
import { changelog } from '../../src/changelog/index.js';

// changelog(memory): materialize at every checkpoint that has changes (exercises background
// materialization + truncation), and upload the log early past 4 KiB (exercises preemptive persist).
describeBackendConformance('changelog(memory)', async () => ({
  backend: changelog({ backend: memory(), materializationIntervalMs: 0, preemptivePersistBytes: 4096 }),
  cleanup: async () => {},
}));
