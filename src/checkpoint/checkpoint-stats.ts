import { type Channel, channel } from 'node:diagnostics_channel';
import { referencedFiles } from '../backend/handles.js';
import { StreamStateError } from '../errors.js';
import type { CheckpointFailureReason } from './acknowledgement.js';
import type { CheckpointMetadataStats, SubtaskStatsRecord } from './metadata.js';
import type { RestoreMode } from './shared-registry.js';

/**
 * Checkpoint statistics (Flink's CheckpointStatsTracker): per checkpoint its trigger time,
 * end-to-end duration, per-subtask durations and bytes, failure reason; counts, the latest
 * completed, failed and restored checkpoint, and a bounded history. Every change is an event for
 * the typed listeners and on node:diagnostics_channel (CHECKPOINT_CHANNELS). The coordinator
 * reports into it; it decides nothing.
 */

export type CheckpointStatus = 'in-progress' | 'completed' | 'failed';

/** One checkpoint or savepoint as the statistics see it. */
export interface CheckpointStats {
  readonly checkpointId: number;
  readonly jobId: string;
  readonly kind: 'checkpoint' | 'savepoint';
  readonly status: CheckpointStatus;
  /**
   * Where its _metadata is (completed) or would have been: store-relative (`<jobId>/chk-7`), or
   * for a savepoint outside the checkpoint storage its target as given (absolute path or URL).
   */
  readonly pointer: string;
  /** ms since epoch (the coordinator's clock). */
  readonly triggerTimestamp: number;
  /** Acknowledgements it needs (subtasks of all operators). */
  readonly numSubtasks: number;
  readonly numAcknowledged: number;
  readonly latestAckTimestamp?: number;
  /** Completed: last acknowledgement − trigger. Failed: failure − trigger. In progress: absent. */
  readonly durationMs?: number;
  /** Sums over the acknowledged subtasks (SubtaskStatsRecord). */
  readonly bytesWritten: number;
  readonly fullSize: number;
  readonly bytesReused: number;
  readonly fileCount: number;
  readonly subtasks: readonly SubtaskStatsRecord[];
  /** Completed only: bytes of _metadata plus its exclusive files (CompletedCheckpointInfo.size). */
  readonly size?: number;
  readonly failureReason?: CheckpointFailureReason;
  readonly failureMessage?: string;
  readonly failureTimestamp?: number;
}

export interface RestoredCheckpointStats {
  readonly checkpointId: number;
  /** As given to restore(): store-relative, or the absolute path or URL of a snapshot outside the storage. */
  readonly pointer: string;
  readonly kind: 'checkpoint' | 'savepoint';
  readonly mode: RestoreMode;
  /** ms since epoch when restore() planned it. */
  readonly restoreTimestamp: number;
}

export interface CheckpointStatsCounts {
  readonly triggered: number;
  readonly inProgress: number;
  readonly completed: number;
  readonly failed: number;
  readonly restored: number;
}

export interface CheckpointStatsSnapshot {
  readonly jobId: string;
  readonly counts: CheckpointStatsCounts;
  readonly inProgress: readonly CheckpointStats[];
  readonly latestCompleted: CheckpointStats | null;
  readonly latestFailed: CheckpointStats | null;
  readonly latestRestored: RestoredCheckpointStats | null;
  /** Ended checkpoints and savepoints, newest first, at most `historySize`. */
  readonly history: readonly CheckpointStats[];
}

/** What listeners and diagnostics_channel subscribers receive. */
export type CheckpointEvent =
  | { readonly type: 'triggered'; readonly jobId: string; readonly checkpoint: CheckpointStats }
  | {
      readonly type: 'acknowledged';
      readonly jobId: string;
      readonly checkpoint: CheckpointStats;
      readonly subtask: SubtaskStatsRecord;
    }
  | { readonly type: 'completed'; readonly jobId: string; readonly checkpoint: CheckpointStats }
  | { readonly type: 'failed'; readonly jobId: string; readonly checkpoint: CheckpointStats }
  | { readonly type: 'restored'; readonly jobId: string; readonly restored: RestoredCheckpointStats }
  /** The scheduler's failure policy failed the job (more consecutive failures than tolerableFailures). */
  | {
      readonly type: 'job-failed';
      readonly jobId: string;
      readonly error: StreamStateError;
      readonly consecutiveFailures: number;
    };

export type CheckpointEventType = CheckpointEvent['type'];
export type CheckpointListener = (event: CheckpointEvent) => void;

