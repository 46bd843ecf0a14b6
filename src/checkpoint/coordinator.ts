import type { CheckpointStreamFactory, SnapshotOptions } from '../backend/contract.js';
import { referencedFiles } from '../backend/handles.js';
import { SnapshotError, StreamStateError, isStreamStateError } from '../errors.js';
import {
  CheckpointDeclinedError,
  dropNulls,
  normalizeAck,
  type AcknowledgeResult,
  type CheckpointFailureReason,
  type NormalizedAck,
  type SubtaskAck,
} from './acknowledgement.js';
import { CheckpointStatsTracker, subtaskBytes, type CheckpointListener } from './checkpoint-stats.js';
import { CompletedCheckpointStore, type RetainedCheckpoint } from './completed-store.js';
import { indexOperators, operatorOf, subtaskCount, type CoordinatedOperator } from './job-operators.js';
import {
  subtaskStateHandles,
  type CheckpointMetadata,
  type CompletedCheckpointInfo,
  type OperatorSnapshot,
} from './metadata.js';
import { RecordingStreamFactory } from './recording-streams.js';
import { planRestore, type RestorePlan } from './restore-planning.js';
import { SharedStateRegistry, type RestoreMode } from './shared-registry.js';
import { completedInfo, fileKeys, sharedKeys } from './snapshot-files.js';
import type { CheckpointStorage, ResolvedSnapshot } from './storage.js';
import { resolveHandlePath } from './streams.js';
// [fencing] the job lease (docs/RUNTIME.md, "Fencing")
import { FencedCheckpointStorage } from './fenced-storage.js';
import { DEFAULT_FENCING_MIN_AGE_MS, deletableNow } from './fencing-gc.js';
import { JobLease } from './lease.js';
// [savepoints anywhere] savepoint targets and restore pointers outside the checkpoint storage (docs/RUNTIME.md, "Savepoints anywhere")
import { ExternalSnapshots, type SavepointTriggerOptions } from './external-snapshots.js';
import type { SavepointLocationOptions } from './savepoint-location.js';

// The coordinator's parts live in their own modules; these re-exports keep its public surface.
export type { SubtaskAck } from './acknowledgement.js';
export type { CoordinatedOperator } from './job-operators.js';
export type { RestorePlan, SubtaskRestore } from './restore-planning.js';

export interface CheckpointCoordinatorOptions {
  readonly jobId: string;
  readonly storage: CheckpointStorage;
  /** Recorded in _metadata (`memory`, `leveldb`, ...). */
  readonly backendName: string;
  readonly operators: readonly CoordinatedOperator[];
  /** Completed checkpoints kept; older ones are deleted when a new one completes. Default 1. */
  readonly numRetained?: number;
  /** What shutdown('cancel') does with retained checkpoints. Default `retain`. */
  readonly onCancel?: 'retain' | 'delete';
  /** How restore(pointer) treats a snapshot that is not one of this job's own checkpoints. Default `no-claim`. */
  readonly restoreMode?: RestoreMode;
  /** Restore even when the snapshot holds operators this job no longer has (their state is dropped). */
  readonly allowNonRestoredState?: boolean;
  /** ms clock for checkpoint timestamps. Default Date.now. */
  readonly clock?: () => number;
  /** Called with failures of best-effort deletions (the files are left for collectGarbage()). */
  readonly onCleanupError?: (err: unknown) => void;
  /** The job lease (docs/RUNTIME.md, "Fencing"). */
  readonly fencing?: FencingOptions;
  /** [savepoints anywhere] The default savepoint location (local dir or s3:// URL) and S3 settings for s3:// targets and restore pointers. */
  readonly savepoints?: SavepointLocationOptions;
  /** Ended checkpoints kept in `statistics` (checkpoint-stats.ts). Default 10 (Flink's web.checkpoints.history). */
  readonly statsHistorySize?: number;
}

/** [fencing] How start-up cleanup treats files an older, possibly live instance may still complete. */
export interface FencingOptions {
  /** Unreferenced files younger than this are spared while an older instance's lease is not released. Default 10 minutes. */
  readonly minAgeMs?: number;
  /** ms clock compared with the store's modification times. Default Date.now. */
  readonly now?: () => number;
}

export interface PendingCheckpoint {
  readonly checkpointId: number;
  readonly timestamp: number;
  readonly kind: 'checkpoint' | 'savepoint';
  readonly format: 'native' | 'canonical';
  /** Where its _metadata will be (store-relative). */
  readonly pointer: string;
  /** Backends must write a self-contained snapshot (savepoints; checkpoints while fullRequired). */
  readonly full: boolean;
  /** The first checkpoints after a no-claim restore must not reuse the restored files. */
  readonly fullRequired: boolean;
  /** The streams subtask `subtaskIndex` of `operatorId` writes its snapshot through (the coordinator records what they write). */
  streamsFor(operatorId: string, subtaskIndex: number): CheckpointStreamFactory;
  /** Ready-made SnapshotOptions for Snapshotable.snapshot(), with `mayReuse` answered by the shared-state registry. */
  snapshotOptions(operatorId: string, subtaskIndex: number): SnapshotOptions;
  /**
   * Resolves when it completes; rejects when it does not: CheckpointDeclinedError (code
   * CHECKPOINT_DECLINED, with `reason`) or SNAPSHOT_FAILED (its _metadata could not be written).
   */
  readonly completion: Promise<CompletedCheckpointInfo>;
}

interface Pending {
  readonly view: PendingCheckpoint;
  readonly acks: Map<string, Map<number, NormalizedAck>>;
  remaining: number;
  /**
   * The lowest checkpoint retained when this one was triggered. mayReuse says yes only to registry
   * entries last used at or after it, and no entry last used at or after it is unregistered while
   * this checkpoint is in flight (releaseUnusedShared), so every yes holds until it completes or aborts.
   */
  readonly reuseFloor: number;
  readonly resolve: (info: CompletedCheckpointInfo) => void;
  readonly reject: (err: unknown) => void;
}

