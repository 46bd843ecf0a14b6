import { randomBytes } from 'node:crypto';
import { presetStorage } from '../backend/preset.js';
import { CheckpointCoordinator, type RestorePlan } from '../checkpoint/coordinator.js';
import { ManualClock } from '../checkpoint/scheduler-clock.js';
import { resolveSchedulerOptions } from '../checkpoint/scheduler-options.js';
import type { CheckpointStorage } from '../checkpoint/storage.js';
import { isStreamStateError, StreamStateError } from '../errors.js';
import { checkParallelism, DEFAULT_MAX_PARALLELISM } from '../keygroups/key-groups.js';
import { defaultSerializer } from '../serializers/builtins.js';
import { checkpointingMode } from './checkpointing-mode.js';
import { Attempt, type AttemptConfig, type AttemptShape, type RunTotals } from './attempt.js';
import { CommittedOutput } from './committed-output.js';
import { eventListener, InjectedCrash, isPipelineEventType, type CrashPredicate } from './events.js';
import type { PipelineJob, PipelineResult, RestoreRecord, RunOptions } from './pipeline.js';
import { SeededRandom } from './rng.js';

/**
 * Runs a job to the end of its input in process: checkpoints every `checkpointEvery` source records
 * (or on the CheckpointScheduler's schedule, `checkpointing`), crashes where told to, and after each crash discards every subtask and recovers from the latest
 * completed checkpoint (possibly at another parallelism). Deterministic per seed, except for when
 * asynchronous snapshot parts finish relative to record processing.
 */
