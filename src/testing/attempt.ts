import { performance } from 'node:perf_hooks';
import type { KeyedStateHandle, OperatorStateHandle } from '../backend/handles.js';
import type { RestoreSource, StateBackend } from '../backend/contract.js';
import type { SnapshotOptions } from '../backend/contract.js';
import type { CheckpointCoordinator, PendingCheckpoint, RestorePlan } from '../checkpoint/coordinator.js';
import type { CompletedCheckpointInfo } from '../checkpoint/metadata.js';
import { stopWithSavepoint, type StopMode } from '../checkpoint/stop-with-savepoint.js';
import { SnapshotError, StreamStateError } from '../errors.js';
import { keyGroupForKey, keyGroupRangeForSubtask, subtaskForKeyGroup } from '../keygroups/key-groups.js';
import type { Serializer } from '../serializers/serializer.js';
import { checkChannelStatePlaceable, placeInFlightRecords } from '../checkpoint/channel-state-restore.js';
import { msgpackSerializer } from '../serializers/builtins.js';
import {
  Channel,
  effectiveAlignment,
  InputGate,
  type BarrierElement,
  type GateBarrier,
  type RecordElement,
} from './channels.js';
import { barrierFor, InFlightStates, type CheckpointingMode, type SubtaskChannels } from './checkpointing-mode.js';
import { CheckpointTracker } from './checkpoint-tracker.js';
import type { ExternalSinkSubtask, PipelineSink } from './external-sink.js';
import type { ExternalSourceSubtask, PipelineSource } from './external-source.js';
import type { CommittedOutput } from './committed-output.js';
import { InjectedCrash, type CrashPredicate, type EventListener, type PipelineEvent } from './events.js';
import { KeyedOperatorSubtask, type ProcessFunction } from './keyed-operator.js';
import type { SavepointRequest, StopWithSavepointRequest } from './pipeline.js';
import { ScheduledCheckpoints, type PipelineCheckpointing } from './scheduled-checkpoints.js';
import type { ManualClock } from '../checkpoint/scheduler-clock.js';
import type { SeededRandom } from './rng.js';
import { SinkSubtask } from './sink.js';
import { SourceSubtask } from './source.js';
import type { SubtaskBase } from './tasks.js';

/** Everything an attempt needs that is fixed for the whole run. */
export interface AttemptConfig<IN, K, OUT> {
  readonly jobId: string;
  readonly input: readonly (readonly IN[])[];
  /** When set, the sources are created by it and `input` is not read. */
  readonly source: PipelineSource<IN> | null;
  /** When set, the sinks are created by it and commit to it; `output` is not written. */
  readonly sink: PipelineSink<OUT> | null;
  readonly keyBy: (record: IN) => K;
  readonly keySerializer: Serializer<K>;
  readonly process: ProcessFunction<IN, K, OUT>;
  readonly maxParallelism: number;
  readonly ids: { readonly source: string; readonly keyed: string; readonly sink: string };
  readonly backend: StateBackend;
  /** Count-based triggering (every this many source records); undefined when `checkpointing` schedules them. */
  readonly checkpointEvery: number | undefined;
  /** Time-based triggering through the library's CheckpointScheduler (scheduled-checkpoints.ts), on the run's virtual clock. */
  readonly checkpointing: { readonly options: PipelineCheckpointing; readonly clock: ManualClock } | null;
  readonly channelCapacity: number;
  /** Aligned, unaligned, aligned with a timeout, or at-least-once (checkpointing-mode.ts). */
  readonly mode: CheckpointingMode;
  /** Sinks read only on every this many scheduling steps (a slow external system; 1: as fast as the rest). */
  readonly slowSink: number;
  readonly output: CommittedOutput<OUT>;
  readonly rng: SeededRandom;
  readonly crash: CrashPredicate | null;
  /** The run's onEvent, filtered by RunOptions.eventTypes. */
  readonly events: EventListener;
  readonly clock?: () => number;
  /** Savepoint and stop requests not yet fired (each fires once over the whole run). */
  readonly requests: { savepoints: SavepointRequest[]; stop: StopWithSavepointRequest | null };
}

/** Counters that run across attempts. */
export interface RunTotals {
  recordsProcessed: number;
  recordsEmitted: number;
  bytesWritten: number;
  readonly completed: CompletedCheckpointInfo[];
  readonly aborted: number[];
  readonly savepoints: CompletedCheckpointInfo[];
  readonly savepointFailures: StreamStateError[];
  stopped: { readonly mode: StopMode; readonly savepoint: CompletedCheckpointInfo } | null;
}

export interface AttemptShape {
  readonly attempt: number;
  readonly parallelism: number;
  readonly sourceParallelism: number;
  readonly sinkParallelism: number;
}