/** node:diagnostics_channel names, one per event type; the message is the CheckpointEvent. */
export const CHECKPOINT_CHANNELS: Readonly<Record<CheckpointEventType, string>> = {
  triggered: 'streamstate:checkpoint:triggered',
  acknowledged: 'streamstate:checkpoint:acknowledged',
  completed: 'streamstate:checkpoint:completed',
  failed: 'streamstate:checkpoint:failed',
  restored: 'streamstate:checkpoint:restored',
  'job-failed': 'streamstate:checkpoint:job-failed',
};

/**
 * The channel objects, held for the life of the process. Node keeps a channel only weakly while
 * it has no subscribers, and on Node 20 the finalizer of a collected channel deletes the map entry
 * of a NEWER channel of the same name: a `subscribe(name)` that came after the collection would
 * then miss every event, because `channel(name)` hands the publisher a fresh channel. A channel the
 * publisher holds is never collected, so subscribers always find it.
 */
const PUBLISHERS = Object.fromEntries(
  Object.entries(CHECKPOINT_CHANNELS).map(([type, name]) => [type, channel(name)]),
) as Readonly<Record<CheckpointEventType, Channel>>;

/** Flink's web.checkpoints.history default. */
export const DEFAULT_STATS_HISTORY_SIZE = 10;

interface Tracked {
  readonly checkpointId: number;
  readonly kind: 'checkpoint' | 'savepoint';
  readonly pointer: string;
  readonly triggerTimestamp: number;
  readonly numSubtasks: number;
  readonly subtasks: SubtaskStatsRecord[];
}

export class CheckpointStatsTracker {
  private readonly listeners = new Set<CheckpointListener>();
  private readonly inProgress = new Map<number, Tracked>();
  private history: CheckpointStats[] = [];
  private latestCompleted: CheckpointStats | null = null;
  private latestFailed: CheckpointStats | null = null;
  private latestRestored: RestoredCheckpointStats | null = null;
  private triggered = 0;
  private completed = 0;
  private failed = 0;
  private restored = 0;

