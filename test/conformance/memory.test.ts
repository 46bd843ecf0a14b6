import { memory } from '../../backends/memory/index.js';
import { describeBackendConformance } from './all.js';

// The memory preset: heap state, in-process checkpoint storage (small snapshots end up inline).
describeBackendConformance('memory', async () => ({ backend: memory(), cleanup: async () => {} }));