/** A scheduling choice: a source subtask (channel -1), or one input channel of a keyed or sink subtask. */
interface Reader {
  readonly stage: 'source' | 'keyed' | 'sink';
  readonly index: number;
  readonly channel: number;
}

/** Yield to the event loop every this many steps, so asynchronous snapshot parts and acknowledgements progress. */
const STEPS_PER_YIELD = 64;
/** A scheduling choice processes up to this many elements of the chosen input. */
const MAX_BURST = 8;
/** A finished input gets a final checkpoint; give up when that keeps failing. */
const MAX_FINAL_CHECKPOINT_FAILURES = 3;

/**
 * One execution of the pipeline, from (possibly restored) state to the end of the input or a crash.
 * A crash is thrown out of run(); teardown() then discards every subtask without completing anything.
 */
export class Attempt<IN, K, OUT> {
  private readonly sources: (SourceSubtask<IN> | ExternalSourceSubtask<IN>)[] = [];
  private readonly keyed: KeyedOperatorSubtask<IN, K, OUT>[] = [];
  private readonly sinks: (SinkSubtask<OUT> | ExternalSinkSubtask<OUT>)[] = [];
  private readonly readers: Reader[] = [];
  /** sourceOutputs[s][k]: the channel from source subtask s to keyed subtask k. */
  private sourceOutputs: Channel<IN>[][] = [];
  private readonly tracker: CheckpointTracker;
  private readonly scheduling: ScheduledCheckpoints | null;
  private failure: unknown = undefined;
  private dead = false;
  private emittedSinceTrigger = 0;
  private finalFailures = 0;
  /** Ordinary savepoints under way (they settle once their acknowledgements have). */
  private readonly savepointRuns = new Set<Promise<void>>();
  /** A stop-with-savepoint under way; the run loop waits for it once nothing else can move. */
  private stopRun: Promise<void> | null = null;
  /** How the job ended, once a stop-with-savepoint succeeded. */
  private terminated: StopMode | null = null;
  /** Stop-with-savepoint: the barrier after which sources emit nothing, and the sources that injected it. */
  private haltAfter: number | null = null;
  private readonly halted = new Set<number>();
  /** Scheduling steps so far: the clock of aligned-checkpoint timeouts. */
  private steps = 0;
  /** A sink had input but was not ready this step because it is slow (RunOptions.slowSink). */
  private sinkThrottled = false;
  /** The barrier each triggered checkpoint or savepoint carries (alignment, timeout). */
  private readonly barriers = new Map<number, BarrierElement>();
  /** Aligned checkpoints with a timeout that may still have to switch somewhere: id -> the step it times out at. */
  private readonly timeouts = new Map<number, number>();
  private readonly inFlight = new InFlightStates(msgpackSerializer());
  /** The next checkpoint barrier is the final one: aligned, so that nothing stays in flight. */
  private finalAligned = false;
  /** Whether the newest checkpoint barrier left nothing in flight (aligned without timeout, or at-least-once). */
  private lastBarrierDrains = true;
  /** sinkInputs[i]: the upstream keyed subtask of each input channel of sink i. */
  private forwardToSink = false;
  /** Whether the per-record events are built at all: someone (the listener or the crash predicate) looks at them. */
  private readonly recordEvents: boolean;
  private readonly emitEvents: boolean;

  constructor(
    private readonly cfg: AttemptConfig<IN, K, OUT>,
    readonly shape: AttemptShape,
    private readonly coordinator: CheckpointCoordinator,
    private readonly totals: RunTotals,
  ) {
    this.recordEvents = cfg.crash !== null || cfg.events.hears('record');
    this.emitEvents = cfg.crash !== null || cfg.events.hears('emit');
    const subtasks = shape.sourceParallelism + shape.parallelism + shape.sinkParallelism;
    this.tracker = new CheckpointTracker(coordinator, subtasks, {
      completed: (info) => this.onCompleted(info),
      aborted: (id, reason) => this.onAborted(id, reason),
      isDead: () => this.dead,
      fatal: (err) => this.fail(err),
    });
    this.scheduling = cfg.checkpointing
      ? new ScheduledCheckpoints(coordinator, cfg.checkpointing.clock, cfg.checkpointing.options, {
          isDead: () => this.dead,
          inject: (pending) => {
            this.emittedSinceTrigger = 0;
            this.tracker.register(pending);
            this.inject(pending.checkpointId, 'checkpoint');
          },
          aborted: (id, reason) => {
            if (this.tracker.pending(id)?.kind !== 'savepoint') this.tracker.abortedByCoordinator(id, reason);
          },
          failJob: (err) => this.fail(err),
        })
      : null;
  }

