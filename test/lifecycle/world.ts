import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import type { KeyedStateBackend, SnapshotTask, StateBackend } from '../../src/backend/contract.js';
import { referencedFiles, type KeyedStateHandle } from '../../src/backend/handles.js';
import { assignKeyedState } from '../../src/checkpoint/assignment.js';
import { CheckpointCoordinator, type PendingCheckpoint } from '../../src/checkpoint/coordinator.js';
import { ChannelStateWriter, readChannelState, type ChannelStateHandle } from '../../src/checkpoint/channel-state.js';
import { subtaskStateHandles, type CompletedCheckpointInfo } from '../../src/checkpoint/metadata.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import { resolveHandlePath } from '../../src/checkpoint/streams.js';
import { run as runCli, type CliIo } from '../../src/cli/run.js';
import { isStreamStateError } from '../../src/errors.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import {
  JOB,
  KEYS,
  MAX_P,
  NUM_KEYS,
  OP,
  USER_KEYS,
  applyToBackend,
  applyToModel,
  diff,
  ownerOf,
  partOf,
  readBackend,
  subtaskRange,
  type Flat,
  type KeyWrite,
} from './model.js';
import { Sentinel, listTree, readOnlyCheckpointStorage } from './storage-check.js';
import { GatedStreamFactory } from '../../src/conformance/backend/gated-streams.js';
import { STORAGE_DIR, type LifecycleVariant } from './variants.js';

/** One subtask's snapshot of one checkpoint, and the part of the model it captured. */
interface SubtaskSnapshot {
  readonly task: SnapshotTask<KeyedStateHandle>;
  /** In-flight records as an unaligned checkpoint would store them: one record naming checkpoint and subtask. */
  readonly channel: Promise<ChannelStateHandle | null>;
  readonly part: ReadonlyMap<string, string>;
  acked: boolean;
  /** A held snapshot: its I/O waits at this gate (opened by its acknowledgement, an abort notice, or close). */
  readonly held: GatedStreamFactory | null;
  /** Its asynchronous part has ended (`task.done` settled). */
  settled: boolean;
  /** notifyCheckpointAborted(id) reached this subtask before the snapshot ended: it may be cancelled. */
  abortNoticed: boolean;
  /** ... and it was held in its I/O then: it must be cancelled. */
  mustBeCancelled: boolean;
}

/** A checkpoint one instance triggered, as the test knows it. */
interface CheckpointRec {
  readonly id: number;
  readonly view: PendingCheckpoint;
  readonly snaps: Map<number, SubtaskSnapshot>;
  /** How it ended, as far as the test knows (undefined: pending). */
  ended?: 'completed' | 'aborted' | 'declined' | 'subsumed' | 'fenced';
}

/** One running instance of the job: a coordinator and one keyed backend per subtask. */
interface Instance {
  readonly label: string;
  readonly coordinator: CheckpointCoordinator;
  readonly parallelism: number;
  readonly keyed: KeyedStateBackend<string>[];
  readonly checkpoints: CheckpointRec[];
  /** Per subtask, the highest checkpoint id it snapshotted (barriers arrive in order). */
  readonly lastSnapshot: number[];
}

/** The outcome of acknowledge(), whichever return type the coordinator has: `AcknowledgeResult` or `CompletedCheckpointInfo | null`. */
export type AckOutcome =
  | { readonly status: 'waiting'; readonly legacy?: boolean }
  | { readonly status: 'completed'; readonly checkpointId: number }
  | { readonly status: 'rejected'; readonly reason: string };

export function adaptAck(result: unknown): AckOutcome {
  // The older return type: null meant "not completed" (waiting, or a late acknowledgement).
  if (result === null || result === undefined) return { status: 'waiting', legacy: true };
  if (typeof result !== 'object') throw new Error(`acknowledge() returned ${String(result)}`);
  const r = result as Record<string, unknown>;
  if (r.status === 'waiting') return { status: 'waiting' };
  if (r.status === 'completed')
    return { status: 'completed', checkpointId: (r.checkpoint as CompletedCheckpointInfo).checkpointId };
  if (r.status === 'rejected') return { status: 'rejected', reason: String(r.reason) };
  if (typeof r.checkpointId === 'number' && typeof r.pointer === 'string')
    return { status: 'completed', checkpointId: r.checkpointId };
  throw new Error(`acknowledge() returned an unknown result ${JSON.stringify(result)}`);
}