const CHECKPOINT_DIR = /^chk-(0|[1-9][0-9]*)$/;

/**
 * Job-level checkpoint coordination (Flink's CheckpointCoordinator + completed checkpoint store):
 * triggers checkpoints and savepoints, collects the subtasks' acknowledgements, writes _metadata
 * last, keeps `numRetained` checkpoints and deletes what nobody references any more (shared files
 * through the SharedStateRegistry), and plans restores (including rescaling).
 *
 * Call order: `restore()` once (it also loads this job's retained checkpoints, continues the ids
 * and cleans up leftovers of a crash), then trigger/acknowledge/abort, then `shutdown()`.
 * Completions, aborts and cleanups run one at a time, in order.
 */
export class CheckpointCoordinator {
  readonly registry = new SharedStateRegistry();
  /** Checkpoint statistics and events (checkpoint-stats.ts; docs/RUNTIME.md, "Statistics"). */
  readonly statistics: CheckpointStatsTracker;
  private readonly jobId: string;
  private readonly storage: FencedCheckpointStorage; // [fencing] deletions check the lease
  private readonly external: ExternalSnapshots; // [savepoints anywhere]
  private readonly operators: ReadonlyMap<string, CoordinatedOperator>;
  private readonly clock: () => number;
  private readonly pending = new Map<number, Pending>();
  /** Fully acknowledged, waiting for (or in) completion: their files are as protected as pending ones. */
  private readonly completing = new Map<number, Pending>();
  private readonly completed: CompletedCheckpointStore;
  /** How recent checkpoints and savepoints that are no longer pending ended (late acknowledgements are answered from it). */
  private readonly ended = new Map<
    number,
    { readonly pointer: string; readonly reason: CheckpointFailureReason; readonly message: string }
  >();
  /** The first id this coordinator handed out: lower ids were never triggered here. */
  private firstId = 1;
  private nextId = 1;
  private restoredId: number | undefined;
  private fullRequired = false;
  private started = false;
  /** [fencing] This instance's lease, taken by restore(). */
  private lease: JobLease | undefined;
  private stopped = false;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: CheckpointCoordinatorOptions) {
    this.jobId = options.jobId;
    // [fencing] Every deletion first checks the lease: a fenced instance deletes nothing.
    // [savepoints anywhere] Directories outside the storage are mounted into it (mounted-storage.ts); restored ones read-only.
    this.external = new ExternalSnapshots(options.storage, {
      ...options.savepoints,
      onRefusedDelete: (err) => options.onCleanupError?.(err),
    });
    this.storage = new FencedCheckpointStorage(
      this.external.storage,
      (what) => this.lease?.checkMayDelete(what) ?? Promise.resolve(),
    );
    this.clock = options.clock ?? Date.now;
    this.statistics = new CheckpointStatsTracker(options.jobId, options.statsHistorySize, (err) =>
      options.onCleanupError?.(err),
    );
    this.completed = new CompletedCheckpointStore(options.numRetained ?? 1);
    this.operators = indexOperators(options.operators);
  }

  /** Calls `listener` with every checkpoint event (triggered, acknowledged, completed, failed, restored, job-failed); returns an unsubscribe function. */
  addCheckpointListener(listener: CheckpointListener): () => void {
    return this.statistics.addListener(listener);
  }

  /** The id the next checkpoint or savepoint gets. */
  get nextCheckpointId(): number {
    return this.nextId;
  }

  /** Retained completed checkpoints, oldest first. */
  completedCheckpoints(): CompletedCheckpointInfo[] {
    return this.completed.infos();
  }

  latestCompleted(): CompletedCheckpointInfo | null {
    return this.completed.latest();
  }

  pendingCheckpoints(): PendingCheckpoint[] {
    return [...this.pending.values()].map((p) => p.view);
  }

  // ------------------------------------------------------------------ restore

  /**
   * Starts the coordinator: loads this job's retained checkpoints, resolves what to restore from
   * (`pointer`, else the job's latest completed checkpoint), routes its handles to the subtasks
   * of the job's current parallelism, continues the checkpoint ids after it and deletes leftovers
   * of checkpoints that never completed. Null when there is nothing to restore.
   */
  async restore(pointer?: string, opts: { allowNonRestoredState?: boolean } = {}): Promise<RestorePlan | null> {
    if (this.started || this.stopped) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `restore() runs once, before the first checkpoint of job ${this.jobId}; create a new CheckpointCoordinator to restore again.`,
      );
    }
    // [fencing] Take the lease before listing anything: every older instance that completes a
    // checkpoint from now on fails its lease check, and ids continue above every chk-<n> listed below.
    this.lease = await JobLease.acquire(this.storage.store, this.jobId, { now: this.options.fencing?.now });
    const own: ResolvedSnapshot[] = [];
    for (const info of await this.storage.listCompletedCheckpoints(this.jobId)) {
      try {
        own.push(await this.storage.resolve(info.pointer));
      } catch (err) {
        if (!isStreamStateError(err, 'NOT_FOUND') && !isStreamStateError(err, 'METADATA_MISSING')) throw err;
      }
    }
    let source: ResolvedSnapshot | null;
    let isOwn: boolean;
    if (pointer !== undefined) {
      // [savepoints anywhere] A pointer outside the storage is mounted read-only: always no-claim.
      source = this.external.isOutside(pointer)
        ? await this.external.resolveOutside(pointer, this.options.restoreMode ?? 'no-claim')
        : await this.storage.resolve(pointer);
      const p = source.pointer;
      isOwn = own.some((o) => o.pointer === p);
    } else {
      await this.refuseUnreadableLatest(own.at(-1)?.metadata.checkpointId ?? -1);
      source = own.at(-1) ?? null;
      isOwn = true;
    }
    const mode: RestoreMode = isOwn ? 'claim' : (this.options.restoreMode ?? 'no-claim');
    // Everything that can refuse the restore happens before any state changes.
    const planned =
      source === null
        ? null
        : planRestore(
            source,
            mode,
            { jobId: this.jobId, operators: this.operators },
            opts.allowNonRestoredState ?? this.options.allowNonRestoredState ?? false,
          );
    const plan = planned === null ? null : { ...planned, pointer: this.external.storage.userPointer(planned.pointer) }; // [savepoints anywhere]

    const highestDir = await this.highestCheckpointDirId();
    for (const snap of own) {
      this.completed.add({ info: completedInfo(snap.pointer, snap.metadata), origin: 'own' });
      this.registry.registerCheckpoint(snap.metadata.checkpointId, sharedKeys(snap.pointer, snap.metadata));
    }
    if (source !== null && !isOwn) {
      const id = source.metadata.checkpointId;
      this.registry.registerRestored(id, [...fileKeys(source.pointer, source.metadata)], mode);
      if (mode === 'no-claim') this.fullRequired = true;
      // Claimed: ours now, retired (its _metadata deleted, then its files) once subsumed like our own.
      else this.completed.add({ info: completedInfo(source.pointer, source.metadata), origin: 'claimed' });
    }
    this.restoredId = source?.metadata.checkpointId;
    this.nextId = Math.max(highestDir, this.restoredId ?? 0, ...this.completed.infos().map((c) => c.checkpointId)) + 1;
    this.firstId = this.nextId;
    this.started = true;
    if (source !== null) {
      this.statistics.reportRestored({
        checkpointId: source.metadata.checkpointId,
        pointer: this.external.storage.userPointer(source.pointer), // [savepoints anywhere] the path or URL, not its mount
        kind: source.metadata.kind,
        mode,
        restoreTimestamp: this.clock(),
      });
    }
    await this.bestEffort(async () => void (await this.collectGarbage()));
    return plan;
  }

  /**
   * listCompletedCheckpoints skips a _metadata it cannot read. Restoring "the latest" must not
   * then silently fall back to an older checkpoint, or to no state at all: when the newest
   * checkpoint with a _metadata is damaged (or of a newer format), the restore fails with its error.
   */
  private async refuseUnreadableLatest(latestReadable: number): Promise<void> {
    let newest = -1;
    for (const name of await this.storage.listJobFiles(this.jobId)) {
      const id = this.checkpointDirOf(name);
      if (id !== undefined && id > newest && name === `${this.storage.checkpointPointer(this.jobId, id)}/_metadata`)
        newest = id;
    }
    if (newest <= latestReadable) return;
    const pointer = this.storage.checkpointPointer(this.jobId, newest);
    try {
      await this.storage.resolve(pointer);
    } catch (err) {
      if (!(err instanceof StreamStateError)) throw err;
      // Deleted meanwhile (another instance's retention): nothing was lost to fall back over.
      if (err.code === 'NOT_FOUND' || err.code === 'METADATA_MISSING') return;
      const Ctor = err.constructor as new (
        code: StreamStateError['code'],
        message: string,
        options?: { cause?: unknown },
      ) => StreamStateError;
      throw new Ctor(
        err.code,
        `job ${this.jobId} cannot restore its latest checkpoint ${newest}: ${err.message} ` +
          `Restoring an older checkpoint instead would silently go back in time, so nothing was restored. Restore an earlier checkpoint ` +
          `explicitly (restore(pointer); \`streamstate list\` shows them), or move ${pointer} away to make the previous checkpoint the latest.`,
        { cause: err },
      );
    }
  }

  /** Highest chk-<n> directory id in the job's storage, complete or not (new ids never collide). */
  private async highestCheckpointDirId(): Promise<number> {
    let max = 0;
    for (const name of await this.storage.listJobFiles(this.jobId)) {
      const id = this.checkpointDirOf(name);
      if (id !== undefined) max = Math.max(max, id);
    }
    return max;
  }

  // ------------------------------------------------------------------ triggering

  /** Starts checkpoint `nextCheckpointId`. Several may be pending at once. */
  triggerCheckpoint(): PendingCheckpoint {
    this.checkRunning();
    this.lease?.throwIfKnownFenced('trigger a checkpoint'); // [fencing]
    const id = this.nextId++;
    const streams = this.storage.checkpointStreams(this.jobId, id);
    return this.addPending(
      id,
      'checkpoint',
      'native',
      this.storage.checkpointPointer(this.jobId, id),
      streams,
      this.fullRequired,
    );
  }

  /**
   * Starts a savepoint: self-contained, in its own directory (under `targetDir`, default the
   * store root). Savepoints are never retained as checkpoints nor deleted by the coordinator; on
   * completion `completion` (and the final acknowledge) yield its pointer.
   */
  triggerSavepoint(opts: SavepointTriggerOptions = {}): PendingCheckpoint {
    this.checkRunning();
    this.lease?.throwIfKnownFenced('trigger a savepoint'); // [fencing]
    const id = this.nextId++;
    // [savepoints anywhere] `target`: any directory (checked new or empty); else the default savepoint location.
    const { pointer, streams } = this.external.savepointLocation(this.jobId, opts);
    const view = this.addPending(id, 'savepoint', opts.format ?? 'canonical', pointer, streams, true);
    return { ...view, completion: this.external.completion(pointer, view.completion) };
  }

  private addPending(
    checkpointId: number,
    kind: 'checkpoint' | 'savepoint',
    format: 'native' | 'canonical',
    pointer: string,
    streams: CheckpointStreamFactory,
    full: boolean,
  ): PendingCheckpoint {
    let resolve!: (info: CompletedCheckpointInfo) => void;
    let reject!: (err: unknown) => void;
    const completion = new Promise<CompletedCheckpointInfo>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    completion.catch(() => undefined); // nobody has to listen
    const checkSubtask = (operatorId: string, subtaskIndex: number): void => {
      this.operatorOf(operatorId, subtaskIndex);
    };
    const recorded = this.recordingStreams(checkpointId, pointer, streams);
    // Why every yes below holds until this checkpoint completes or aborts: a yes needs a registry
    // entry with lastUsed >= reuseFloor. Entries leave the registry only in releaseUnusedShared,
    // and only with lastUsed below min(lowest retained, reuseFloor of every in-flight checkpoint),
    // which is at most this floor while this checkpoint is in flight; lastUsed never decreases.
    // Aborts, late acknowledgements, backend discards and gc never delete a registered file.
    const reuseFloor = this.completed.lowestId();
    const mayReuse = (path: string): boolean => {
      if (full || !this.pending.has(checkpointId)) return false;
      let key: string;
      try {
        key = resolveHandlePath(pointer, path);
      } catch {
        return false;
      }
      return this.registry.mayReuse(key, reuseFloor);
    };
    const view: PendingCheckpoint = {
      checkpointId,
      timestamp: this.clock(),
      kind,
      format,
      pointer,
      full,
      fullRequired: kind === 'checkpoint' && full,
      streamsFor: (operatorId, subtaskIndex) => {
        checkSubtask(operatorId, subtaskIndex);
        return recorded;
      },
      snapshotOptions: (operatorId, subtaskIndex) => {
        checkSubtask(operatorId, subtaskIndex);
        return { type: kind, format, full, streams: recorded, mayReuse };
      },
      completion,
    };
    const acks = new Map<string, Map<number, NormalizedAck>>();
    for (const op of this.operators.values()) acks.set(op.operatorId, new Map());
    const remaining = subtaskCount(this.operators);
    this.pending.set(checkpointId, { view, acks, remaining, reuseFloor, resolve, reject });
    this.statistics.reportTriggered({
      checkpointId,
      kind,
      pointer: this.external.storage.userPointer(pointer), // [savepoints anywhere] the target as given, not its mount
      triggerTimestamp: view.timestamp,
      numSubtasks: remaining,
    });
    return view;
  }

  /**
   * The streams checkpoint `id` hands out: what they write is recorded in the registry's upload
   * ledger (so aborts delete exactly that), and deletions the backend asks for spare every file
   * the registry or another in-flight checkpoint holds.
   */
  private recordingStreams(id: number, pointer: string, streams: CheckpointStreamFactory): RecordingStreamFactory {
    return new RecordingStreamFactory(streams, pointer, {
      written: (key) => this.registry.recordUpload(id, key),
      discard: (files) =>
        this.serially(async () => {
          const wanted = this.wantedKeys();
          const doomed = [...new Set(files.map((f) => resolveHandlePath(pointer, f.path)))].filter((k) => !wanted(k));
          this.registry.forgetUploads(doomed);
          if (doomed.length > 0) await this.storage.store.delete(doomed);
        }),
    });
  }

  // ------------------------------------------------------------------ acknowledging

  /**
   * Records one subtask's handles. When this was the last missing acknowledgement the checkpoint
   * completes: every file its handles reference is checked to be live, _metadata is written (last,
   * atomically), shared files are registered, old checkpoints beyond numRetained are deleted.
   *
   * Result: `waiting` (others are missing), `completed`, or `rejected` with a reason: declined
   * because a referenced file is not live (SHARED_STATE_NOT_LIVE: call notifyCheckpointAborted on
   * the backends; the job goes on), or a late acknowledgement of a checkpoint that already ended
   * (its files nothing else uses are deleted). Throws CHECKPOINT_NOT_FOUND for an id never
   * triggered here, INVALID_ARGUMENT for an unknown operator or subtask or a keyed handle that does
   * not cover exactly the subtask's key groups, DUPLICATE_ACKNOWLEDGEMENT for a second
   * acknowledgement of a pending checkpoint, SNAPSHOT_FAILED when _metadata cannot be written.
   */
  async acknowledge(
    checkpointId: number,
    operatorId: string,
    subtaskIndex: number,
    state: SubtaskAck,
  ): Promise<AcknowledgeResult> {
    const op = this.operatorOf(operatorId, subtaskIndex);
    const p = this.pending.get(checkpointId);
    if (p === undefined) {
      if (this.completing.has(checkpointId)) throw this.duplicate(checkpointId, operatorId, subtaskIndex);
      return this.lateAcknowledgement(checkpointId, dropNulls(state));
    }
    const ack = normalizeAck(state, op, checkpointId, subtaskIndex, this.jobId);
    if (ack.channel !== undefined && p.view.kind === 'savepoint') {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `subtask ${subtaskIndex} of ${operatorId} acknowledged savepoint ${checkpointId} with channel state; savepoints are always aligned and hold no in-flight records. Take savepoints with aligned barriers.`,
      );
    }
    // Every path must resolve inside what this checkpoint may reference (else a typed error now, not a failed completion later).
    for (const f of referencedFiles(subtaskStateHandles(ack))) resolveHandlePath(p.view.pointer, f.path);
    const acks = p.acks.get(operatorId)!;
    if (acks.has(subtaskIndex)) throw this.duplicate(checkpointId, operatorId, subtaskIndex);
    acks.set(subtaskIndex, ack);
    p.remaining--;
    this.reportAcknowledged(p, operatorId, subtaskIndex, ack);
    if (p.remaining > 0) return { status: 'waiting', missing: p.remaining };
    this.pending.delete(checkpointId);
    this.completing.set(checkpointId, p);
    return this.serially(() => this.complete(p)).finally(() => this.completing.delete(checkpointId));
  }

  private reportAcknowledged(p: Pending, operatorId: string, subtaskIndex: number, ack: NormalizedAck): void {
    const { checkpointId: id, pointer } = p.view;
    const bytes = subtaskBytes(
      subtaskStateHandles(ack),
      (path) => resolveHandlePath(pointer, path),
      (key) => this.registry.uploadedBy(key) === id,
    );
    this.statistics.reportAcknowledged(id, {
      operatorId,
      subtaskIndex,
      ackTimestamp: this.clock(),
      ...ack.metrics,
      ...bytes,
    });
  }

  private duplicate(checkpointId: number, operatorId: string, subtaskIndex: number): StreamStateError {
    return new StreamStateError(
      'DUPLICATE_ACKNOWLEDGEMENT',
      `subtask ${subtaskIndex} of operator ${operatorId} acknowledged checkpoint ${checkpointId} of job ${this.jobId} twice; the first acknowledgement stands. ` +
        'Acknowledge each checkpoint once per subtask.',
    );
  }

  /**
   * An acknowledgement for a checkpoint that is no longer pending: not an error (aborts and
   * subsumption race with snapshots). Files of the ack that this checkpoint's streams wrote and
   * nothing live uses are deleted.
   */
  private async lateAcknowledgement(checkpointId: number, ack: NormalizedAck): Promise<AcknowledgeResult> {
    if (!Number.isSafeInteger(checkpointId) || checkpointId < this.firstId || checkpointId >= this.nextId) {
      throw new StreamStateError(
        'CHECKPOINT_NOT_FOUND',
        `job ${this.jobId} has no checkpoint ${checkpointId}: this coordinator triggered ` +
          (this.nextId > this.firstId ? `ids ${this.firstId}..${this.nextId - 1}` : 'none yet') +
          '. Acknowledge only checkpoints triggered by this coordinator (after a restart ids continue; old ones are gone).',
      );
    }
    const ended = this.ended.get(checkpointId) ?? {
      pointer: undefined,
      reason: 'ABORTED' as const,
      message: `checkpoint ${checkpointId} of job ${this.jobId} ended long ago.`,
    };
    const { pointer } = ended;
    if (pointer !== undefined) {
      await this.serially(async () => {
        const wanted = this.wantedKeys();
        const keys = new Set<string>();
        for (const f of referencedFiles(subtaskStateHandles(ack))) keys.add(resolveHandlePath(pointer, f.path));
        const doomed = this.adoptedBy(checkpointId, keys, wanted);
        this.registry.forgetUploads(doomed);
        if (doomed.length > 0) await this.bestEffort(() => this.storage.store.delete(doomed));
      });
    }
    return { status: 'rejected', checkpointId, reason: ended.reason, message: ended.message };
  }

  private async complete(p: Pending): Promise<AcknowledgeResult> {
    const { checkpointId: id, kind, pointer } = p.view;
    // From here on this (serialized) step decides the checkpoint's fate; gc cannot run meanwhile.
    this.completing.delete(id);
    const latest = this.completed.latest()?.checkpointId ?? -1;
    if (kind === 'checkpoint' && id < latest) {
      const message = `checkpoint ${id} of job ${this.jobId} was subsumed: a newer checkpoint (${latest}) completed first. Its files were removed.`;
      await this.discardPending(p, 'SUBSUMED', message, false);
      return { status: 'rejected', checkpointId: id, reason: 'SUBSUMED', message };
    }
    const stats = this.statistics.metadataStats(id);
    const metadata: CheckpointMetadata = stats === undefined ? this.metadataOf(p) : { ...this.metadataOf(p), stats };
    if (kind === 'savepoint') {
      const outside = [...fileKeys(pointer, metadata)].filter((k) => !k.startsWith(`${pointer}/`));
      if (outside.length > 0) {
        const err = new SnapshotError(
          'SNAPSHOT_FAILED',
          `savepoint ${id} references files outside its directory (${outside.slice(0, 3).join(', ')}), so it would not be self-contained. ` +
            'The state backend must write savepoints in full (SnapshotOptions.full); this is a backend bug.',
        );
        await this.discardPending(p, 'ABORTED', err.message, false, err);
        throw err;
      }
    }
    const notLive = kind === 'checkpoint' ? await this.filesNotLive(p, metadata) : [];
    if (notLive.length > 0) {
      const message =
        `checkpoint ${id} of job ${this.jobId} was declined: it references ${notLive.length} file(s) that are neither its own uploads nor live in the ` +
        `shared-state registry (deleted, another checkpoint's private file, or of unknown origin): ${notLive.slice(0, 3).join(', ')}` +
        `${notLive.length > 3 ? ', ...' : ''}. Completing it would leave a checkpoint that cannot be restored. The job goes on: the backend ` +
        'uploads the data again at the next checkpoint (backends ask SnapshotOptions.mayReuse before referencing an earlier upload).';
      await this.discardPending(p, 'SHARED_STATE_NOT_LIVE', message, false);
      return { status: 'rejected', checkpointId: id, reason: 'SHARED_STATE_NOT_LIVE', message };
    }
    await this.fenceCompletion(p, 'before'); // [fencing]
    try {
      await this.storage.writeMetadata(pointer, metadata);
    } catch (err) {
      const failure = new SnapshotError(
        'SNAPSHOT_FAILED',
        `${kind} ${id} of job ${this.jobId} could not write its _metadata (${(err as Error).message}); it was aborted and its files removed. ` +
          'Earlier checkpoints are untouched; the next checkpoint will try again.',
        { cause: err },
      );
      await this.discardPending(p, 'STORAGE_IO', failure.message, isStreamStateError(err, 'ALREADY_EXISTS'), failure);
      throw failure;
    }
    await this.fenceCompletion(p, 'after'); // [fencing]
    const info = this.external.describe(completedInfo(pointer, metadata)); // [savepoints anywhere] outside: its absolute path or URL
    if (kind === 'checkpoint') {
      this.registry.registerCheckpoint(id, sharedKeys(pointer, metadata));
      this.fullRequired = false;
      this.completed.add({ info, origin: 'own' });
      for (const older of [...this.pending.values()]) {
        if (older.view.kind === 'checkpoint' && older.view.checkpointId < id) {
          this.pending.delete(older.view.checkpointId);
          const message = `checkpoint ${older.view.checkpointId} of job ${this.jobId} was subsumed by checkpoint ${id}, which completed first. Its files were removed.`;
          await this.discardPending(older, 'SUBSUMED', message, false);
        }
      }
      await this.subsume();
    }
    await this.bestEffort(() => this.lease?.renew() ?? Promise.resolve()); // [fencing] the holder is alive
    // Its uploads inside its directory (savepoints: all of them) are part of it now, not uploads to take over.
    this.registry.forgetUploads(
      this.registry.uploadsOf(id).filter((k) => kind === 'savepoint' || k.startsWith(`${pointer}/`)),
    );
    this.markEnded(
      id,
      pointer,
      'ALREADY_COMPLETED',
      `${kind} ${id} of job ${this.jobId} completed already (${pointer}).`,
    );
    this.statistics.reportCompleted(id, info.size);
    p.resolve(info);
    return { status: 'completed', checkpoint: info };
  }

  /**
   * [fencing] A fenced instance never completes a checkpoint or savepoint: the lease is checked
   * right before _metadata is written and again right after. Fenced before: nothing is written.
   * Fenced after (a newer instance started in between): the checkpoint is complete and stays,
   * unless its files are gone, in which case this instance removes its own _metadata again (the
   * one deletion a fenced instance makes). Either way this instance reports FENCED;
   * its other files are left for the newer instance's garbage collection. A storage failure of the
   * check before fails the checkpoint like a failed _metadata write; one after leaves it completed
   * (it cannot be told to be fenced).
   */
  private async fenceCompletion(p: Pending, when: 'before' | 'after'): Promise<void> {
    const { checkpointId: id, kind, pointer } = p.view;
    try {
      await this.lease?.check(`complete ${kind} ${id}`);
      return;
    } catch (err) {
      if (!isStreamStateError(err, 'FENCED')) {
        if (when === 'after') return;
        const failure = new SnapshotError(
          'SNAPSHOT_FAILED',
          `${kind} ${id} of job ${this.jobId} could not check its job lease before writing _metadata (${(err as Error).message}); it was aborted. ` +
            'Earlier checkpoints are untouched; the next checkpoint will try again.',
          { cause: err },
        );
        await this.discardPending(p, 'STORAGE_IO', failure.message, false, failure);
        throw failure;
      }
      // Fenced after writing: the newer instance may already have listed (and restored) this
      // checkpoint, so an intact one stays — deleting it could send the newer instance back in
      // time. Only a _metadata whose files are gone (a stall past the grace period let the newer
      // instance's gc take them) is removed again, through the unguarded store: it can never restore.
      if (when === 'after' && !(await this.allFilesPresent(pointer, this.metadataOf(p)))) {
        await this.bestEffort(() => this.storage.inner.store.delete([`${pointer}/_metadata`]));
      }
      await this.discardPending(p, 'FENCED', err.message, false, err);
      throw err;
    }
  }

  /** [fencing] Whether every file the snapshot at `pointer` references exists (a stat each). */
  private async allFilesPresent(pointer: string, metadata: CheckpointMetadata): Promise<boolean> {
    try {
      for (const key of fileKeys(pointer, metadata))
        if ((await this.storage.inner.store.stat(key)) === null) return false;
      return true;
    } catch {
      return true; // cannot tell: keep it (a _metadata is only ever removed when it is known broken)
    }
  }

  /**
   * The files checkpoint `p` references that it may not complete with. Allowed: (a) files in its
   * own directory; (b) shared uploads written through the streams of a checkpoint of this attempt
   * and not deleted since (its own, or e.g. a changelog materialization written for an earlier
   * checkpoint), which the registry still holds in its upload ledger; (c) files live in the
   * registry (not no-claim restored ones: those belong to someone else); (d) files in the job's
   * shared/ directory that no checkpoint wrote (a changelog's preemptive upload, written through
   * its own background streams) if they exist with the recorded size: nothing of ours deletes a
   * file the ledger and the registry do not know, except gc, which cannot run meanwhile.
   * Runs inside the serialized completion; every deletion takes a file out of the ledger or the
   * registry before deleting it, so a file that passes stays until the checkpoint is registered.
   */
  private async filesNotLive(p: Pending, metadata: CheckpointMetadata): Promise<string[]> {
    const { pointer } = p.view;
    const shared = `${this.jobId}/shared/`;
    const bad: string[] = [];
    const unknown = new Map<string, number>();
    for (const op of metadata.operators) {
      for (const s of op.subtasks) {
        for (const f of referencedFiles(subtaskStateHandles(s))) {
          const key = resolveHandlePath(pointer, f.path);
          if (key.startsWith(`${pointer}/`) || this.registry.isLive(key)) continue;
          if (!key.startsWith(shared) || this.registry.has(key)) bad.push(key);
          else if (this.registry.uploadedBy(key) === undefined) unknown.set(key, f.size);
        }
      }
    }
    for (const [key, size] of unknown) {
      const info = await this.storage.store.stat(key).catch(() => null);
      if (info === null || info.size !== size) bad.push(key);
    }
    return [...new Set(bad)];
  }

  /** Remembers how a checkpoint ended, for late acknowledgements (the newest MAX_ENDED only). */
  private markEnded(id: number, pointer: string, reason: CheckpointFailureReason, message: string): void {
    this.ended.set(id, { pointer, reason, message });
    while (this.ended.size > MAX_ENDED) this.ended.delete(this.ended.keys().next().value!);
  }

  private metadataOf(p: Pending): CheckpointMetadata {
    const operators: OperatorSnapshot[] = [];
    for (const op of this.operators.values()) {
      const acks = p.acks.get(op.operatorId)!;
      const subtasks = [...acks.entries()]
        .sort(([a], [b]) => a - b)
        .map(([subtaskIndex, ack]) => ({
          subtaskIndex,
          keyed: ack.keyed,
          operator: ack.operator,
          ...(ack.channel ? { channel: ack.channel } : {}),
        }));
      operators.push({
        operatorId: op.operatorId,
        parallelism: op.parallelism,
        maxParallelism: op.maxParallelism,
        subtasks,
      });
    }
    return {
      checkpointId: p.view.checkpointId,
      jobId: this.jobId,
      kind: p.view.kind,
      format: p.view.format,
      backend: this.options.backendName,
      timestamp: p.view.timestamp,
      operators,
    };
  }

  // ------------------------------------------------------------------ aborting, retention, cleanup

  /**
   * Aborts a pending checkpoint or savepoint: deletes its directory and the files its streams
   * wrote that nothing else uses (never a file it merely references). Unknown or ended ids: no-op.
   * `code` is the failure reason it ends with (TIMEOUT, DECLINED, TASK_NOT_READY, CANCELLED, ...).
   */
  async abort(checkpointId: number, reason: string, code: CheckpointFailureReason = 'ABORTED'): Promise<void> {
    const p = this.pending.get(checkpointId);
    if (p === undefined) return;
    this.pending.delete(checkpointId);
    const { kind } = p.view;
    const message = `${kind} ${checkpointId} of job ${this.jobId} was aborted: ${reason}. Its files were removed; trigger a new one.`;
    await this.serially(() => this.discardPending(p, code, message, false));
  }

  /**
   * Deletes what a checkpoint that will not complete wrote: its directory and the uploads its
   * streams wrote (and shared files it took over, see adoptedBy), except files the registry holds
   * (a completed checkpoint references them) or another in-flight checkpoint references.
   * `keepDirectory`: its directory holds someone else's _metadata (the id was taken), so only its
   * own uploads go.
   */
  private async discardPending(
    p: Pending,
    reason: CheckpointFailureReason,
    message: string,
    keepDirectory: boolean,
    error?: unknown,
  ): Promise<void> {
    const { checkpointId: id, kind, pointer } = p.view;
    this.markEnded(id, pointer, reason, message);
    p.reject(error ?? new CheckpointDeclinedError(id, reason, message));
    const wanted = this.wantedKeys(p);
    const doomed = [
      ...new Set([
        ...this.registry.discardAborted(id, wanted),
        ...this.adoptedBy(id, fileKeys(pointer, this.metadataOf(p)), wanted),
      ]),
    ];
    this.registry.forgetUploads(doomed);
    await this.bestEffort(async () => {
      if (keepDirectory) return;
      if (kind === 'checkpoint') await this.storage.discardCheckpointDirectory(this.jobId, id);
      else await this.deletePrefix(`${pointer}/`);
    });
    const rest = keepDirectory ? doomed : doomed.filter((k) => !k.startsWith(`${pointer}/`));
    if (rest.length > 0) await this.bestEffort(() => this.storage.store.delete(rest));
    // Shared files kept only because this checkpoint might reuse them (its reuse floor) are free
    // now; without this, an abort or a stop left them in shared/ until the next completion.
    await this.releaseUnusedShared();
    // Reported once its files are gone: a listener that triggers the next checkpoint finds a clean store.
    this.statistics.reportFailed(id, reason, message, this.clock());
  }

  /**
   * The files among `keys` (referenced by checkpoint `id`, which will not complete) that it owns:
   * its own uploads, and shared files nobody else owns that it took over: files of unknown origin
   * (a changelog's preemptive upload) and uploads of checkpoints no longer in flight (a
   * materialization written for an earlier checkpoint). Never a file `wanted` (registered, or
   * referenced by another in-flight checkpoint) nor an upload of another in-flight checkpoint.
   */
  private adoptedBy(id: number, keys: Iterable<string>, wanted: (key: string) => boolean): string[] {
    const shared = `${this.jobId}/shared/`;
    return [...new Set(keys)].filter((k) => {
      if (wanted(k)) return false;
      const writer = this.registry.uploadedBy(k);
      if (writer === id) return true;
      if (!k.startsWith(shared)) return false;
      return writer === undefined || !(this.pending.has(writer) || this.completing.has(writer));
    });
  }

  /**
   * Whether a file must stay: the registry holds it (a completed checkpoint references it, or it
   * came with the restored snapshot), or an in-flight checkpoint other than `except` references it.
   */
  private wantedKeys(except?: Pending): (key: string) => boolean {
    let referenced: Set<string> | null = null;
    return (key) => {
      if (this.registry.has(key)) return true;
      // Exclusive files of retained checkpoints are not registry entries: they go with their directory.
      if (this.completed.holdsExclusive(key)) return true;
      if (referenced === null) {
        referenced = new Set();
        for (const other of this.inFlight()) {
          if (other !== except) for (const k of fileKeys(other.view.pointer, this.metadataOf(other))) referenced.add(k);
        }
      }
      return referenced.has(key);
    };
  }

  /** Drops checkpoints beyond numRetained, then the shared files no retained or pending checkpoint can use. */
  private async subsume(): Promise<void> {
    for (const old of this.completed.takeSubsumed()) await this.bestEffort(() => this.discardRetained(old));
    await this.releaseUnusedShared();
  }

  private async discardRetained(c: RetainedCheckpoint): Promise<void> {
    if (c.origin === 'own') await this.storage.discardCheckpointDirectory(this.jobId, c.info.checkpointId);
    // A claimed foreign checkpoint: removing _metadata retires it; its files go through the registry.
    else await this.storage.store.delete([`${c.info.pointer}/_metadata`]);
  }

  private async releaseUnusedShared(): Promise<void> {
    let lowest = this.completed.lowestId();
    for (const p of this.inFlight()) lowest = Math.min(lowest, p.reuseFloor);
    const unused = this.registry.unregisterUnused(lowest);
    await this.bestEffort(() => this.storage.store.delete(unused));
  }

  /**
   * Deletes files of this job that nothing references: chk-<n> directories without _metadata
   * (a crash between the files and _metadata, or an abort that could not finish) and shared files
   * no retained checkpoint uses. Pending checkpoints are left alone; while any is pending, or
   * while a chk directory has a _metadata this coordinator cannot read, shared files are kept
   * (someone may reference them). Returns the deleted names.
   */
  async collectGarbage(): Promise<string[]> {
    this.checkStarted();
    return this.serially(async () => {
      await this.lease?.checkMayDelete('collect garbage'); // [fencing]
      const names = await this.storage.listJobFiles(this.jobId);
      const known = this.completed.ownIds();
      for (const p of this.inFlight()) known.add(p.view.checkpointId);
      const withMetadata = new Set<number>();
      for (const name of names) {
        const id = this.checkpointDirOf(name);
        if (id !== undefined && name.endsWith('/_metadata')) withMetadata.add(id);
      }
      const unreadable = [...withMetadata].some((id) => !known.has(id));
      const keepShared = unreadable || this.pending.size + this.completing.size > 0;
      const doomed: string[] = [];
      for (const name of names) {
        const id = this.checkpointDirOf(name);
        if (id !== undefined) {
          if (!known.has(id) && !withMetadata.has(id)) doomed.push(name);
        } else if (name.startsWith(`${this.jobId}/shared/`) && !keepShared && !this.registry.has(name)) {
          doomed.push(name);
        }
      }
      const deletable = await this.spareOtherInstances(doomed); // [fencing]
      this.registry.forgetUploads(deletable);
      if (deletable.length > 0) await this.storage.store.delete(deletable);
      return deletable;
    });
  }

  /**
   * [fencing] Of the files gc would delete, those no older, possibly still live instance of the
   * job may yet complete a checkpoint with (fencing-gc.ts: young files are spared while an older
   * lease is unreleased; they go at a later gc).
   */
  private async spareOtherInstances(doomed: string[]): Promise<string[]> {
    const lease = this.lease;
    if (doomed.length === 0 || lease === undefined) return doomed;
    const othersMayBeAlive = lease.olderLive.length > 0;
    const listing = othersMayBeAlive ? await this.storage.store.list(`${this.jobId}/`) : [];
    return deletableNow(doomed, listing, {
      jobId: this.jobId,
      firstOwnId: this.firstId,
      now: (this.options.fencing?.now ?? Date.now)(),
      minAgeMs: this.options.fencing?.minAgeMs ?? DEFAULT_FENCING_MIN_AGE_MS,
      othersMayBeAlive,
    });
  }

  /**
   * Stops the coordinator: aborts pending checkpoints and savepoints. On `cancel` with
   * onCancel = 'delete' it also deletes every retained checkpoint and the shared files they use
   * (never files of a no-claim restore). Idempotent.
   */
  async shutdown(how: 'cancel' | 'finish'): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const pending = [...this.pending.values()];
    this.pending.clear();
    await this.serially(async () => {
      for (const p of pending) {
        const message = `${p.view.kind} ${p.view.checkpointId} of job ${this.jobId} was aborted: the job ${how === 'cancel' ? 'was cancelled' : 'finished'}. Its files were removed.`;
        await this.discardPending(p, 'JOB_STOPPED', message, false);
      }
      if (how === 'cancel' && (this.options.onCancel ?? 'retain') === 'delete') {
        for (const c of this.completed.takeAll()) await this.bestEffort(() => this.discardRetained(c));
        await this.releaseUnusedShared();
      }
      // [fencing] A clean stop: later starts need not spare this instance's files.
      await this.bestEffort(() => this.lease?.release() ?? Promise.resolve());
      await this.external.close(); // [savepoints anywhere] S3 clients of outside locations
    });
  }

  // ------------------------------------------------------------------ helpers

  /** Checkpoints that may still reference (and write) files: pending and completing ones. */
  private *inFlight(): IterableIterator<Pending> {
    yield* this.pending.values();
    yield* this.completing.values();
  }

  /** Runs `fn` after every earlier completion/abort/cleanup has finished. */
  private serially<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async bestEffort(fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      this.options.onCleanupError?.(err);
    }
  }

  private async deletePrefix(prefix: string): Promise<void> {
    const blobs = await this.storage.store.list(prefix);
    if (blobs.length > 0) await this.storage.store.delete(blobs.map((b) => b.name));
  }

  /** The id of the chk-<n> directory a job file lies in, if any. */
  private checkpointDirOf(name: string): number | undefined {
    const prefix = `${this.jobId}/`;
    if (!name.startsWith(prefix)) return undefined;
    const dir = name.slice(prefix.length).split('/', 1)[0];
    const m = CHECKPOINT_DIR.exec(dir);
    return m && name.length > prefix.length + dir.length ? Number(m[1]) : undefined;
  }

  private operatorOf(operatorId: string, subtaskIndex: number): CoordinatedOperator {
    return operatorOf(this.operators, this.jobId, operatorId, subtaskIndex);
  }

  private checkStarted(): void {
    if (!this.started) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `call restore() before using the coordinator of job ${this.jobId}: it loads the job's retained checkpoints so ids continue and nothing is overwritten (it returns null when there is nothing to restore).`,
      );
    }
  }

  private checkRunning(): void {
    this.checkStarted();
    if (this.stopped)
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `the coordinator of job ${this.jobId} was shut down; create a new one (and restore) to take checkpoints.`,
      );
  }
}

/** Completed, aborted and declined checkpoints remembered for late acknowledgements. */
const MAX_ENDED = 1024;