  private get allSubtasks(): SubtaskBase[] {
    return [...this.sources, ...this.keyed, ...this.sinks];
  }

  /** Creates every subtask and its backends, restoring from `plan` when given. */
  async start(plan: RestorePlan | null): Promise<void> {
    const { cfg, shape } = this;
    const { parallelism: p, sourceParallelism: ps, sinkParallelism: pk } = shape;
    const cap = cfg.channelCapacity;
    const sourceToKeyed = grid<IN>(ps, p, cap);
    this.sourceOutputs = sourceToKeyed;
    const forward = pk === p;
    this.forwardToSink = forward;
    const now = () => this.steps;
    const keyedToSink = forward ? null : grid<OUT>(p, pk, cap);
    const forwardChannels = forward ? Array.from({ length: p }, () => new Channel<OUT>(cap)) : null;
    const common = (operatorId: string, subtaskIndex: number, parallelism: number) => ({
      jobId: cfg.jobId,
      operatorId,
      subtaskIndex,
      parallelism,
    });
    // Every backend opened so far, so that a failure half-way (e.g. a bad restore) leaves nothing open.
    const opened: { close(): Promise<void> }[] = [];
    const open = async <B extends { close(): Promise<void> }>(created: Promise<B>): Promise<B> => {
      const b = await created;
      opened.push(b);
      return b;
    };
    try {
      const external = { jobId: cfg.jobId, attempt: shape.attempt, parallelism: ps, restoring: plan !== null };
      if (cfg.source) await cfg.source.openAttempt(external);
      for (let i = 0; i < ps; i++) {
        const restore = plan ? restoreFor(plan, cfg.ids.source, i) : null;
        const ob = await open(
          cfg.backend.createOperatorStateBackend({
            ...common(cfg.ids.source, i, ps),
            ...(restore ? { restore: restore.operator } : {}),
          }),
        );
        const assigned = plan ? null : cfg.input.map((_, j) => j).filter((j) => j % ps === i);
        const source = cfg.source
          ? await open(
              cfg.source.createSubtask({
                ...external,
                operatorId: cfg.ids.source,
                subtaskIndex: i,
                operatorBackend: ob,
              }),
            )
          : new SourceSubtask<IN>(cfg.ids.source, i, ob, cfg.input, assigned);
        this.sources.push(source);
        this.readers.push({ stage: 'source', index: i, channel: -1 });
      }
      for (let i = 0; i < p; i++) {
        const restore = plan ? restoreFor(plan, cfg.ids.keyed, i) : null;
        const ob = await open(
          cfg.backend.createOperatorStateBackend({
            ...common(cfg.ids.keyed, i, p),
            ...(restore ? { restore: restore.operator } : {}),
          }),
        );
        const kb = await open(
          cfg.backend.createKeyedStateBackend<K>({
            ...common(cfg.ids.keyed, i, p),
            maxParallelism: cfg.maxParallelism,
            keyGroupRange: keyGroupRangeForSubtask(cfg.maxParallelism, p, i),
            keySerializer: cfg.keySerializer,
            ...(restore ? { restore: restore.keyed } : {}),
            ...(cfg.clock ? { clock: cfg.clock } : {}),
          }),
        );
        const gate = new InputGate<IN>(
          sourceToKeyed.map((row) => row[i]),
          now,
        );
        const outputs = forwardChannels ? [forwardChannels[i]] : keyedToSink![i];
        this.keyed.push(
          new KeyedOperatorSubtask<IN, K, OUT>(cfg.ids.keyed, i, p, ob, kb, gate, outputs, cfg.keyBy, cfg.process),
        );
        for (let c = 0; c < ps; c++) this.readers.push({ stage: 'keyed', index: i, channel: c });
      }
      for (let i = 0; i < pk; i++) {
        const restore = plan ? restoreFor(plan, cfg.ids.sink, i) : null;
        const ob = await open(
          cfg.backend.createOperatorStateBackend({
            ...common(cfg.ids.sink, i, pk),
            ...(restore ? { restore: restore.operator } : {}),
          }),
        );
        const gate = new InputGate<OUT>(
          forwardChannels ? [forwardChannels[i]] : keyedToSink!.map((row) => row[i]),
          now,
        );
        const sink = cfg.sink
          ? await open(
              cfg.sink.createSubtask({
                jobId: cfg.jobId,
                attempt: shape.attempt,
                operatorId: cfg.ids.sink,
                subtaskIndex: i,
                parallelism: pk,
                restoring: plan !== null,
                operatorBackend: ob,
                gate,
              }),
            )
          : new SinkSubtask<OUT>(cfg.ids.sink, i, ob, gate, cfg.output, shape.attempt, (tx) =>
              this.event({
                type: 'commit',
                attempt: shape.attempt,
                transactionId: tx.transactionId,
                checkpointId: tx.checkpointId,
              }),
            );
        this.sinks.push(sink);
        for (let c = 0; c < gate.channels.length; c++) this.readers.push({ stage: 'sink', index: i, channel: c });
      }
      for (const sink of this.sinks) await sink.commitRestored();
      if (plan) await this.recoverInFlight(plan);
    } catch (err) {
      await Promise.allSettled(opened.map((b) => b.close()));
      throw err;
    }
  }

