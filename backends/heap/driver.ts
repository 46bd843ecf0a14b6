import type { BackendDriver } from '../../src/backend/driver.js';
import { HeapStateBackend } from './heap-state-backend.js';

/** The heap backends (the `memory` and `filesystem` presets record their preset's name) for offline tools. */
export const heapDriver: BackendDriver = {
  names: ['memory', 'filesystem', 'heap'],
  convertTargets: ['memory', 'filesystem'],
  create: (name) => new HeapStateBackend({ name }),
};
