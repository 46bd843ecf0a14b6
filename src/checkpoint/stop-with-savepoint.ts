import { SnapshotError, StreamStateError } from '../errors.js';
import type { SavepointTriggerOptions } from './external-snapshots.js';
import type { CompletedCheckpointInfo } from './metadata.js';

/**
 * Stop-with-savepoint and cancel-with-savepoint (Flink's `flink stop --savepointPath` and the
 * deprecated `cancel -s`): take a savepoint, then end the job, so that a new job started from the
 * savepoint continues with nothing lost and nothing duplicated.
 *
 * The coordinator cannot reach tasks, so the runtime plays its part through this interface. The
 * sequence (docs/RUNTIME.md, "Stop-with-savepoint"):
 *  0. the scheduler (opts.scheduler) starts no more checkpoints;
 *  1. the savepoint is triggered; the runtime injects its barrier at every source, and sources
 *     emit nothing after it (the savepoint is the last thing in every channel);
 *  2. subtasks snapshot and acknowledge as for any savepoint; the runtime aborts it on failure;
 *  3. the savepoint completed:
 *     - `stop`: the runtime tells every backend and sink that it completed
 *       (notifyCheckpointComplete: sinks commit what the savepoint covers; unlike an ordinary
 *       savepoint, which gets no such notice), then finishes its tasks; the coordinator shuts down
 *       with `finish`;
 *     - `cancel`: no notice (sinks leave their pre-committed transactions to the job restored
 *       from the savepoint, which commits them); tasks are cancelled; shutdown `cancel`;
 *  4. the savepoint failed: the runtime resumes its sources, the scheduler triggers again, the job keeps running, and the
 *     caller gets STOP_WITH_SAVEPOINT_FAILED (its `cause` says why).
 */

export type StopMode = 'stop' | 'cancel';

/** What a stop-with-savepoint needs from the savepoint side of the coordinator. */
export interface SavepointTrigger<P> {
  triggerSavepoint(opts: SavepointTriggerOptions): P;
  shutdown(how: 'cancel' | 'finish'): Promise<void>;
}

/** The runtime's part (see the sequence above). */
export interface StopWithSavepointRuntime<P> {
  /** Inject the savepoint's barrier at every source; sources emit nothing after it until resume(). */
  injectTerminalBarrier(savepoint: P): void | Promise<void>;
  /** The savepoint failed: sources go on, the job keeps running. */
  resume(savepoint: P, error: StreamStateError): void | Promise<void>;
  /** `stop` only: the savepoint completed; notifyCheckpointComplete(id) on every backend, sinks commit. */
  notifyComplete(savepoint: CompletedCheckpointInfo): void | Promise<void>;
  /** End every task (`stop`: finish; `cancel`: cancel) and close its backends. */
  terminate(mode: StopMode): void | Promise<void>;
}

/** What a stop-with-savepoint needs from the CheckpointScheduler (scheduler.ts). */
export interface SuspendableTriggering {
  suspendTriggering(): void;
  resumeTriggering(): void;
}

export interface StopWithSavepointOptions extends SavepointTriggerOptions {
  /** Default `stop`. */
  readonly mode?: StopMode;
  /**
   * The job's CheckpointScheduler: it starts no checkpoint from the moment the stop begins (a
   * checkpoint after the final savepoint's barrier could never complete, sources emit nothing
   * after it), and goes on when the savepoint fails and the job resumes. Pending checkpoints keep
   * their timeouts. Leave it out only when nothing else triggers checkpoints meanwhile.
   */
  readonly scheduler?: SuspendableTriggering;
}

/**
 * Runs a stop- or cancel-with-savepoint against `coordinator` with the runtime's help. Resolves
 * with the savepoint (its pointer is where to restore from) once the job has ended; rejects with
 * SnapshotError STOP_WITH_SAVEPOINT_FAILED when the savepoint failed (the job was resumed and
 * keeps running), or with the trigger's own error when it could not even start (the job was
 * never paused).
 */
export async function stopWithSavepoint<
  P extends { readonly checkpointId: number; readonly completion: Promise<CompletedCheckpointInfo> },
>(
  coordinator: SavepointTrigger<P>,
  runtime: StopWithSavepointRuntime<P>,
  opts: StopWithSavepointOptions = {},
): Promise<CompletedCheckpointInfo> {
  const mode = opts.mode ?? 'stop';
  if (mode !== 'stop' && mode !== 'cancel') {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `stop-with-savepoint mode must be 'stop' or 'cancel'; got ${JSON.stringify(mode)}.`,
    );
  }
  const savepointOptions: SavepointTriggerOptions = {
    format: opts.format,
    target: opts.target,
    targetDir: opts.targetDir,
  };
  opts.scheduler?.suspendTriggering();
  let savepoint: P;
  try {
    savepoint = coordinator.triggerSavepoint(savepointOptions);
  } catch (err) {
    opts.scheduler?.resumeTriggering(); // never paused: the job goes on as before
    throw err;
  }
  let info: CompletedCheckpointInfo;
  try {
    await runtime.injectTerminalBarrier(savepoint);
    info = await savepoint.completion;
  } catch (err) {
    const error = new SnapshotError(
      'STOP_WITH_SAVEPOINT_FAILED',
      `${mode === 'stop' ? 'stop' : 'cancel'}-with-savepoint: savepoint ${savepoint.checkpointId} failed (${err instanceof Error ? err.message : String(err)}). ` +
        'The job was not stopped and keeps running; fix the cause (see `cause`) and try again.',
      { cause: err },
    );
    await runtime.resume(savepoint, error);
    opts.scheduler?.resumeTriggering();
    throw error;
  }
  if (mode === 'stop') {
    await runtime.notifyComplete(info);
    await runtime.terminate('stop');
    await coordinator.shutdown('finish');
  } else {
    await runtime.terminate('cancel');
    await coordinator.shutdown('cancel');
  }
  return info;
}