  /** Runs to the end of the input (and its final checkpoint). Throws InjectedCrash on a crash. */
  async run(): Promise<void> {
    const ready: Reader[] = [];
    this.scheduling?.start();
    for (;;) {
      this.throwIfFailed();
      ready.length = 0;
      this.sinkThrottled = false;
      for (const r of this.readers) if (this.isReady(r)) ready.push(r);
      if (ready.length === 0 && this.sinkThrottled) {
        // Only a slow sink could move, and not on this step: time passes.
        await this.idleStep();
        continue;
      }
      if (ready.length === 0) {
        // An external source with an empty buffer is not at its end: wait for its next record (or its end).
        const waits = this.sources
          .map((s) => ('waitForInput' in s ? s.waitForInput() : null))
          .filter((w) => w !== null);
        if (waits.length > 0) {
          for (const w of waits) w.catch(() => undefined); // the race reports the first failure; the others must not go unhandled
          await Promise.race(waits);
          continue;
        }
        // Scheduled checkpoints: the input has ended (unless a stop halted the sources); time passes
        // while acknowledgements are under way (timeouts can fire).
        if (this.scheduling && this.stopRun === null) this.scheduling.endOfInput();
        if (this.scheduling && (await this.scheduling.waitIdle(this.tracker.busy ? this.tracker.settle() : null)))
          continue;
        await this.tracker.settle();
        this.throwIfFailed();
        if (this.stopRun !== null) {
          // Every barrier went through: the stop's savepoint has completed or failed by now.
          await this.stopRun;
          this.stopRun = null;
          this.throwIfFailed();
          if (this.terminated !== null) return;
          continue; // it failed: the sources read on
        }
        if (this.needsFinalCheckpoint()) {
          // Aligned, whatever the mode: an unaligned barrier would leave the overtaken records uncommitted at the end.
          this.finalAligned = true;
          this.triggerCheckpoint();
          continue;
        }
        return;
      }
      // The chosen reader runs a burst of a random length (cheaper than re-scanning after every element).
      const reader = ready[ready.length === 1 ? 0 : this.cfg.rng.int(ready.length)];
      const burst = 1 + this.cfg.rng.int(MAX_BURST);
      for (let b = 0; b < burst && (b === 0 || this.isReady(reader)); b++) {
        const step = this.step(reader);
        if (step) {
          await step;
          break;
        }
      }
      const idle = this.idleStep();
      if (idle) await idle;
    }
  }

  /**
   * The end of every scheduling step: time (the virtual clock, aligned timeouts) moves on. Returns a
   * promise only when there is something to wait for (a timeout switch, the periodic yield), so the
   * ordinary step costs no await: microtasks still run at every yield and every awaited step.
   */
  private idleStep(): Promise<void> | undefined {
    this.scheduling?.tick();
    if (this.timeouts.size > 0) return this.switchTimedOut().then(() => this.countStep());
    return this.countStep();
  }