export interface LifecycleStats {
  steps: number;
  /** Retained checkpoints restored into fresh backends and compared with the model. */
  restoresChecked: number;
  /** Checks of a retained checkpoint whose files had not changed since its last restore (not restored again). */
  restoresUnchanged: number;
  completed: number;
  declined: number;
  crashes: number;
  secondInstances: number;
  fencedErrors: number;
  /** Snapshots an abort notice cancelled while they were writing. */
  cancelledByAbort: number;
}

export function emptyStats(): LifecycleStats {
  return {
    steps: 0,
    restoresChecked: 0,
    restoresUnchanged: 0,
    completed: 0,
    declined: 0,
    crashes: 0,
    secondInstances: 0,
    fencedErrors: 0,
    cancelledByAbort: 0,
  };
}

/** A lifecycle invariant was broken. The message holds the step, the symptom and the recent history. */
export class LifecycleViolation extends Error {}

const MAX_PENDING = 3;
/** Snapshot and notification commands choose among the most recent checkpoints only. */
const RECENT = 5;

/**
 * The system under test and its model, driven one command at a time: the job (coordinator and
 * backends of the live instance, and an older instance still running after a second one started),
 * the plain model (live state, state captured per completed checkpoint) and the checks.
 */
export class LifecycleWorld {
  readonly stats = emptyStats();
  private readonly history: string[] = [];
  private readonly model = new Map<string, string>();
  private readonly expected = new Map<number, Flat>();
  /** Per checkpoint, the storage fingerprint at which it last restored correctly. */
  private readonly verifiedAt = new Map<number, string>();
  private live!: Instance;
  private zombie: Instance | null = null;
  private stamp = 0;
  /** A crash or a second instance happened: some instance's lease was never released. */
  private olderLeaseUnreleased = false;
  private instances = 0;
  private readonly backend: StateBackend;
  private readonly storage: CheckpointStorage;
  private readonly verifier: StateBackend;
  /** The same storage, read-only: what the checks restore from. */
  private readonly readOnly: CheckpointStorage;

  private constructor(
    readonly variant: LifecycleVariant,
    private readonly root: string,
    private readonly numRetained: number,
    private readonly sentinel: Sentinel,
  ) {
    const made = variant.make(root);
    this.backend = made.backend;
    this.storage = made.storage;
    this.verifier = variant.verifier(root);
    this.readOnly = readOnlyCheckpointStorage(join(root, STORAGE_DIR));
  }

  static async create(variant: LifecycleVariant, parallelism: number, numRetained: number): Promise<LifecycleWorld> {
    const root = await mkdtemp(join(tmpdir(), 'streamstate-lifecycle-'));
    const sentinel = await Sentinel.plant(join(root, STORAGE_DIR));
    const world = new LifecycleWorld(variant, root, numRetained, sentinel);
    world.note(`start ${variant.name}, parallelism ${parallelism}, numRetained ${numRetained}`);
    world.live = await world.startInstance(parallelism, null);
    return world;
  }

  // ------------------------------------------------------------------ commands

  write(first: number, count: number, pad: number, del: boolean, mapMode: number): void {
    const p = this.live.parallelism;
    for (let j = 0; j < count; j++) {
      const key = KEYS[(first + j) % NUM_KEYS];
      const stamp = ++this.stamp;
      const uk = USER_KEYS[stamp % USER_KEYS.length];
      const w: KeyWrite = {
        key,
        value: del ? null : `${stamp}:${'x'.repeat(pad)}`,
        mapEntry: mapMode === 0 ? null : [uk, mapMode === 1 ? `m${stamp}` : null],
      };
      applyToModel(this.model, w);
      applyToBackend(this.live.keyed[ownerOf(key, p)], w);
    }
    this.note(`write ${count} keys from ${first}${del ? ' (clear)' : ''}`);
  }

  trigger(): void {
    const open = this.live.checkpoints.filter((c) => c.ended === undefined);
    if (open.length >= MAX_PENDING) return this.note('trigger: skipped, enough pending');
    const view = this.live.coordinator.triggerCheckpoint();
    this.live.checkpoints.push({ id: view.checkpointId, view, snaps: new Map() });
    this.note(`trigger ${view.checkpointId}`);
  }

