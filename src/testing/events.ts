import type { RecordOrigin } from './channels.js';

/**
 * What happens inside a pipeline run, in order. Passed to `onEvent` (tracing, assertions) and to a
 * crash predicate (`crashAt`), which can fail the run at any of them.
 */
export type PipelineEvent =
  /** A source subtask emitted a record towards keyed subtask `target`. */
  | {
      readonly type: 'emit';
      readonly attempt: number;
      readonly subtaskIndex: number;
      readonly origin: RecordOrigin;
      readonly target: number;
    }
  /** A source subtask injected the barrier of `checkpointId` into its outputs. */
  | {
      readonly type: 'barrier';
      readonly attempt: number;
      readonly subtaskIndex: number;
      readonly checkpointId: number;
      /** The attempt's scheduling step (its deterministic clock). */
      readonly step: number;
    }
  /**
   * The keyed operator is about to process a record. `recordsProcessed` counts every record processed
   * since the run started, this one included (replays after a crash count again).
   */
  | {
      readonly type: 'record';
      readonly attempt: number;
      readonly subtaskIndex: number;
      readonly origin: RecordOrigin;
      readonly recordsProcessed: number;
      /** Subtask snapshots whose asynchronous part is still running. */
      readonly inFlightSnapshots: number;
    }
  /** A restore from an unaligned checkpoint handed `records` in-flight records to the new subtasks (before any new input). */
  | { readonly type: 'in-flight-restored'; readonly attempt: number; readonly records: number }
  /** A subtask finished the synchronous part of its snapshot; the asynchronous part now runs. */
  | {
      readonly type: 'snapshot';
      readonly attempt: number;
      readonly operatorId: string;
      readonly subtaskIndex: number;
      readonly checkpointId: number;
    }
  /** The coordinator completed a checkpoint (its _metadata is written); backends and the sink are not notified yet. */
  | {
      readonly type: 'checkpoint-completed';
      readonly attempt: number;
      readonly checkpointId: number;
      readonly pointer: string;
      /** The attempt's scheduling step when it completed: minus the first barrier's step, its duration in steps (bench/unaligned.ts). */
      readonly step: number;
    }
  | {
      readonly type: 'checkpoint-aborted';
      readonly attempt: number;
      readonly checkpointId: number;
      readonly reason: string;
    }
  /** A savepoint completed (`pointer`: where to restore from). Nothing is notified or committed for an ordinary savepoint. */
  | {
      readonly type: 'savepoint-completed';
      readonly attempt: number;
      readonly checkpointId: number;
      readonly pointer: string;
      readonly stop: boolean;
    }
  | {
      readonly type: 'savepoint-failed';
      readonly attempt: number;
      readonly checkpointId: number | null;
      readonly reason: string;
      readonly stop: boolean;
    }
  /** The job ended by a stop- or cancel-with-savepoint. */
  | {
      readonly type: 'stopped';
      readonly attempt: number;
      readonly mode: 'stop' | 'cancel';
      readonly checkpointId: number;
    }
  /** The sink committed a pre-committed transaction to the CommittedOutput (not emitted for idempotent repeats). */
  | { readonly type: 'commit'; readonly attempt: number; readonly transactionId: string; readonly checkpointId: number }
  | { readonly type: 'crash'; readonly attempt: number; readonly reason: string }
  /** A new attempt started, restored from `checkpointId` (null: from scratch). */
  | {
      readonly type: 'restored';
      readonly attempt: number;
      readonly checkpointId: number | null;
      readonly pointer: string | null;
      readonly parallelism: number;
      readonly sourceParallelism: number;
    };

export type CrashPredicate = (event: PipelineEvent) => boolean;

export type PipelineEventType = PipelineEvent['type'];

/** Every event type (a Record, so that a new type must be listed here to compile), for checking RunOptions.eventTypes. */
const EVENT_TYPES: Readonly<Record<PipelineEventType, true>> = {
  emit: true,
  barrier: true,
  record: true,
  'in-flight-restored': true,
  snapshot: true,
  'checkpoint-completed': true,
  'checkpoint-aborted': true,
  'savepoint-completed': true,
  'savepoint-failed': true,
  stopped: true,
  commit: true,
  crash: true,
  restored: true,
};

/** Whether `type` names a PipelineEvent type. */
export function isPipelineEventType(type: unknown): type is PipelineEventType {
  return typeof type === 'string' && Object.hasOwn(EVENT_TYPES, type);
}

/** What the runtime calls with its events: the listener (null when none), and whether it hears a type at all. */
export interface EventListener {
  readonly listener: ((event: PipelineEvent) => void) | null;
  hears(type: PipelineEventType): boolean;
}

/**
 * `onEvent` restricted to `types` (every type when undefined). One home for the filter: the runtime
 * asks hears() before building a per-record event ('emit', 'record'), so those are not built when
 * the listener does not want them (and no crash predicate looks at them).
 */
export function eventListener(
  onEvent: ((event: PipelineEvent) => void) | undefined,
  types: readonly PipelineEventType[] | undefined,
): EventListener {
  if (onEvent === undefined || types?.length === 0) return { listener: null, hears: () => false };
  if (types === undefined) return { listener: onEvent, hears: () => true };
  const wanted = new Set<PipelineEventType>(types);
  return {
    listener: (event) => {
      if (wanted.has(event.type)) onEvent(event);
    },
    hears: (type) => wanted.has(type),
  };
}

/** The failure a crash injection throws. Only this kind of failure is recovered from; any other error fails the run. */
export class InjectedCrash extends Error {
  constructor(readonly event: PipelineEvent) {
    super(`injected crash at ${describeEvent(event)}`);
    this.name = 'InjectedCrash';
  }
}

export function describeEvent(e: PipelineEvent): string {
  switch (e.type) {
    case 'record':
      return `record #${e.recordsProcessed} (attempt ${e.attempt}, subtask ${e.subtaskIndex})`;
    case 'snapshot':
      return `snapshot of checkpoint ${e.checkpointId} by ${e.operatorId}[${e.subtaskIndex}] (attempt ${e.attempt})`;
    case 'checkpoint-completed':
      return `completion of checkpoint ${e.checkpointId}, before the sink commit (attempt ${e.attempt})`;
    default:
      return `${e.type} (attempt ${e.attempt})`;
  }
}
