export {
  changelog,
  restorePlainFromChangelog,
  withChangelogRestore,
  DEFAULT_MATERIALIZATION_INTERVAL_MS,
  DEFAULT_PREEMPTIVE_PERSIST_BYTES,
} from './backend.js';
export type { ChangelogOptions, ChangelogStateBackend } from './backend.js';
export { ChangelogKeyedStateBackend } from './keyed-backend.js';
export { hasChangelogHandles, openChangelogKeyedBackend } from './restore.js';
export { CHANGELOG_HANDLE_TYPE, isChangelogHandle, validateChangelogHandle } from './handle.js';
export type { ChangelogStateHandle, ChangelogLogRef, ChangelogSegmentRef, ChangelogLogIdentity } from './handle.js';
export { ChangeOp } from './records.js';
export { SEGMENT_MAGIC, SEGMENT_VERSION, decodeSegment, encodeSegment } from './segment-format.js';
export type { SegmentHeader } from './segment-format.js';