  /** A whole checkpoint in the usual order: trigger, every subtask snapshots, every subtask acknowledges. */
  async fullCheckpoint(): Promise<void> {
    const before = this.live.checkpoints.length;
    this.trigger();
    if (this.live.checkpoints.length === before) return;
    const c = this.live.checkpoints.at(-1)!;
    for (const s of this.subtasks(this.live))
      if (this.maySnapshot(this.live, c, s)) await this.snapshotOne(this.live, c, s);
    for (const [s, snap] of c.snaps) if (!snap.acked) await this.ackOne(this.live, c, s);
  }

  /**
   * Subtask `subtask` (or every subtask, `all`) takes its snapshot of a recent checkpoint. `hold`:
   * its asynchronous part waits in its I/O until it is acknowledged, told of an abort, or closed, so
   * abort notices reach snapshots still writing.
   */
  async snapshot(pick: number, subtask: number, all: boolean, hold = false): Promise<void> {
    const inst = this.live;
    const s0 = subtask % inst.parallelism;
    const candidates = inst.checkpoints
      .slice(-RECENT)
      .filter((c) => (all ? this.subtasks(inst) : [s0]).some((s) => this.maySnapshot(inst, c, s)));
    if (candidates.length === 0) return this.note('snapshot: nothing to snapshot');
    const c = candidates[pick % candidates.length];
    for (const s of all ? this.subtasks(inst) : [s0]) {
      if (this.maySnapshot(inst, c, s)) await this.snapshotOne(inst, c, s, hold);
    }
  }

  /** A subtask (or all subtasks) acknowledges a snapshot whose asynchronous part is done. */
  async acknowledge(pick: number, all: boolean): Promise<void> {
    const inst = this.live;
    const candidates = inst.checkpoints.filter((c) => [...c.snaps.values()].some((s) => !s.acked));
    if (candidates.length === 0) return this.note('ack: nothing to acknowledge');
    const c = candidates[pick % candidates.length];
    const subtasks = [...c.snaps.entries()].filter(([, s]) => !s.acked).map(([i]) => i);
    for (const s of all ? subtasks : [subtasks[pick % subtasks.length]]) await this.ackOne(inst, c, s);
  }

  async notifyComplete(pick: number, target: number): Promise<void> {
    const ids = this.live.checkpoints.filter((c) => c.ended === 'completed').map((c) => c.id);
    if (ids.length === 0) return this.note('notifyCheckpointComplete: none completed');
    const id = ids[pick % ids.length];
    for (const s of this.targets(target)) await this.live.keyed[s].notifyCheckpointComplete(id);
    this.note(`notifyCheckpointComplete(${id}) to ${this.describeTarget(target)}`);
  }

  async notifyAborted(pick: number, target: number): Promise<void> {
    const ids = this.live.checkpoints.filter((c) => c.ended !== undefined && c.ended !== 'completed').map((c) => c.id);
    if (ids.length === 0) return this.note('notifyCheckpointAborted: none ended without completing');
    const id = ids[pick % ids.length];
    await this.noticeAbort(this.live, id, this.targets(target));
    this.note(`notifyCheckpointAborted(${id}) to ${this.describeTarget(target)}`);
  }

  async abort(pick: number): Promise<void> {
    const open = this.live.checkpoints.filter((c) => c.ended === undefined);
    if (open.length === 0) return this.note('abort: nothing pending');
    const c = open[pick % open.length];
    await this.live.coordinator.abort(c.id, 'the lifecycle test aborts it');
    c.ended = 'aborted';
    this.note(`coordinator.abort(${c.id})`);
  }

  async collectGarbage(): Promise<void> {
    const deleted = await this.live.coordinator.collectGarbage();
    this.note(`collectGarbage: ${deleted.length} file(s) deleted`);
  }

  /** Every backend closes without notifications, the coordinators are dropped; a new instance restores the latest completed checkpoint. */
  async crash(parallelism: number): Promise<void> {
    const latest = this.live.coordinator.latestCompleted()?.checkpointId ?? null;
    const retained = this.live.coordinator.completedCheckpoints().map((i) => i.checkpointId);
    for (const inst of [this.zombie, this.live]) if (inst !== null) await this.closeBackends(inst);
    this.zombie = null;
    this.olderLeaseUnreleased = true;
    this.stats.crashes++;
    this.note(`crash; restart at parallelism ${parallelism}`);
    this.live = await this.startInstance(parallelism, latest);
    const now = this.live.coordinator.completedCheckpoints().map((i) => i.checkpointId);
    if (now.join() !== retained.join())
      this.fail(
        'restart after a crash',
        `the retained checkpoints were [${retained}] before the crash, the restarted coordinator loaded [${now}]`,
      );
  }

