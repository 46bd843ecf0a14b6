import type { CheckpointStreamFactory } from '../backend/contract.js';
import {
  ChannelStateWriter,
  type ChannelPartitioning,
  type ChannelStateHandle,
  type InFlightRecord,
} from '../checkpoint/channel-state.js';
import { SnapshotError, StreamStateError } from '../errors.js';
import type { Serializer } from '../serializers/serializer.js';
import type { BarrierElement, RecordElement } from './channels.js';

/**
 * The checkpointing mode of a run (Flink's CheckpointingMode plus unaligned checkpoints and the
 * aligned-checkpoint timeout; docs/RUNTIME.md, "Checkpointing modes"):
 * - `exactly-once`, `unaligned: false`: aligned barriers (the default).
 * - `exactly-once`, `unaligned: true`, no `alignedTimeout` (or 0): unaligned from the start.
 * - `exactly-once`, `unaligned: true`, `alignedTimeout: n`: aligned, switched to unaligned at a
 *   task once n scheduler steps passed since the checkpoint was triggered.
 * - `at-least-once`: barriers never block; duplicates after a restore, never losses.
 * Savepoints are always aligned.
 */
export interface CheckpointingModeOptions {
  readonly guarantee?: 'exactly-once' | 'at-least-once';
  readonly unaligned?: boolean;
  /** Scheduler steps (the runtime's deterministic clock), counted from the trigger. */
  readonly alignedTimeout?: number;
}

/** The options checked: what every barrier of a checkpoint gets. */
export interface CheckpointingMode {
  readonly guarantee: 'exactly-once' | 'at-least-once';
  readonly unaligned: boolean;
  readonly alignedTimeout: number;
}

export function checkpointingMode(opts: CheckpointingModeOptions | undefined): CheckpointingMode {
  const guarantee = opts?.guarantee ?? 'exactly-once';
  const unaligned = opts?.unaligned ?? false;
  const alignedTimeout = opts?.alignedTimeout ?? 0;
  if (guarantee !== 'exactly-once' && guarantee !== 'at-least-once') {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `checkpointingMode.guarantee must be 'exactly-once' or 'at-least-once', got ${String(guarantee)}.`,
    );
  }
  if (unaligned && guarantee !== 'exactly-once') {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      'unaligned checkpoints need exactly-once: at-least-once never blocks a channel, so there is nothing to overtake. Drop `unaligned` or use exactly-once.',
    );
  }
  if (!Number.isSafeInteger(alignedTimeout) || alignedTimeout < 0) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `checkpointingMode.alignedTimeout must be a non-negative integer (scheduler steps), got ${alignedTimeout}.`,
    );
  }
  if (alignedTimeout > 0 && !unaligned) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      'checkpointingMode.alignedTimeout switches aligned checkpoints to unaligned ones: it needs `unaligned: true`.',
    );
  }
  return { guarantee, unaligned, alignedTimeout };
}

/** The barrier a checkpoint (or savepoint) triggered at scheduler step `now` carries. */
export function barrierFor(
  checkpointId: number,
  kind: 'checkpoint' | 'savepoint',
  mode: CheckpointingMode,
  now: number,
): BarrierElement {
  if (kind === 'savepoint') return { kind: 'barrier', checkpointId };
  if (mode.guarantee === 'at-least-once') return { kind: 'barrier', checkpointId, alignment: 'at-least-once' };
  if (!mode.unaligned) return { kind: 'barrier', checkpointId };
  if (mode.alignedTimeout === 0) return { kind: 'barrier', checkpointId, alignment: 'unaligned' };
  return { kind: 'barrier', checkpointId, alignment: 'aligned', timeoutAt: now + mode.alignedTimeout };
}

/** Channels of one subtask's exchanges, named by the subtask index on their other end. */
export interface SubtaskChannels {
  readonly inputChannels: number;
  readonly outputChannels: number;
  readonly inputPartitioning: ChannelPartitioning;
  readonly outputPartitioning: ChannelPartitioning;
}

interface OpenState {
  readonly writer: ChannelStateWriter<unknown>;
  readonly streams: CheckpointStreamFactory;
  readonly channels: SubtaskChannels;
  resolve(handle: ChannelStateHandle | null): void;
  reject(err: unknown): void;
}

