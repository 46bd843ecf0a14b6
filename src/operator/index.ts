export { HeapOperatorStateBackend, createHeapOperatorStateBackend } from './heap-operator-backend.js';
export { HeapBroadcastState, HeapOperatorListState } from './operator-states.js';
export { OPERATOR_STREAM_MAGIC, OPERATOR_STREAM_VERSION } from './operator-stream.js';
