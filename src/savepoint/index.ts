export {
  CanonicalKeyGroupsWriter,
  canonicalHeader,
  canonicalStates,
  normalizeSerializerSnapshot,
  writeCanonicalSection,
  type SourceIds,
} from '../format/canonical-layout.js';
export {
  DEFAULT_GC_MIN_AGE_MS,
  deleteConvertLeftovers,
  deleteGarbage,
  findConvertLeftovers,
  findGarbage,
  findGarbageIfJob,
  isDataFileName,
  listJobCheckpoints,
  liveLease,
  type ConvertLeftover,
  type ConvertLeftovers,
  type GarbageFile,
  type GarbageReport,
  type GcOptions,
  type JobCheckpoints,
  type KeptFile,
} from './checkpoint-dir.js';
export { checkKeyGroupCoverage, keyGroupCoverageProblems } from './coverage.js';
export { opaqueDescriptor } from '../changelog/opaque-descriptor.js';
export { changelogInnerBackend, restoreChangelogSubtask } from './changelog-source.js';
export {
  CONVERT_LEFTOVER,
  convertSnapshot,
  convertTempNames,
  FORMAT_LEVEL_LAYOUTS,
  planParallelism,
  type ConvertOptions,
  type ConvertProgress,
  type ConvertResult,
  type TemporaryPaths,
} from './convert.js';
export { dumpOperator, keyGroupsHandlesOf, type DumpOptions, type DumpRecord } from './dump.js';
export {
  formatBytes,
  formatReport,
  inspectMetadata,
  keyGroupsHandlesIn,
  streamBytes,
  type HandleReport,
  type KeyedStateReport,
  type OperatorReport,
  type OperatorStateReport,
  type SnapshotReport,
} from './inspect.js';
export {
  isRemotePath,
  isS3Path,
  locateCheckpointDir,
  locateSnapshot,
  openSnapshotDestination,
  type LocateOptions,
  type LocatedCheckpointDir,
  type LocatedSnapshot,
  type S3ConnectionOptions,
  type SnapshotDestination,
} from './locate.js';
export {
  copySnapshot,
  type CopySnapshotOptions,
  type CopySnapshotResult,
  type SnapshotLocation,
} from './copy-snapshot.js';
export { opaqueSerializer } from '../serializers/opaque.js';
export { builtinFor, decodeToJson, jsonDecoderFor, toJson, type JsonValue } from './values.js';
export {
  verifySnapshot,
  type ProblemCategory,
  type VerifyProblem,
  type VerifyProgress,
  type VerifyResult,
} from './verify.js';
export {
  checkNewMaxParallelism,
  rehashKeyedState,
  type RehashOptions,
  type RehashResult,
  type RehashSource,
} from './rehash.js';
export { KeyGroupSpill, planSpillBuckets, type SpillBucket, type SpilledKeyGroup } from './rehash-spill.js';
export {
  keyGroupSizes,
  type HistogramBucket,
  type KeyGroupSize,
  type KeyGroupSizesOptions,
  type OperatorKeyGroups,
  type SubtaskShare,
} from './key-group-sizes.js';
export { formatKeyGroupSizes } from './key-group-sizes-text.js';