export function toInFlight<T>(r: RecordElement<T>): InFlightRecord<T> {
  if (r.seq === undefined) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      'an in-flight record has no sequence number; records must travel through a Channel.',
    );
  }
  return r.keyGroup === undefined
    ? { sequence: r.seq, value: r.value }
    : { sequence: r.seq, value: r.value, keyGroup: r.keyGroup };
}

/**
 * The channel state of the unaligned checkpoints under way, per subtask: opened at the snapshot,
 * fed the overtaken output records at once and the input records once the last barrier came,
 * then written through the checkpoint's stream factory. Its promise is what the subtask's
 * acknowledgement waits for.
 */
export class InFlightStates {
  private readonly open = new Map<string, OpenState>();

  /** `serializer`: for every in-flight record, in and out (the runtime's records are msgpack-able values). */
  constructor(private readonly serializer: Serializer<unknown>) {}

  private static key(operatorId: string, subtaskIndex: number, checkpointId: number): string {
    return `${operatorId}/${subtaskIndex}/${checkpointId}`;
  }

  /** Starts a subtask's channel state; the promise settles with the handle (null: nothing in flight). */
  start(
    task: { readonly operatorId: string; readonly subtaskIndex: number },
    checkpointId: number,
    streams: CheckpointStreamFactory,
    channels: SubtaskChannels,
  ): Promise<ChannelStateHandle | null> {
    const writer = new ChannelStateWriter<unknown>({
      subtask: `${task.operatorId}[${task.subtaskIndex}]`,
      checkpointId,
      inputChannels: channels.inputChannels,
      outputChannels: channels.outputChannels,
      serializer: this.serializer,
    });
    return new Promise((resolve, reject) => {
      this.open.set(InFlightStates.key(task.operatorId, task.subtaskIndex, checkpointId), {
        writer,
        streams,
        channels,
        resolve,
        reject,
      });
    });
  }

  has(task: { readonly operatorId: string; readonly subtaskIndex: number }, checkpointId: number): boolean {
    return this.open.has(InFlightStates.key(task.operatorId, task.subtaskIndex, checkpointId));
  }

  addOutput<T>(
    task: { operatorId: string; subtaskIndex: number },
    checkpointId: number,
    channel: number,
    records: readonly RecordElement<T>[],
  ): void {
    const s = this.get(task, checkpointId);
    s.writer.addOutput(channel, s.channels.outputPartitioning, records.map(toInFlight));
  }

  /** The input side is complete: writes everything and settles the subtask's promise. */
  finish<T>(
    task: { operatorId: string; subtaskIndex: number },
    checkpointId: number,
    input: ReadonlyMap<number, readonly RecordElement<T>[]> | null,
    channelOf: (gateChannel: number) => number = (c) => c,
  ): void {
    const key = InFlightStates.key(task.operatorId, task.subtaskIndex, checkpointId);
    const s = this.get(task, checkpointId);
    this.open.delete(key);
    try {
      for (const [c, records] of input ?? [])
        s.writer.addInput(channelOf(c), s.channels.inputPartitioning, records.map(toInFlight));
    } catch (err) {
      s.reject(err);
      return;
    }
    s.writer.finish(s.streams).then(s.resolve, s.reject);
  }

  /** The attempt ends (crash or teardown): every unfinished channel state fails, nothing more is written. */
  cancelAll(): void {
    for (const s of this.open.values()) {
      s.reject(
        new SnapshotError(
          'SNAPSHOT_CANCELLED',
          'the attempt ended before the in-flight records of its unaligned checkpoint were all recorded.',
        ),
      );
    }
    this.open.clear();
  }

  private get(task: { operatorId: string; subtaskIndex: number }, checkpointId: number): OpenState {
    const s = this.open.get(InFlightStates.key(task.operatorId, task.subtaskIndex, checkpointId));
    if (s === undefined) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `no unaligned checkpoint ${checkpointId} is under way at ${task.operatorId}[${task.subtaskIndex}]; the runtime handed channel state for a snapshot it did not take.`,
      );
    }
    return s;
  }
}
