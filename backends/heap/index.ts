export { HeapStateBackend, type HeapSnapshotOptions, type HeapStateBackendOptions } from './heap-state-backend.js';
export { HeapKeyedStateBackend, type HeapBackendTuning } from './heap-keyed-backend.js';
export { HeapTimerQueue } from './timers.js';
export type { SnapshotSlicing } from './time-slicer.js';