  /**
   * A clean stop (every snapshot taken acknowledged, shutdown('finish'), every backend closed) and a restart at `parallelism`. After
   * the stop, the job's directory holds only what the retained checkpoints reference (their
   * directories, the shared files they use) and the lease: nothing leaks across a clean close
   * (checked while no crashed or fenced instance's lease is unreleased).
   */
  async stop(parallelism: number): Promise<void> {
    if (this.zombie !== null) return this.note('stop: an older instance is running (crash instead)');
    // A runtime stopping cleanly drains first: every snapshot taken is acknowledged (late ones too, which cleans them up).
    for (const c of this.live.checkpoints)
      for (const [s, snap] of c.snaps) if (!snap.acked) await this.ackOne(this.live, c, s);
    const latest = this.live.coordinator.latestCompleted()?.checkpointId ?? null;
    const retained = this.live.coordinator.completedCheckpoints();
    await this.live.coordinator.shutdown('finish');
    await this.closeBackends(this.live);
    const referenced = new Set<string>();
    for (const info of retained) {
      const resolved = await this.readOnly.resolve(info.pointer);
      referenced.add(`${info.pointer}/_metadata`);
      for (const op of resolved.metadata.operators) {
        for (const sub of op.subtasks)
          for (const f of referencedFiles(subtaskStateHandles(sub)))
            referenced.add(resolveHandlePath(info.pointer, f.path));
      }
    }
    const inRetainedDir = (name: string): boolean => retained.some((i) => name.startsWith(`${i.pointer}/`));
    const left = [...(await listTree(join(this.root, STORAGE_DIR))).keys()]
      .map((n) => n.split(sep).join('/'))
      .filter(
        (n) => n.startsWith(`${JOB}/`) && !n.startsWith(`${JOB}/_lease/`) && !referenced.has(n) && !inRetainedDir(n),
      );
    this.note(`clean stop; restart at parallelism ${parallelism}`);
    // After a crash or a second instance an older lease stays unreleased, and start-up gc rightly
    // spares young files such an instance may still complete with (docs/RUNTIME.md, fencing).
    if (left.length > 0 && !this.olderLeaseUnreleased)
      this.fail(
        'clean stop',
        `${left.length} file(s) no retained checkpoint references are left behind: ${left.slice(0, 4).join(', ')}`,
      );
    this.live = await this.startInstance(parallelism, latest);
  }

  /** A second instance of the job starts on the same storage while the first keeps running (and must be fenced). */
  async secondInstance(parallelism: number): Promise<void> {
    if (this.zombie !== null) return this.note('second instance: one is running already');
    const latest = this.live.coordinator.latestCompleted()?.checkpointId ?? null;
    this.stats.secondInstances++;
    this.olderLeaseUnreleased = true;
    this.note(`second instance starts at parallelism ${parallelism}`);
    const next = await this.startInstance(parallelism, latest);
    this.zombie = this.live;
    this.live = next;
  }

  /** The older instance goes on: snapshots, acknowledges or triggers. It must never complete a checkpoint. */
  async zombieStep(pick: number, subtask: number): Promise<void> {
    const z = this.zombie;
    if (z === null) return this.note('zombie step: no older instance');
    const s = subtask % z.parallelism;
    const candidates = z.checkpoints
      .slice(-RECENT)
      .filter((x) => this.maySnapshot(z, x, s) || x.snaps.get(s)?.acked === false);
    const c = candidates.length > 0 ? candidates[pick % candidates.length] : undefined;
    if (c === undefined) {
      try {
        const view = z.coordinator.triggerCheckpoint();
        z.checkpoints.push({ id: view.checkpointId, view, snaps: new Map() });
        this.note(`zombie: trigger ${view.checkpointId}`);
      } catch (err) {
        if (!isStreamStateError(err, 'FENCED')) throw err;
        this.stats.fencedErrors++;
        this.note('zombie: trigger -> FENCED');
      }
      return;
    }
    if (this.maySnapshot(z, c, s)) await this.snapshotOne(z, c, s);
    else await this.ackOne(z, c, s);
  }