  /** Counts a scheduling step (after any timeout switch, which reads the step count), yielding to the event loop every STEPS_PER_YIELD steps. */
  private countStep(): Promise<void> | undefined {
    if (++this.steps % STEPS_PER_YIELD !== 0) return undefined;
    return new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** Closes everything after a normal end. */
  async finish(): Promise<void> {
    await this.scheduling?.close();
    await this.tracker.settle();
    await Promise.allSettled([...this.savepointRuns]);
    this.dead = true;
    await this.closeAll();
    this.totals.bytesWritten += this.tracker.bytesWritten;
  }

  /**
   * Discards the attempt after a crash: no more notifications or commits; backends closed (which
   * cancels in-flight snapshots); acknowledgements already under way are allowed to settle.
   */
  async teardown(): Promise<void> {
    this.dead = true;
    this.inFlight.cancelAll();
    await this.scheduling?.close();
    await this.closeAll();
    await this.tracker.settle();
    this.totals.bytesWritten += this.tracker.bytesWritten;
  }

  private async closeAll(): Promise<void> {
    await Promise.allSettled(this.allSubtasks.map((t) => t.close()));
  }

  private isReady(r: Reader): boolean {
    switch (r.stage) {
      case 'source': {
        const s = this.sources[r.index];
        if (s.pendingBarriers.length > 0) return true;
        if (s.exhausted || this.halted.has(r.index)) return false;
        for (const c of this.sourceOutputs[r.index]) if (!c.hasRoom) return false;
        return true;
      }
      case 'keyed': {
        const k = this.keyed[r.index];
        return k.gate.isReadable(r.channel) && k.outputsHaveRoom;
      }
      case 'sink': {
        if (!this.sinks[r.index].gate.isReadable(r.channel)) return false;
        if (this.cfg.slowSink > 1 && this.steps % this.cfg.slowSink !== 0) {
          this.sinkThrottled = true;
          return false;
        }
        return true;
      }
    }
  }

  /** Runs one scheduling choice. Returns a promise only when it has to wait (snapshots, triggers). */
  private step(r: Reader): Promise<void> | void {
    switch (r.stage) {
      case 'source':
        return this.stepSource(r.index);
      case 'keyed': {
        const k = this.keyed[r.index];
        const element = k.gate.poll(r.channel);
        if (element === null) return this.tracker.alignmentStarted(k, k.gate.aligningCheckpoint);
        if (element.kind === 'barrier') return this.onGateBarrier(k, element, k.outputs);
        this.processRecord(k, element);
        return;
      }
      case 'sink': {
        const s = this.sinks[r.index];
        const element = s.gate.poll(r.channel);
        if (element === null) return this.tracker.alignmentStarted(s, s.gate.aligningCheckpoint);
        if (element.kind === 'barrier') return this.onGateBarrier(s, element, []);
        s.write(element.value);
        return;
      }
    }
  }

  private stepSource(i: number): Promise<void> | void {
    const source = this.sources[i];
    const outputs = this.sourceOutputs[i];
    const barrier = source.pendingBarriers.shift();
    if (barrier !== undefined) {
      this.event({
        type: 'barrier',
        attempt: this.shape.attempt,
        subtaskIndex: i,
        checkpointId: barrier,
        step: this.steps,
      });
      if (barrier === this.haltAfter) this.halted.add(i); // stop-with-savepoint: nothing after this barrier
      return this.snapshotAndForward(source, barrier, outputs);
    }
    const next = source.next();
    if (next === null) return;
    const keyGroup = keyGroupForKey(this.cfg.keyBy(next.value), this.cfg.keySerializer, this.cfg.maxParallelism);
    const target = subtaskForKeyGroup(this.cfg.maxParallelism, this.shape.parallelism, keyGroup);
    outputs[target].pushRecord(next.value, next.origin, keyGroup);
    this.totals.recordsEmitted++;
    if (this.emitEvents)
      this.event({ type: 'emit', attempt: this.shape.attempt, subtaskIndex: i, origin: next.origin, target });
    this.fireRequests();
    const every = this.cfg.checkpointEvery;
    if (++this.emittedSinceTrigger >= (every ?? Number.POSITIVE_INFINITY)) return this.triggerCheckpoint();
  }

  /** Savepoint and stop requests due at this many emitted records. */
  private fireRequests(): void {
    const n = this.totals.recordsEmitted;
    const { requests } = this.cfg;
    if (requests.stop === null && requests.savepoints.length === 0) return; // the usual case: no array built per record
    for (const req of requests.savepoints.filter((r) => r.afterRecords === n)) {
      requests.savepoints.splice(requests.savepoints.indexOf(req), 1);
      this.takeSavepoint(req);
    }
    if (requests.stop !== null && requests.stop.afterRecords === n && this.stopRun === null) {
      const req = requests.stop;
      requests.stop = null;
      this.beginStop(req);
    }
  }

  /** An ordinary savepoint: barriers like a checkpoint's; no notification, no commit when it completes. */
  private takeSavepoint(req: SavepointRequest): void {
    let pending: PendingCheckpoint;
    try {
      pending = this.coordinator.triggerSavepoint({ target: req.target, format: req.format });
    } catch (err) {
      this.savepointFailed(null, err, false);
      return;
    }
    this.tracker.adopt(pending);
    this.inject(pending.checkpointId, 'savepoint');
    const run = pending.completion.then(
      (info) => this.savepointCompleted(info, false),
      (err: unknown) => this.savepointFailed(pending.checkpointId, err, false),
    );
    this.savepointRuns.add(run);
  }

  /** Stop- or cancel-with-savepoint through the library's sequence (src/checkpoint/stop-with-savepoint.ts). */
  private beginStop(req: StopWithSavepointRequest): void {
    const mode = req.mode ?? 'stop';
    let savepointId: number | null = null;
    const run = stopWithSavepoint(
      this.coordinator,
      {
        injectTerminalBarrier: (sp: PendingCheckpoint) => {
          savepointId = sp.checkpointId;
          this.tracker.adopt(sp);
          this.haltAfter = sp.checkpointId;
          this.inject(sp.checkpointId, 'savepoint');
        },
        resume: () => {
          this.haltAfter = null;
          this.halted.clear();
        },
        notifyComplete: async (info) => {
          if (this.dead) return;
          await this.commitSinks(info.checkpointId);
          await Promise.allSettled(this.allSubtasks.map((t) => t.notifyCheckpointComplete(info.checkpointId)));
        },
        terminate: (how) => {
          this.terminated = how;
        },
      },
      { target: req.target, format: req.format, mode, scheduler: this.scheduling?.scheduler },
    );
    this.stopRun = run.then(
      (info) => {
        this.savepointCompleted(info, true);
        this.totals.stopped = { mode, savepoint: info };
        this.event({ type: 'stopped', attempt: this.shape.attempt, mode, checkpointId: info.checkpointId });
      },
      (err: unknown) => this.savepointFailed(savepointId, err, true),
    );
    this.stopRun.catch((err: unknown) => this.fail(err));
  }

  private savepointCompleted(info: CompletedCheckpointInfo, stop: boolean): void {
    this.totals.savepoints.push(info);
    this.event({
      type: 'savepoint-completed',
      attempt: this.shape.attempt,
      checkpointId: info.checkpointId,
      pointer: info.pointer,
      stop,
    });
  }

  private savepointFailed(checkpointId: number | null, err: unknown, stop: boolean): void {
    const error =
      err instanceof StreamStateError
        ? err
        : new SnapshotError('SNAPSHOT_FAILED', `savepoint failed: ${String(err)}`, { cause: err });
    this.totals.savepointFailures.push(error);
    this.event({ type: 'savepoint-failed', attempt: this.shape.attempt, checkpointId, reason: error.message, stop });
  }

  private processRecord(k: KeyedOperatorSubtask<IN, K, OUT>, element: RecordElement<IN>): void {
    const n = this.totals.recordsProcessed + 1;
    if (this.recordEvents) {
      this.event({
        type: 'record',
        attempt: this.shape.attempt,
        subtaskIndex: k.subtaskIndex,
        origin: element.origin,
        recordsProcessed: n,
        inFlightSnapshots: this.tracker.inFlightSnapshots,
      });
    }
    k.process(element);
    this.totals.recordsProcessed = n;
  }

  private triggerCheckpoint(): void {
    if (this.scheduling) return this.scheduling.requestFinal(); // the end of the input; periodic ones come from the scheduler
    this.emittedSinceTrigger = 0;
    const id = this.tracker.trigger();
    this.inject(id, 'checkpoint');
  }

  /** Queues the barrier of a triggered checkpoint or savepoint at every source, with the alignment the mode gives it. */
  private inject(checkpointId: number, kind: 'checkpoint' | 'savepoint'): void {
    const forceAligned = kind === 'checkpoint' && this.finalAligned;
    const barrier: BarrierElement = forceAligned
      ? { kind: 'barrier', checkpointId }
      : barrierFor(checkpointId, kind, this.cfg.mode, this.steps);
    if (kind === 'checkpoint') {
      this.finalAligned = false;
      this.lastBarrierDrains = barrier.alignment !== 'unaligned' && barrier.timeoutAt === undefined;
    }
    this.barriers.set(checkpointId, barrier);
    if (barrier.timeoutAt !== undefined) this.timeouts.set(checkpointId, barrier.timeoutAt);
    for (const s of this.sources) s.pendingBarriers.push(checkpointId);
  }

  /**
   * The aligned-checkpoint timeout (an active timer, as in Flink): once a checkpoint's timeout has
   * passed, every task still aligning it, or whose input holds its barrier behind records,
   * switches to unaligned now. Barriers sent later go out unaligned (effectiveAlignment).
   */
  private async switchTimedOut(): Promise<void> {
    for (const [id, at] of this.timeouts) {
      if (this.steps < at) continue;
      if (this.tracker.pending(id) === null) {
        this.timeouts.delete(id);
        continue;
      }
      for (const k of this.keyed) {
        const b = k.gate.timeOut(id);
        if (b) await this.onGateBarrier(k, b, k.outputs);
      }
      for (const s of this.sinks) {
        const b = s.gate.timeOut(id);
        if (b) await this.onGateBarrier(s, b, []);
      }
    }
  }

  /** The channels of a subtask, named by the subtask on their other end (what channel state records). */
  private channelsOf(task: SubtaskBase): SubtaskChannels {
    const { sourceParallelism: ps, parallelism: p, sinkParallelism: pk } = this.shape;
    if (task.operatorId === this.cfg.ids.source)
      return { inputChannels: 0, outputChannels: p, inputPartitioning: 'keyed', outputPartitioning: 'keyed' };
    if (task.operatorId === this.cfg.ids.keyed)
      return { inputChannels: ps, outputChannels: pk, inputPartitioning: 'keyed', outputPartitioning: 'round-robin' };
    return { inputChannels: p, outputChannels: 0, inputPartitioning: 'round-robin', outputPartitioning: 'round-robin' };
  }

  /** Gate channel c of `task` -> the index of the upstream subtask (a forward sink's one channel is its own index). */
  private upstreamOf(task: SubtaskBase): (c: number) => number {
    return task.operatorId === this.cfg.ids.sink && this.forwardToSink ? () => task.subtaskIndex : (c) => c;
  }

  /** Output channel j of `task` -> the index of the downstream subtask. */
  private downstreamOf(task: SubtaskBase, j: number): number {
    return task.operatorId === this.cfg.ids.keyed && this.forwardToSink ? task.subtaskIndex : j;
  }

  /** A barrier came out of a task's input gate: snapshot (and forward), and/or finish its input channel state. */
  private async onGateBarrier<T>(
    task: SubtaskBase,
    b: GateBarrier<unknown>,
    outputs: readonly Channel<T>[],
  ): Promise<void> {
    if (b.snapshot !== false) await this.snapshotAndForward(task, b.checkpointId, outputs);
    if (b.inFlight !== undefined && this.inFlight.has(task, b.checkpointId))
      this.inFlight.finish(task, b.checkpointId, b.inFlight, this.upstreamOf(task));
  }

  /**
   * A restore from an unaligned checkpoint: every new keyed and sink subtask gets the in-flight
   * records meant for it (placed by key group or round-robin, channel-state-restore.ts), to process
   * before any new input.
   */
  private async recoverInFlight(plan: RestorePlan): Promise<void> {
    const { metadata, files } = plan;
    if (!metadata.operators.some((op) => op.subtasks.some((s) => s.channel !== undefined))) return;
    const { ids, maxParallelism } = this.cfg;
    const exchanges = [
      { producer: ids.source, consumer: ids.keyed, parallelism: this.shape.parallelism, maxParallelism },
      { producer: ids.keyed, consumer: ids.sink, parallelism: this.shape.sinkParallelism, maxParallelism },
    ];
    checkChannelStatePlaceable(metadata, exchanges);
    const serializer = msgpackSerializer<unknown>();
    const asElement = <T>(r: { value: unknown; keyGroup?: number }): RecordElement<T> => ({
      kind: 'record',
      value: r.value as T,
      origin: { partition: -1, offset: -1 },
      ...(r.keyGroup !== undefined ? { keyGroup: r.keyGroup } : {}),
    });
    const toKeyed = await placeInFlightRecords(metadata, files, exchanges[0], serializer);
    const toSink = await placeInFlightRecords(metadata, files, exchanges[1], serializer);
    toKeyed.forEach((records, i) => this.keyed[i].gate.recover(records.map((r) => asElement<IN>(r))));
    toSink.forEach((records, i) => this.sinks[i].gate.recover(records.map((r) => asElement<OUT>(r))));
    for (let i = 0; i < this.keyed.length; i++)
      if (this.keyed[i].gate.recovering) this.readers.push({ stage: 'keyed', index: i, channel: -1 });
    for (let i = 0; i < this.sinks.length; i++)
      if (this.sinks[i].gate.recovering) this.readers.push({ stage: 'sink', index: i, channel: -1 });
    this.event({
      type: 'in-flight-restored',
      attempt: this.shape.attempt,
      records: toKeyed.flat().length + toSink.flat().length,
    });
  }

  /**
   * The barrier of `checkpointId` is aligned at `task`: snapshot (operator state, then keyed state;
   * nothing touches state until the synchronous parts are done), forward the barrier, and let the
   * tracker acknowledge when the asynchronous parts finish.
   */
  private async snapshotAndForward<T>(
    task: SubtaskBase,
    checkpointId: number,
    outputs: readonly Channel<T>[],
  ): Promise<void> {
    const pending = this.tracker.pending(checkpointId);
    const barrier = this.barriers.get(checkpointId) ?? { kind: 'barrier', checkpointId };
    const unaligned = effectiveAlignment(barrier, this.steps) === 'unaligned';
    if (pending) {
      try {
        // Savepoints: the coordinator's options as they are (type, format, full); checkpoints as this runtime always took them.
        const options: SnapshotOptions =
          pending.kind === 'savepoint'
            ? pending.snapshotOptions(task.operatorId, task.subtaskIndex)
            : {
                type: 'checkpoint',
                full: pending.full,
                streams: pending.streamsFor(task.operatorId, task.subtaskIndex),
              };
        const syncStart = performance.now();
        const snapshot = await task.snapshotState(checkpointId, options);
        const syncDurationMs = performance.now() - syncStart;
        const channel =
          unaligned && pending.kind === 'checkpoint'
            ? this.inFlight.start(
                task,
                checkpointId,
                pending.streamsFor(task.operatorId, task.subtaskIndex),
                this.channelsOf(task),
              )
            : undefined;
        this.tracker.track(
          checkpointId,
          task.operatorId,
          task.subtaskIndex,
          channel ? { ...snapshot, channel } : snapshot,
          {
            syncDurationMs,
          },
        );
      } catch (err) {
        this.tracker.failSubtask(checkpointId, err);
      }
    }
    const tracked = this.inFlight.has(task, checkpointId);
    outputs.forEach((c, j) => {
      // Unaligned: the barrier overtakes what is queued; those records are this subtask's output channel state.
      if (unaligned) {
        const overtaken = c.pushPriority(barrier);
        if (tracked) this.inFlight.addOutput(task, checkpointId, this.downstreamOf(task, j), overtaken);
      } else c.push(barrier);
    });
    // A source has no inputs: its channel state is complete once the barrier went out.
    if (tracked && task.operatorId === this.cfg.ids.source) this.inFlight.finish(task, checkpointId, null);
    this.event({
      type: 'snapshot',
      attempt: this.shape.attempt,
      operatorId: task.operatorId,
      subtaskIndex: task.subtaskIndex,
      checkpointId,
    });
  }

  private needsFinalCheckpoint(): boolean {
    if (this.terminated !== null) return false;
    if (this.emittedSinceTrigger === 0 && !this.tracker.lastTriggeredFailed && this.lastBarrierDrains) return false;
    if (this.tracker.lastTriggeredFailed && ++this.finalFailures > MAX_FINAL_CHECKPOINT_FAILURES) {
      throw new SnapshotError(
        'SNAPSHOT_FAILED',
        `the final checkpoint failed ${MAX_FINAL_CHECKPOINT_FAILURES} times in a row (see the 'checkpoint-aborted' events for the reasons); the output of the last epoch was not committed.`,
      );
    }
    return true;
  }

  private async onCompleted(info: CompletedCheckpointInfo): Promise<void> {
    this.totals.completed.push(info);
    try {
      this.event({
        type: 'checkpoint-completed',
        attempt: this.shape.attempt,
        checkpointId: info.checkpointId,
        pointer: info.pointer,
        step: this.steps,
      });
      if (this.dead) return; // a discarded attempt's tasks never hear of it; the restored sink commits instead
      await this.commitSinks(info.checkpointId);
      await Promise.allSettled(this.allSubtasks.map((t) => t.notifyCheckpointComplete(info.checkpointId)));
    } catch (err) {
      this.fail(err);
    }
  }

  /** The in-process sink commits synchronously (no await, so its order is unchanged); an external one is awaited, and its failure fails the attempt. */
  private async commitSinks(checkpointId: number): Promise<void> {
    for (const sink of this.sinks) {
      const committing = sink.commitUpTo(checkpointId);
      if (committing) await committing;
    }
  }

  private async onAborted(checkpointId: number, reason: string): Promise<void> {
    this.totals.aborted.push(checkpointId);
    try {
      this.event({ type: 'checkpoint-aborted', attempt: this.shape.attempt, checkpointId, reason });
      await Promise.allSettled(this.allSubtasks.map((t) => t.notifyCheckpointAborted(checkpointId)));
    } catch (err) {
      this.fail(err);
    }
  }

  /** Reports an event; throws InjectedCrash when the crash predicate says so. */
  private event(e: PipelineEvent): void {
    this.cfg.events.listener?.(e);
    if (!this.dead && this.cfg.crash?.(e)) throw new InjectedCrash(e);
  }

  /** The attempt has failed: from now on it completes nothing (no commits, no notifications); run() throws at its next step. */
  private fail(err: unknown): void {
    if (this.failure === undefined) this.failure = err;
    this.dead = true;
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }
}

function grid<T>(rows: number, cols: number, capacity: number): Channel<T>[][] {
  return Array.from({ length: rows }, () => Array.from({ length: cols }, () => new Channel<T>(capacity)));
}

function restoreFor(
  plan: RestorePlan,
  operatorId: string,
  subtaskIndex: number,
): { keyed: RestoreSource<KeyedStateHandle>; operator: RestoreSource<OperatorStateHandle> } | null {
  return plan.operators.get(operatorId)?.[subtaskIndex] ?? null;
}