  constructor(
    readonly jobId: string,
    private readonly historySize = DEFAULT_STATS_HISTORY_SIZE,
    /** Where a listener's exception goes (listeners must not break checkpointing). */
    private readonly onListenerError: (err: unknown) => void = () => undefined,
  ) {
    if (!Number.isSafeInteger(historySize) || historySize < 0) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `statsHistorySize must be a non-negative integer, got ${String(historySize)}; use 0 to keep no history.`,
      );
    }
  }

  /** Calls `listener` with every event from now on; returns a function that unsubscribes. */
  addListener(listener: CheckpointListener): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  snapshot(): CheckpointStatsSnapshot {
    return {
      jobId: this.jobId,
      counts: {
        triggered: this.triggered,
        inProgress: this.inProgress.size,
        completed: this.completed,
        failed: this.failed,
        restored: this.restored,
      },
      inProgress: [...this.inProgress.values()].map((t) => this.view(t, 'in-progress')),
      latestCompleted: this.latestCompleted,
      latestFailed: this.latestFailed,
      latestRestored: this.latestRestored,
      history: [...this.history],
    };
  }

  /** The statistics of checkpoint `id` while in progress or in the history. */
  get(checkpointId: number): CheckpointStats | undefined {
    const t = this.inProgress.get(checkpointId);
    return t !== undefined ? this.view(t, 'in-progress') : this.history.find((c) => c.checkpointId === checkpointId);
  }

  // ------------------------------------------------------------------ reported by the coordinator

  reportTriggered(c: {
    checkpointId: number;
    kind: 'checkpoint' | 'savepoint';
    pointer: string;
    triggerTimestamp: number;
    numSubtasks: number;
  }): void {
    const t: Tracked = { ...c, subtasks: [] };
    this.inProgress.set(c.checkpointId, t);
    this.triggered++;
    this.emit({ type: 'triggered', jobId: this.jobId, checkpoint: this.view(t, 'in-progress') });
  }

  reportAcknowledged(checkpointId: number, subtask: SubtaskStatsRecord): void {
    const t = this.inProgress.get(checkpointId);
    if (t === undefined) return;
    t.subtasks.push(subtask);
    this.emit({ type: 'acknowledged', jobId: this.jobId, checkpoint: this.view(t, 'in-progress'), subtask });
  }

  /** What _metadata records for checkpoint `id` (called right before it is written). */
  metadataStats(checkpointId: number): CheckpointMetadataStats | undefined {
    const t = this.inProgress.get(checkpointId);
    if (t === undefined) return undefined;
    const v = this.view(t, 'completed');
    return {
      durationMs: v.durationMs ?? 0,
      bytesWritten: v.bytesWritten,
      fullSize: v.fullSize,
      bytesReused: v.bytesReused,
      fileCount: v.fileCount,
      subtasks: v.subtasks,
    };
  }

  reportCompleted(checkpointId: number, size: number): void {
    const t = this.inProgress.get(checkpointId);
    if (t === undefined) return;
    this.inProgress.delete(checkpointId);
    const stats: CheckpointStats = { ...this.view(t, 'completed'), size };
    this.completed++;
    this.latestCompleted = stats;
    this.remember(stats);
    this.emit({ type: 'completed', jobId: this.jobId, checkpoint: stats });
  }

  reportFailed(checkpointId: number, reason: CheckpointFailureReason, message: string, timestamp: number): void {
    const t = this.inProgress.get(checkpointId);
    if (t === undefined) return;
    this.inProgress.delete(checkpointId);
    const stats: CheckpointStats = {
      ...this.view(t, 'failed'),
      durationMs: Math.max(0, timestamp - t.triggerTimestamp),
      failureReason: reason,
      failureMessage: message,
      failureTimestamp: timestamp,
    };
    this.failed++;
    this.latestFailed = stats;
    this.remember(stats);
    this.emit({ type: 'failed', jobId: this.jobId, checkpoint: stats });
  }

  reportRestored(restored: RestoredCheckpointStats): void {
    this.restored++;
    this.latestRestored = restored;
    this.emit({ type: 'restored', jobId: this.jobId, restored });
  }

  /** The scheduler's failure policy gave up (scheduler.ts). */
  reportJobFailed(error: StreamStateError, consecutiveFailures: number): void {
    this.emit({ type: 'job-failed', jobId: this.jobId, error, consecutiveFailures });
  }

  // ------------------------------------------------------------------ internals

  private view(t: Tracked, status: CheckpointStatus): CheckpointStats {
    const subtasks = [...t.subtasks].sort((a, b) =>
      a.operatorId < b.operatorId ? -1 : a.operatorId > b.operatorId ? 1 : a.subtaskIndex - b.subtaskIndex,
    );
    let bytesWritten = 0;
    let fullSize = 0;
    let bytesReused = 0;
    let fileCount = 0;
    let latestAck: number | undefined;
    for (const s of subtasks) {
      bytesWritten += s.bytesWritten;
      fullSize += s.fullSize;
      bytesReused += s.bytesReused;
      fileCount += s.fileCount;
      latestAck = latestAck === undefined ? s.ackTimestamp : Math.max(latestAck, s.ackTimestamp);
    }
    return {
      checkpointId: t.checkpointId,
      jobId: this.jobId,
      kind: t.kind,
      status,
      pointer: t.pointer,
      triggerTimestamp: t.triggerTimestamp,
      numSubtasks: t.numSubtasks,
      numAcknowledged: subtasks.length,
      ...(latestAck === undefined ? {} : { latestAckTimestamp: latestAck }),
      ...(status === 'completed'
        ? { durationMs: Math.max(0, (latestAck ?? t.triggerTimestamp) - t.triggerTimestamp) }
        : {}),
      bytesWritten,
      fullSize,
      bytesReused,
      fileCount,
      subtasks,
    };
  }

  private remember(stats: CheckpointStats): void {
    this.history.unshift(stats);
    if (this.history.length > this.historySize) this.history.length = this.historySize;
  }

  private emit(event: CheckpointEvent): void {
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.onListenerError(err);
      }
    }
    const ch = PUBLISHERS[event.type];
    if (ch.hasSubscribers) ch.publish(event);
  }
}

/**
 * The byte statistics of one subtask's acknowledged handles. `fullSize`: every inline stream and
 * referenced file; `bytesWritten`: inline streams plus the files `writtenHere` says this checkpoint
 * wrote (through its streams); the rest is reused. `keyOf` maps a handle path to its store key.
 */
export function subtaskBytes(
  handles: unknown,
  keyOf: (path: string) => string,
  writtenHere: (key: string) => boolean,
): { bytesWritten: number; fullSize: number; bytesReused: number; fileCount: number } {
  const inline = inlineBytes(handles);
  const files = new Map<string, number>();
  for (const f of referencedFiles(handles)) files.set(keyOf(f.path), f.size);
  let written = inline;
  let full = inline;
  for (const [key, size] of files) {
    full += size;
    if (writtenHere(key)) written += size;
  }
  return { bytesWritten: written, fullSize: full, bytesReused: full - written, fileCount: files.size };
}

function inlineBytes(v: unknown): number {
  if (Array.isArray(v)) return v.reduce((n: number, x: unknown) => n + inlineBytes(x), 0);
  if (v === null || typeof v !== 'object') return 0;
  const o = v as Record<string, unknown>;
  if (o.type === 'inline' && typeof o.size === 'number') return o.size;
  if (o.type === 'file') return 0;
  let n = 0;
  for (const x of Object.values(o)) n += inlineBytes(x);
  return n;
}