  async zombieGc(): Promise<void> {
    const z = this.zombie;
    if (z === null) return this.note('zombie gc: no older instance');
    try {
      const deleted = await z.coordinator.collectGarbage();
      this.fail(
        'collectGarbage of the older instance',
        `a fenced instance ran gc (deleted ${deleted.length} file(s): ${deleted.slice(0, 3).join(', ')})`,
      );
    } catch (err) {
      if (err instanceof LifecycleViolation || !isStreamStateError(err, 'FENCED')) throw err;
      this.stats.fencedErrors++;
      this.note('zombie: collectGarbage -> FENCED');
    }
  }

  /**
   * `streamstate gc <storage root>` while the job runs (and another job's files and a user file lie
   * next to it): it refuses because of the live lease (exit 7) or deletes only garbage (exit 0);
   * the checks after the step find every retained checkpoint intact and the other files untouched.
   */
  async cliGc(minAgeZero: boolean): Promise<void> {
    let stderr = '';
    const io: CliIo = {
      stdout: { write: () => undefined },
      stderr: { write: (s: string) => void (stderr += s), isTTY: false },
    };
    const code = await runCli(['gc', join(this.root, STORAGE_DIR), ...(minAgeZero ? ['--min-age', '0'] : [])], io);
    // Exit 3: no checkpoint of the job exists yet, so the directory holds no recognizable job.
    const noJobYet = code === 3 && this.live.coordinator.completedCheckpoints().length === 0;
    if (code !== 0 && code !== 7 && !noJobYet) this.fail('streamstate gc', `exit ${code}: ${stderr.trim()}`);
    this.note(`streamstate gc${minAgeZero ? ' --min-age 0' : ''}: exit ${code}`);
  }

  // ------------------------------------------------------------------ the checks

  /**
   * After every step: every retained checkpoint restores (into fresh backends at parallelism
   * 1..3, through a read-only store) to exactly the state the model captured for it; nothing
   * outside the job's directory changed.
   */
  async check(step: string): Promise<void> {
    this.stats.steps++;
    const storageDir = join(this.root, STORAGE_DIR);
    const outside = await this.sentinel.check();
    if (outside.length > 0) this.fail(step, `files outside the job directory were touched: ${outside.join(', ')}`);
    const rootEntries = (await readdir(storageDir)).filter((n) => n !== JOB && n !== 'other-job' && n !== 'notes.txt');
    if (rootEntries.length > 0) this.fail(step, `the job wrote outside its directory: ${rootEntries.join(', ')}`);

    const retained = this.live.coordinator.completedCheckpoints();
    if (retained.length > this.numRetained)
      this.fail(step, `${retained.length} checkpoints retained, numRetained is ${this.numRetained}`);
    for (let i = 1; i < retained.length; i++) {
      if (retained[i].checkpointId <= retained[i - 1].checkpointId)
        this.fail(step, `retained checkpoints out of order: ${retained.map((r) => r.checkpointId)}`);
    }
    const before = await listTree(storageDir);
    const fingerprint = [...before]
      .filter(([k]) => k.startsWith(`${JOB}/`) && !k.startsWith(`${JOB}/_lease/`))
      .map(([k, v]) => `${k}=${v}`)
      .sort()
      .join('\n');
    for (const info of retained) {
      const expected = this.expected.get(info.checkpointId);
      if (expected === undefined)
        this.fail(step, `the coordinator retains checkpoint ${info.checkpointId}, which the test never saw complete`);
      if (this.verifiedAt.get(info.checkpointId) === fingerprint) {
        this.stats.restoresUnchanged++;
        continue;
      }
      const parallelism =
        this.variant.knownRescaleBug !== undefined
          ? this.live.parallelism
          : 1 + ((this.stats.restoresChecked + info.checkpointId) % 3);
      const got = await this.restoreReadOnly(info, parallelism, step);
      const d = diff(expected!, got);
      if (d.length > 0)
        this.fail(
          step,
          `checkpoint ${info.checkpointId} restored at parallelism ${parallelism} differs from the model: ${d.slice(0, 5).join('; ')}`,
        );
      this.stats.restoresChecked++;
      this.verifiedAt.set(info.checkpointId, fingerprint);
    }
  }

