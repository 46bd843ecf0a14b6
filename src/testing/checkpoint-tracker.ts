import { posix } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { KeyedStateHandle, OperatorStateHandle } from '../backend/handles.js';
import type { CheckpointCoordinator, PendingCheckpoint } from '../checkpoint/coordinator.js';
import type { CompletedCheckpointInfo } from '../checkpoint/metadata.js';
import type { ChannelStateHandle } from '../checkpoint/channel-state.js';
import type { SubtaskSnapshot } from './tasks.js';

/** What the runtime measured while a subtask took its snapshot (alignment and the asynchronous part are timed here). */
export interface SnapshotTiming {
  /** ms the synchronous part took (the subtask was blocked). */
  readonly syncDurationMs: number;
}

interface Entry {
  readonly pending: PendingCheckpoint;
  settled: number;
  failure: unknown;
}

export interface TrackerHooks {
  /** A checkpoint completed (its _metadata is written). Must not throw. */
  completed(info: CompletedCheckpointInfo): Promise<void>;
  /** A checkpoint failed and was aborted at the coordinator. Must not throw. */
  aborted(checkpointId: number, reason: string): Promise<void>;
  /** After a crash nothing is aborted here: the coordinator's shutdown aborts what is pending. */
  isDead(): boolean;
  /** Acknowledging or aborting failed at the coordinator (storage trouble): the run cannot go on. */
  fatal(err: unknown): void;
}

/**
 * The runtime's side of checkpointing for one attempt: triggers checkpoints, turns each subtask's
 * snapshot into an asynchronous acknowledgement, and aborts a checkpoint once every subtask has
 * either acknowledged or failed and at least one failed.
 */
export class CheckpointTracker {
  private readonly entries = new Map<number, Entry>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly seenFiles = new Set<string>();
  /** Checkpoints whose abort the `aborted` hook heard of (an abort can be seen both here and through the scheduler). */
  private readonly reportedAborts = new Set<number>();
  /** `operatorId/subtaskIndex/checkpointId` -> when its first barrier arrived and alignment began. */
  private readonly alignmentStarts = new Map<string, number>();
  /** Subtask snapshots whose asynchronous part has not finished. */
  inFlightSnapshots = 0;
  bytesWritten = 0;
  lastTriggered: number | null = null;
  /** Whether the newest triggered checkpoint failed (a finished input needs another one). */
  lastTriggeredFailed = false;

  constructor(
    private readonly coordinator: CheckpointCoordinator,
    /** Subtasks over all operators: a checkpoint completes when all of them acknowledged. */
    private readonly subtaskCount: number,
    private readonly hooks: TrackerHooks,
  ) {}

  trigger(): number {
    const pending = this.coordinator.triggerCheckpoint();
    this.register(pending);
    return pending.checkpointId;
  }

  /** Tracks a checkpoint triggered elsewhere (by the CheckpointScheduler) as if trigger() had. */
  register(pending: PendingCheckpoint): void {
    this.entries.set(pending.checkpointId, { pending, settled: 0, failure: undefined });
    // Subsumed by a newer checkpoint, or aborted by the coordinator itself: nothing left to track.
    pending.completion.catch(() => {
      this.entries.delete(pending.checkpointId);
      if (pending.checkpointId === this.lastTriggered) this.lastTriggeredFailed = true;
    });
    this.lastTriggered = pending.checkpointId;
    this.lastTriggeredFailed = false;
  }

  /** Whether acknowledgements or aborts are still under way (time passes while the runtime waits for them). */
  get busy(): boolean {
    return this.inFlight.size > 0;
  }

  /**
   * The coordinator ended checkpoint `id` without completing it on its own (the scheduler's
   * timeout, a decline of the trigger): the backends hear of it once, as for an abort decided here.
   */
  abortedByCoordinator(checkpointId: number, reason: string): void {
    this.entries.delete(checkpointId);
    if (checkpointId === this.lastTriggered) this.lastTriggeredFailed = true;
    if (this.hooks.isDead() || !this.markAborted(checkpointId)) return;
    this.keep(this.hooks.aborted(checkpointId, reason));
  }

  /** True the first time for `id`. */
  private markAborted(checkpointId: number): boolean {
    if (this.reportedAborts.has(checkpointId)) return false;
    this.reportedAborts.add(checkpointId);
    return true;
  }

  /**
   * Tracks a savepoint triggered by someone else (a savepoint request, a stop-with-savepoint): its
   * subtasks acknowledge like a checkpoint's, but its completion goes to whoever triggered it
   * through `pending.completion` — the `completed` hook (sink commits, notifications) is for
   * checkpoints only: an ordinary savepoint gets no completion notice (Flink's semantics).
   */
  adopt(pending: PendingCheckpoint): void {
    this.entries.set(pending.checkpointId, { pending, settled: 0, failure: undefined });
    pending.completion.catch(() => this.entries.delete(pending.checkpointId));
  }

  pending(checkpointId: number): PendingCheckpoint | null {
    return this.entries.get(checkpointId)?.pending ?? null;
  }

  /**
   * A barrier of `checkpointId` arrived at a subtask with more inputs to wait for: its alignment
   * began (the first call counts). The alignment duration is reported with its acknowledgement.
   */
  alignmentStarted(task: { operatorId: string; subtaskIndex: number }, checkpointId: number | null): void {
    if (checkpointId === null) return;
    const key = `${task.operatorId}/${task.subtaskIndex}/${checkpointId}`;
    if (!this.alignmentStarts.has(key)) this.alignmentStarts.set(key, performance.now());
  }