export async function runPipeline<IN, K, OUT>(
  job: PipelineJob<IN, K, OUT>,
  options: RunOptions<OUT>,
): Promise<PipelineResult<OUT>> {
  validate(job, options);
  const storage = options.checkpointStorage ?? presetStorage(options.backend);
  if (!storage) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `state backend '${options.backend.name}' brings no checkpoint storage; pass options.checkpointStorage (e.g. localCheckpointStorage(dir)).`,
    );
  }
  const maxParallelism = job.maxParallelism ?? DEFAULT_MAX_PARALLELISM;
  const output = options.output ?? new CommittedOutput<OUT>();
  const cfg: AttemptConfig<IN, K, OUT> = {
    jobId: job.jobId ?? `job-${randomBytes(8).toString('hex')}`,
    input: job.input ?? [],
    source: job.source ?? null,
    sink: job.sink ?? null,
    keyBy: job.keyBy,
    keySerializer: job.keySerializer ?? defaultSerializer<K>(),
    process: job.process,
    maxParallelism,
    ids: {
      source: job.operatorIds?.source ?? 'source',
      keyed: job.operatorIds?.keyed ?? 'keyed',
      sink: job.operatorIds?.sink ?? 'sink',
    },
    backend: options.backend,
    checkpointEvery: options.checkpointEvery,
    checkpointing: options.checkpointing
      ? { options: options.checkpointing, clock: options.checkpointing.clock ?? new ManualClock(0) }
      : null,
    channelCapacity: options.channelCapacity ?? 64,
    mode: checkpointingMode(options.checkpointingMode),
    slowSink: options.slowSink ?? 1,
    output,
    rng: new SeededRandom(options.seed ?? 1),
    crash: crashPredicate(options.crashAt),
    events: eventListener(options.onEvent, options.eventTypes),
    ...(options.clock ? { clock: options.clock } : {}),
    requests: { savepoints: [...(options.savepoints ?? [])], stop: options.stopWithSavepoint ?? null },
  };
  const totals: RunTotals = {
    recordsProcessed: 0,
    recordsEmitted: 0,
    bytesWritten: 0,
    completed: [],
    aborted: [],
    savepoints: [],
    savepointFailures: [],
    stopped: null,
  };
  const restoredFrom: RestoreRecord[] = [];
  const maxRestarts = options.maxRestarts ?? 10;
  let crashes = 0;

  for (let attemptNo = 0; ; attemptNo++) {
    const shape = shapeOf(job, options, attemptNo, crashes);
    checkParallelism(maxParallelism, shape.parallelism);
    const coordinator = new CheckpointCoordinator({
      jobId: cfg.jobId,
      storage,
      backendName: options.backend.name,
      operators: [
        { operatorId: cfg.ids.source, parallelism: shape.sourceParallelism, maxParallelism },
        { operatorId: cfg.ids.keyed, parallelism: shape.parallelism, maxParallelism },
        { operatorId: cfg.ids.sink, parallelism: shape.sinkParallelism, maxParallelism },
      ],
      numRetained: options.numRetainedCheckpoints ?? 1,
      onCancel: 'retain',
      // Recovering its own checkpoints, the job owns their files (Flink's failover works the same way);
      // a snapshot it was started from (restoreFrom) stays its owner's.
      restoreMode: options.restoreFrom === undefined ? 'claim' : 'no-claim',
      ...(options.savepointLocation ? { savepoints: options.savepointLocation } : {}),
      // After a crash in this process the previous attempt is known to be gone: its leftovers need
      // no grace period (docs/RUNTIME.md, "Fencing").
      ...(attemptNo > 0 ? { fencing: { minAgeMs: 0 } } : {}),
    });
    // restore() also starts the coordinator (loads retained checkpoints, continues ids); a fresh start ignores what it found.
    // Started from a snapshot: until this job completes a checkpoint of its own, every attempt restores that snapshot.
    const fromSnapshot =
      options.restoreFrom !== undefined &&
      (attemptNo === 0 || (await storage.listCompletedCheckpoints(cfg.jobId)).length === 0)
        ? options.restoreFrom
        : undefined;
    const found = await coordinator.restore(fromSnapshot);
    const plan: RestorePlan | null = attemptNo > 0 || options.resume || fromSnapshot !== undefined ? found : null;
    if (attemptNo > 0 || plan) {
      const record = restoreRecord(storage, plan, shape);
      restoredFrom.push(record);
      cfg.events.listener?.({
        type: 'restored',
        attempt: attemptNo,
        checkpointId: record.checkpointId,
        pointer: record.pointer,
        parallelism: shape.parallelism,
        sourceParallelism: shape.sourceParallelism,
      });
    }
    const attempt = new Attempt(cfg, shape, coordinator, totals);
    try {
      await attempt.start(plan);
      await attempt.run();
      await attempt.finish();
      await coordinator.shutdown('finish');
      return {
        jobId: cfg.jobId,
        output,
        committed: output.records(),
        checkpointsCompleted: totals.completed,
        checkpointsAborted: totals.aborted,
        restoredFrom,
        bytesWritten: totals.bytesWritten,
        recordsProcessed: totals.recordsProcessed,
        recordsEmitted: totals.recordsEmitted,
        crashes,
        attempts: attemptNo + 1,
        savepoints: totals.savepoints,
        savepointFailures: totals.savepointFailures,
        stopped: totals.stopped,
      };
    } catch (err) {
      await attempt.teardown();
      await coordinator.shutdown('cancel');
      // The failure policy failed the job (tolerableFailures): a failover from the latest checkpoint, like a crash.
      const jobFailure = isStreamStateError(err) && err.code === 'TOLERABLE_FAILURES_EXCEEDED';
      if (!(err instanceof InjectedCrash) && !jobFailure) throw err;
      crashes++;
      cfg.events.listener?.({ type: 'crash', attempt: attemptNo, reason: (err as Error).message });
      if (crashes > maxRestarts && jobFailure) throw err;
      if (crashes > maxRestarts) {
        throw new StreamStateError(
          'INVALID_ARGUMENT',
          `the pipeline crashed ${crashes} times (maxRestarts = ${maxRestarts}); the last crash: ${err.message}`,
          {
            cause: err,
          },
        );
      }
    }
  }
}