  /** Closes every backend and deletes the run's directory. */
  async dispose(): Promise<void> {
    for (const inst of [this.zombie, this.live]) if (inst) await this.closeBackends(inst).catch(() => undefined);
    await rm(this.root, { recursive: true, force: true });
  }

  /** The last steps, newest last. */
  recentHistory(n = 40): string[] {
    return this.history.slice(-n);
  }

  // ------------------------------------------------------------------ helpers

  private async startInstance(requested: number, expectLatest: number | null): Promise<Instance> {
    // While a known rescaling bug is open (variant.knownRescaleBug) the job keeps its parallelism.
    const parallelism =
      this.variant.knownRescaleBug !== undefined && this.instances > 0 ? this.live.parallelism : requested;
    const label = `instance ${++this.instances}`;
    const coordinator = new CheckpointCoordinator({
      jobId: JOB,
      storage: this.storage,
      backendName: this.backend.name,
      numRetained: this.numRetained,
      operators: [{ operatorId: OP, parallelism, maxParallelism: MAX_P }],
    });
    const plan = await coordinator.restore();
    const restoredId = plan?.checkpointId ?? null;
    if (restoredId !== expectLatest)
      this.fail(`${label} restore()`, `restored checkpoint ${restoredId}, the latest completed is ${expectLatest}`);
    this.model.clear();
    if (restoredId !== null) for (const [k, v] of this.expected.get(restoredId)!) this.model.set(k, v);
    const keyed: KeyedStateBackend<string>[] = [];
    try {
      for (let i = 0; i < parallelism; i++) {
        keyed.push(
          await this.backend.createKeyedStateBackend({
            jobId: JOB,
            operatorId: OP,
            subtaskIndex: i,
            parallelism,
            maxParallelism: MAX_P,
            keyGroupRange: subtaskRange(parallelism, i),
            keySerializer: stringSerializer,
            ...(plan ? { restore: plan.subtask(OP, i).keyed } : {}),
          }),
        );
      }
    } catch (err) {
      for (const k of keyed) await k.close().catch(() => undefined);
      throw err;
    }
    const inst: Instance = {
      label,
      coordinator,
      parallelism,
      keyed,
      checkpoints: [],
      lastSnapshot: new Array<number>(parallelism).fill(0),
    };
    if (plan) {
      // The restored checkpoint's channel state reads back: every subtask's marker, nothing else.
      for (const sub of plan.metadata.operators[0].subtasks) {
        const ch = sub.channel;
        const read = ch ? await readChannelState(ch, plan.files, stringSerializer, `${label} channel state`) : [];
        const values = read.flatMap((r) => r.records.map((x) => x.value));
        if (values.join() !== inFlightMarker(restoredId!, sub.subtaskIndex))
          this.fail(
            `${label} restore()`,
            `subtask ${sub.subtaskIndex}'s channel state reads ${JSON.stringify(values)}`,
          );
      }
    }
    const got = new Map<string, string>();
    for (let i = 0; i < parallelism; i++) readBackend(keyed[i], parallelism, i, got);
    const d = diff(this.model, got);
    if (d.length > 0)
      this.fail(
        `${label} restore()`,
        `the restored live state (checkpoint ${restoredId}) differs from the model: ${d.slice(0, 5).join('; ')}`,
      );
    return inst;
  }

  private subtasks(inst: Instance): number[] {
    return Array.from({ length: inst.parallelism }, (_, i) => i);
  }

  private maySnapshot(inst: Instance, c: CheckpointRec, s: number): boolean {
    return !c.snaps.has(s) && c.id > inst.lastSnapshot[s];
  }

  /**
   * notifyCheckpointAborted(id) to `subtasks` of `inst`. A snapshot of `id` still writing may end
   * cancelled (checked at its acknowledgement); one held in its I/O must. Held gates open once the
   * notices are sent, so what the cancellation could not interrupt finishes.
   */
  private async noticeAbort(inst: Instance, id: number, subtasks: readonly number[]): Promise<void> {
    const c = inst.checkpoints.find((x) => x.id === id);
    const notices: Promise<void>[] = [];
    const opened: GatedStreamFactory[] = [];
    for (const s of subtasks) {
      const snap = c?.snaps.get(s);
      if (snap !== undefined && !snap.acked && !snap.settled) {
        snap.abortNoticed = true;
        if (snap.held !== null && !snap.held.gate.isOpen) {
          snap.mustBeCancelled = true;
          opened.push(snap.held);
        }
      }
      notices.push(inst.keyed[s].notifyCheckpointAborted(id));
    }
    for (const g of opened) g.gate.open();
    await Promise.all(notices);
  }