  /**
   * ms the subtask spent aligning `checkpointId` (0: one input, or every barrier came at once);
   * forgets it. Called right after the synchronous part, which followed the alignment.
   */
  private alignmentDuration(operatorId: string, subtaskIndex: number, checkpointId: number, syncMs: number): number {
    const key = `${operatorId}/${subtaskIndex}/${checkpointId}`;
    const start = this.alignmentStarts.get(key);
    this.alignmentStarts.delete(key);
    return start === undefined ? 0 : Math.max(0, performance.now() - start - syncMs);
  }

  /** Hands a subtask's snapshot over: acknowledged, with its durations, when its asynchronous part is done. */
  track(
    checkpointId: number,
    operatorId: string,
    subtaskIndex: number,
    snapshot: SubtaskSnapshot,
    timing?: SnapshotTiming,
  ): void {
    this.inFlightSnapshots++;
    const alignmentDurationMs = this.alignmentDuration(
      operatorId,
      subtaskIndex,
      checkpointId,
      timing?.syncDurationMs ?? 0,
    );
    const asyncStart = performance.now();
    const run = (async () => {
      let finished = false;
      try {
        const [operator, keyed, channel] = await Promise.all([
          snapshot.operator.done,
          snapshot.keyed ? snapshot.keyed.done : null,
          snapshot.channel ?? null,
        ]);
        finished = true;
        const asyncDurationMs = performance.now() - asyncStart;
        this.inFlightSnapshots--;
        this.countBytes(checkpointId, operator);
        this.countBytes(checkpointId, keyed);
        this.countBytes(checkpointId, channel);
        // A failed attempt acknowledges nothing more; the coordinator's shutdown removes what its snapshots wrote.
        if (this.hooks.isDead()) return;
        const result = await this.coordinator.acknowledge(checkpointId, operatorId, subtaskIndex, {
          keyed: keyed ? [keyed] : [],
          operator: operator ? [operator] : [],
          ...(channel ? { channel } : {}),
          ...(timing ? { metrics: { ...timing, alignmentDurationMs, asyncDurationMs } } : {}),
        });
        if (result.status === 'completed') {
          const kind = this.entries.get(checkpointId)?.pending.kind ?? 'checkpoint';
          this.entries.delete(checkpointId);
          if (kind === 'checkpoint') await this.hooks.completed(result.checkpoint);
        } else if (result.status === 'rejected' && result.reason === 'SHARED_STATE_NOT_LIVE') {
          // Declined by the coordinator (a referenced file is not live): the backends must hear of the abort.
          this.entries.delete(checkpointId);
          if (checkpointId === this.lastTriggered) this.lastTriggeredFailed = true;
          if (this.markAborted(checkpointId)) await this.hooks.aborted(checkpointId, result.message);
        }
      } catch (err) {
        if (!finished) this.inFlightSnapshots--;
        this.failed(checkpointId, err);
      }
      await this.settled(checkpointId);
    })();
    this.keep(run);
  }

  /** A subtask could not take its snapshot at all (the synchronous part threw). */
  failSubtask(checkpointId: number, err: unknown): void {
    this.failed(checkpointId, err);
    this.keep(this.settled(checkpointId));
  }

  private keep(run: Promise<void>): void {
    const tracked = run.catch((err: unknown) => this.hooks.fatal(err)).finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  /** Resolves when no acknowledgement or abort is in progress (including ones started meanwhile). */
  async settle(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  private failed(checkpointId: number, err: unknown): void {
    const entry = this.entries.get(checkpointId);
    if (entry && entry.failure === undefined) entry.failure = err ?? new Error('snapshot failed');
  }

  private async settled(checkpointId: number): Promise<void> {
    const entry = this.entries.get(checkpointId);
    if (!entry) return;
    entry.settled++;
    if (entry.settled < this.subtaskCount || entry.failure === undefined || this.hooks.isDead()) return;
    this.entries.delete(checkpointId);
    if (checkpointId === this.lastTriggered) this.lastTriggeredFailed = true;
    const reason = entry.failure instanceof Error ? entry.failure.message : String(entry.failure);
    const first = this.markAborted(checkpointId);
    // A subtask's snapshot failed: Flink's CHECKPOINT_DECLINED, which counts against tolerableFailures.
    await this.coordinator.abort(checkpointId, reason, 'DECLINED');
    if (first) await this.hooks.aborted(checkpointId, reason);
  }

  /** Inline bytes each time; a file once (a shared file reused by a later checkpoint is not written again). */
  private countBytes(
    checkpointId: number,
    handle: KeyedStateHandle | OperatorStateHandle | ChannelStateHandle | null,
  ): void {
    const visit = (v: unknown): void => {
      if (Array.isArray(v)) {
        for (const x of v) visit(x);
        return;
      }
      if (v === null || typeof v !== 'object') return;
      const o = v as Record<string, unknown>;
      if (o.type === 'inline' && typeof o.size === 'number') this.bytesWritten += o.size;
      else if (o.type === 'file' && typeof o.path === 'string' && typeof o.size === 'number') {
        const where = posix.normalize(posix.join(`chk-${checkpointId}`, o.path));
        if (!this.seenFiles.has(where)) {
          this.seenFiles.add(where);
          this.bytesWritten += o.size;
        }
      } else for (const x of Object.values(o)) visit(x);
    };
    visit(handle);
  }
}