function validate<IN, K, OUT>(job: PipelineJob<IN, K, OUT>, options: RunOptions<OUT>): void {
  const bad = (what: string): never => {
    throw new StreamStateError('INVALID_ARGUMENT', what);
  };
  if (job.source !== undefined) {
    if (job.input !== undefined) bad('give job.input or job.source, not both.');
  } else if (!Array.isArray(job.input) || job.input.length === 0 || !job.input.every((p) => Array.isArray(p))) {
    bad('job.input must be a non-empty array of partitions (arrays of records), or give job.source.');
  }
  if (job.sink !== undefined && options.output !== undefined) {
    bad('give options.output or job.sink, not both: an external sink commits to its own system.');
  }
  for (const [name, v] of [
    ['job.parallelism', job.parallelism],
    ['job.sourceParallelism', job.sourceParallelism],
    ['job.sinkParallelism', job.sinkParallelism],
    ['options.checkpointEvery', options.checkpointEvery],
    ['options.channelCapacity', options.channelCapacity],
    ['options.slowSink', options.slowSink],
  ] as const) {
    if (v !== undefined && !(Number.isInteger(v) && v >= 1))
      bad(`${name} must be a positive integer, got ${String(v)}.`);
  }
  const types: unknown = options.eventTypes;
  if (types !== undefined && !(Array.isArray(types) && types.every(isPipelineEventType)))
    bad(
      `options.eventTypes must be an array of PipelineEvent types (e.g. ['record', 'crash']), got ${JSON.stringify(types)}.`,
    );
  if (options.checkpointEvery === undefined && options.checkpointing === undefined)
    bad(
      'options.checkpointEvery or options.checkpointing is required: checkpoint after every how many source records, or on which schedule?',
    );
  if (options.checkpointEvery !== undefined && options.checkpointing !== undefined)
    bad('give options.checkpointEvery (count-based) or options.checkpointing (scheduled), not both.');
  if (options.checkpointing !== undefined) {
    const { clock, ...rest } = options.checkpointing;
    if (rest.interval === undefined)
      bad('options.checkpointing.interval is required: how many virtual ms (scheduling steps) between checkpoints?');
    if (clock !== undefined && !(clock instanceof ManualClock))
      bad('options.checkpointing.clock must be a ManualClock: the runner moves it one ms per scheduling step.');
    resolveSchedulerOptions(rest); // InvalidCheckpointOptionError (INVALID_CHECKPOINT_OPTION) names the option to change
  }
}

function pick(v: number | ((crash: number) => number) | undefined, crash: number, fallback: number): number {
  if (v === undefined) return fallback;
  return typeof v === 'function' ? v(crash) : v;
}

function shapeOf<IN, K, OUT>(
  job: PipelineJob<IN, K, OUT>,
  options: RunOptions<OUT>,
  attempt: number,
  crashes: number,
): AttemptShape {
  const first = attempt === 0;
  const parallelism = first ? job.parallelism : pick(options.recoverWithParallelism, crashes, job.parallelism);
  const sourceParallelism = first
    ? (job.sourceParallelism ?? job.parallelism)
    : pick(options.recoverWithSourceParallelism, crashes, job.sourceParallelism ?? job.parallelism);
  const sinkParallelism = job.sinkParallelism ?? parallelism;
  for (const [name, v] of [
    ['recovery parallelism', parallelism],
    ['recovery source parallelism', sourceParallelism],
  ] as const) {
    if (!(Number.isInteger(v) && v >= 1))
      throw new StreamStateError('INVALID_ARGUMENT', `${name} must be a positive integer, got ${v}.`);
  }
  return { attempt, parallelism, sourceParallelism, sinkParallelism };
}

function crashPredicate(crashAt: RunOptions<unknown>['crashAt']): CrashPredicate | null {
  if (crashAt === undefined) return null;
  if (typeof crashAt === 'function') return crashAt;
  // Each number fires once: the crashed record is not counted as processed, so its number comes round again in the replay.
  const at = new Set(typeof crashAt === 'number' ? [crashAt] : crashAt);
  return (e) => e.type === 'record' && at.delete(e.recordsProcessed);
}

function restoreRecord(storage: CheckpointStorage, plan: RestorePlan | null, shape: AttemptShape): RestoreRecord {
  const pointer = plan ? plan.pointer : null;
  return {
    attempt: shape.attempt,
    checkpointId: plan ? plan.checkpointId : null,
    pointer,
    // A snapshot outside the storage (restoreFrom) is named by its absolute path or URL already.
    location:
      pointer === null
        ? null
        : /^(\/|[a-z][a-z0-9+.-]*:\/\/)/i.test(pointer)
          ? pointer
          : `${storage.location.replace(/\/+$/, '')}/${pointer}`,
    parallelism: shape.parallelism,
    sourceParallelism: shape.sourceParallelism,
  };
}