  private async snapshotOne(inst: Instance, c: CheckpointRec, s: number, hold = false): Promise<void> {
    const options = c.view.snapshotOptions(OP, s);
    const held = hold ? new GatedStreamFactory(options.streams) : null;
    const task = await inst.keyed[s].snapshot(c.id, held ? { ...options, streams: held } : options);
    task.done.catch(() => undefined); // observed when acknowledged; a crash cancels it
    // Channel state rides along, through the same streams: its file must live and die with the checkpoint.
    const writer = new ChannelStateWriter({
      subtask: `${OP}[${s}]`,
      checkpointId: c.id,
      inputChannels: 1,
      outputChannels: 0,
      serializer: stringSerializer,
    });
    writer.addInput(0, 'round-robin', [{ sequence: c.id, value: inFlightMarker(c.id, s) }]);
    const channel = writer.finish(options.streams);
    channel.catch(() => undefined);
    inst.lastSnapshot[s] = c.id;
    const part = inst === this.live ? partOf(this.model, inst.parallelism, s) : new Map<string, string>();
    const snap: SubtaskSnapshot = {
      task,
      channel,
      part,
      acked: false,
      held,
      settled: false,
      abortNoticed: false,
      mustBeCancelled: false,
    };
    const ended = () => {
      snap.settled = true;
    };
    task.done.then(ended, ended);
    c.snaps.set(s, snap);
    this.note(`${inst === this.live ? '' : 'zombie: '}snapshot ${c.id} subtask ${s}${held ? ' (held)' : ''}`);
  }

  private async ackOne(inst: Instance, c: CheckpointRec, s: number): Promise<void> {
    const snap = c.snaps.get(s)!;
    const where = `${inst === this.live ? '' : 'zombie: '}ack ${c.id} subtask ${s}`;
    snap.held?.gate.open();
    let handle: KeyedStateHandle | null;
    try {
      handle = await snap.task.done;
    } catch (err) {
      // Only an abort notice that reached it while it was writing may end a snapshot of a live backend.
      if (!snap.abortNoticed || !isStreamStateError(err, 'SNAPSHOT_CANCELLED')) throw err;
      snap.acked = true; // a runtime acknowledges nothing for a cancelled snapshot
      this.stats.cancelledByAbort++;
      return this.note(`${where}: cancelled by the abort notice, nothing to acknowledge`);
    }
    if (snap.mustBeCancelled)
      this.fail(
        where,
        `the snapshot of checkpoint ${c.id} completed although its abort notice came while it was held in its I/O`,
      );
    const channel = await snap.channel;
    snap.acked = true;
    let outcome: AckOutcome;
    try {
      outcome = adaptAck(
        await inst.coordinator.acknowledge(c.id, OP, s, {
          keyed: [handle],
          operator: [],
          ...(channel ? { channel } : {}),
        }),
      );
    } catch (err) {
      if (inst !== this.live && isStreamStateError(err, 'FENCED')) {
        c.ended = 'fenced';
        this.stats.fencedErrors++;
        return this.note(`${where} -> FENCED`);
      }
      throw err;
    }
    this.note(`${where} -> ${outcome.status}${outcome.status === 'rejected' ? ` (${outcome.reason})` : ''}`);
    if (inst !== this.live) {
      if (outcome.status === 'completed')
        this.fail(where, `an instance whose lease a newer instance took completed checkpoint ${c.id}`);
      if (outcome.status === 'rejected') c.ended ??= 'aborted';
      return;
    }
    if (outcome.status === 'waiting') {
      if (c.ended !== undefined && outcome.legacy !== true)
        this.fail(
          where,
          `an acknowledgement of checkpoint ${c.id}, which had ended (${c.ended}), was recorded as waiting`,
        );
      return;
    }
    if (outcome.status === 'completed') {
      if (c.ended !== undefined) this.fail(where, `checkpoint ${c.id} completed after it had ended (${c.ended})`);
      const missing = this.subtasks(inst).filter((i) => c.snaps.get(i)?.acked !== true);
      if (missing.length > 0) this.fail(where, `checkpoint ${c.id} completed without subtasks ${missing}`);
      const state = new Map<string, string>();
      for (const sn of c.snaps.values()) for (const [k, v] of sn.part) state.set(k, v);
      this.expected.set(c.id, state);
      c.ended = 'completed';
      this.stats.completed++;
      for (const older of inst.checkpoints) if (older.id < c.id && older.ended === undefined) older.ended = 'subsumed';
      if (inst.coordinator.completedCheckpoints().at(-1)?.checkpointId !== c.id)
        this.fail(where, `checkpoint ${c.id} completed but is not the latest retained one`);
      return;
    }
    if (c.ended === undefined) {
      if (outcome.reason !== 'SHARED_STATE_NOT_LIVE')
        this.fail(where, `pending checkpoint ${c.id} was rejected with ${outcome.reason}`);
      c.ended = 'declined';
      this.stats.declined++;
      // As docs/RUNTIME.md asks of a runtime: a declined checkpoint is reported aborted to every backend.
      await this.noticeAbort(inst, c.id, this.subtasks(inst));
    }
  }

