/**
 * streamstate/processor: the State Processor API (read, bootstrap and transform savepoints and
 * checkpoints offline, without the job). README "Savepoint tools" and examples/processor.ts.
 */
export { UndecodedBytes, type Decoded } from './decode.js';
export {
  openSnapshot,
  OperatorReader,
  SnapshotReader,
  type KeyedList,
  type KeyedMapEntry,
  type KeyedStateInfo,
  type KeyedTimer,
  type KeyedValue,
  type KeyRecord,
  type MapReadOptions,
  type OpenSnapshotOptions,
  type OperatorInfo,
  type OperatorStateInfo,
  type ValueReadOptions,
} from './reader.js';
export {
  bootstrapOperator,
  bootstrapSavepoint,
  broadcastEntries,
  keyedLists,
  keyedMaps,
  keyedTimers,
  keyedValues,
  operatorList,
  type BootstrapOperator,
  type BootstrapOptions,
  type Entries,
  type KeyedStateInput,
  type ListInput,
  type MapInput,
  type OperatorStateInput,
  type TimerInput,
  type ValueInput,
} from './bootstrap.js';
export {
  mapValues,
  mergeSavepoints,
  transformSavepoint,
  type MapValuesEdit,
  type SavepointEdit,
  type TransformOptions,
  type ValueContext,
} from './transform.js';
export { SavepointOutput, type SavepointOutputOptions } from './savepoint-output.js';
export { InputError, parseBootstrapLines, readBootstrapFile } from './jsonl.js';
