/**
 * streamstate/testing: a small, deterministic, in-process pipeline runner for exercising state
 * backends end to end —
 *
 *   replayable source (offsets in split-list operator state)
 *     --keyBy--> keyed stateful operator (parallelism > 1, keyed state from the job's StateBackend)
 *     --> exactly-once two-phase-commit sink (pre-committed transactions in operator state)
 *
 * with checkpoint barriers aligned across channels, a seeded scheduler, crash injection, and
 * recovery from the latest completed checkpoint at another parallelism; savepoints while running,
 * stop- and cancel-with-savepoint, and starting a job from any savepoint or checkpoint (restoreFrom).
 *
 *   const input = countingInput({ records: 10_000, keys: 100, partitions: 4 });
 *   const result = await runPipeline(countingJob(input, { parallelism: 4 }), {
 *     backend: filesystem({ checkpointDir }), checkpointEvery: 1_000, crashAt: 5_000, recoverWithParallelism: 3,
 *   });
 *   checkCounts(result.committed, input).ok; // true: every key's counts are exactly 1..n
 */
export { runPipeline } from './runner.js';
export type {
  PipelineJob,
  RunOptions,
  PipelineResult,
  RestoreRecord,
  SavepointRequest,
  StopWithSavepointRequest,
} from './pipeline.js';
export type { PipelineCheckpointing } from './scheduled-checkpoints.js';
export {
  ExternalSourceSubtask,
  type PipelineSource,
  type PipelineSourceAttempt,
  type PipelineSourceSubtaskContext,
} from './external-source.js';
export {
  ExternalSinkSubtask,
  type PipelineSink,
  type PipelineSinkSubtaskContext,
} from './external-sink.js';
export type { KeyedContext, ProcessFunction } from './keyed-operator.js';
export { CommittedOutput, type CommittedTransaction } from './committed-output.js';
export {
  InjectedCrash,
  describeEvent,
  type PipelineEvent,
  type PipelineEventType,
  type CrashPredicate,
} from './events.js';
export {
  Channel,
  InputGate,
  type StreamElement,
  type RecordElement,
  type BarrierElement,
  type RecordOrigin,
  type GateOutput,
  type GateBarrier,
  type Alignment,
} from './channels.js';
export type { CheckpointingModeOptions } from './checkpointing-mode.js';
export { SeededRandom } from './rng.js';
export { SOURCE_OFFSETS_STATE, type PartitionOffset } from './source.js';
export { SINK_PENDING_STATE, type PendingTransaction } from './sink.js';
export {
  countingInput,
  countingJob,
  checkCounts,
  type CountInput,
  type CountOutput,
  type CountingInputOptions,
  type CountCheck,
} from './counting-job.js';