  private targets(target: number): number[] {
    const p = this.live.parallelism;
    return target % (p + 1) === p ? this.subtasks(this.live) : [target % (p + 1)];
  }

  private describeTarget(target: number): string {
    const p = this.live.parallelism;
    return target % (p + 1) === p ? 'every subtask' : `subtask ${target % (p + 1)}`;
  }

  private async closeBackends(inst: Instance): Promise<void> {
    // Held snapshots go on (close() cancels them); a held upload that cannot be aborted would stall close().
    for (const c of inst.checkpoints) for (const snap of c.snaps.values()) snap.held?.gate.open();
    for (const k of inst.keyed) await k.close();
  }

  /** Restores checkpoint `info` into fresh backends of the verifier without going through a coordinator (which would take a lease and clean up). */
  private async restoreReadOnly(
    info: CompletedCheckpointInfo,
    parallelism: number,
    step: string,
  ): Promise<Map<string, string>> {
    let resolved;
    try {
      resolved = await this.readOnly.resolve(info.pointer);
    } catch (err) {
      return this.fail(step, `retained checkpoint ${info.checkpointId} cannot be resolved: ${describeError(err)}`);
    }
    const op = resolved.metadata.operators.find((o) => o.operatorId === OP);
    const routed = op ? assignKeyedState(op, parallelism, MAX_P) : [];
    const got = new Map<string, string>();
    for (let i = 0; i < parallelism; i++) {
      let keyed: KeyedStateBackend<string>;
      try {
        keyed = await this.verifier.createKeyedStateBackend({
          jobId: `${JOB}-verify`,
          operatorId: OP,
          subtaskIndex: i,
          parallelism,
          maxParallelism: MAX_P,
          keyGroupRange: subtaskRange(parallelism, i),
          keySerializer: stringSerializer,
          restore: {
            handles: routed[i] ?? [],
            files: resolved.files,
            mode: 'no-claim',
            checkpointId: resolved.metadata.checkpointId,
          },
        });
      } catch (err) {
        return this.fail(
          step,
          `retained checkpoint ${info.checkpointId} does not restore (subtask ${i} of ${parallelism}): ${describeError(err)}`,
        );
      }
      try {
        readBackend(keyed, parallelism, i, got);
      } finally {
        await keyed.close();
      }
    }
    return got;
  }

  /** Records the command about to run (the history then shows where a run stopped). */
  begin(command: string): void {
    this.note(`> ${command}`);
  }

  private note(line: string): void {
    this.history.push(line);
    if (this.history.length > 200) this.history.shift();
  }

  private fail(step: string, symptom: string): never {
    throw new LifecycleViolation(
      `${this.variant.name}, at "${step}": ${symptom}\nrecent steps:\n  ${this.recentHistory().join('\n  ')}`,
    );
  }
}

function describeError(err: unknown): string {
  if (err instanceof Error) return `${(err as { code?: string }).code ?? err.name}: ${err.message}`;
  return String(err);
}

/** The one in-flight record the world stores per checkpoint and subtask. */
function inFlightMarker(checkpointId: number, subtaskIndex: number): string {
  return `in-flight of checkpoint ${checkpointId}, subtask ${subtaskIndex}`;
}
