import { describeBackendConformance } from 'streamstate/conformance';
import { memory } from '../../backends/memory/index.js';

// The memory preset: heap state, in-process checkpoint storage (small snapshots end up inline).
describeBackendConformance('memory', () => memory());
