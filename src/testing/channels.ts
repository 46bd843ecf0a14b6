import { StreamStateError } from '../errors.js';

/** Where a record came from: source partition and offset. Lets tests trace a record end to end. */
export interface RecordOrigin {
  readonly partition: number;
  readonly offset: number;
}

export interface RecordElement<T> {
  readonly kind: 'record';
  readonly value: T;
  readonly origin: RecordOrigin;
  /** Its position in the channel it travels (assigned by Channel.push): the sequence number channel state records. */
  readonly seq?: number;
  /** Its key group, on a keyed exchange (a restore at another parallelism places in-flight records by it). */
  readonly keyGroup?: number;
}

/**
 * How a task treats a checkpoint's barrier (Flink's CheckpointOptions.AlignmentType):
 * `aligned` blocks each channel at its barrier until all delivered it; `unaligned` snapshots at the
 * first barrier and records in-flight records as channel state; `at-least-once` never blocks and
 * snapshots once every channel delivered the barrier.
 */
export type Alignment = 'aligned' | 'unaligned' | 'at-least-once';

export interface BarrierElement {
  readonly kind: 'barrier';
  readonly checkpointId: number;
  /** Default `aligned`. */
  readonly alignment?: Alignment;
  /** Aligned with a timeout: at this scheduler step (or later) the barrier counts as unaligned. */
  readonly timeoutAt?: number;
}

export type StreamElement<T> = RecordElement<T> | BarrierElement;

/** The alignment a barrier has at scheduler step `now` (an aligned barrier past its timeout is unaligned). */
export function effectiveAlignment(b: BarrierElement, now: number): Alignment {
  const a = b.alignment ?? 'aligned';
  return a === 'aligned' && b.timeoutAt !== undefined && now >= b.timeoutAt ? 'unaligned' : a;
}

/** A FIFO between one upstream subtask and one downstream subtask. Capacity is soft: barriers always fit. */
export class Channel<T> {
  private items: StreamElement<T>[] = [];
  private head = 0;
  private nextSeq = 0;
  /** Ids of the barriers queued now (so that a timeout can find a stuck barrier without a scan). */
  private readonly queuedBarriers = new Set<number>();

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.items.length - this.head;
  }

  get hasRoom(): boolean {
    return this.size < this.capacity;
  }

  push(element: StreamElement<T>): void {
    if (element.kind === 'record') this.pushRecord(element.value, element.origin, element.keyGroup);
    else {
      this.queuedBarriers.add(element.checkpointId);
      this.items.push(element);
    }
  }

  /**
   * Queues a record built here from its fields: the per-record path (source emit, keyed emit) calls
   * this directly, so no element object is built only to be copied (bench/kafka profile).
   */
  pushRecord(value: T, origin: RecordOrigin, keyGroup: number | undefined): void {
    const seq = this.nextSeq++;
    this.items.push(
      keyGroup === undefined
        ? { kind: 'record', value, origin, seq }
        : { kind: 'record', value, origin, seq, keyGroup },
    );
  }

  /**
   * An unaligned barrier overtakes the queued records (Flink's priority event): it goes in right
   * after the last queued barrier (never past one, so barriers stay in checkpoint order). Returns
   * the records it overtook, oldest first: the sender's output channel state.
   */
  pushPriority(barrier: BarrierElement): RecordElement<T>[] {
    let at = this.items.length;
    while (at > this.head && this.items[at - 1].kind === 'record') at--;
    const overtaken = this.items.slice(at) as RecordElement<T>[];
    this.items.splice(at, 0, barrier);
    this.queuedBarriers.add(barrier.checkpointId);
    return overtaken;
  }

  hasBarrier(checkpointId: number): boolean {
    return this.queuedBarriers.has(checkpointId);
  }

  /**
   * Takes the barrier of `checkpointId` out of the queue and returns the records queued ahead of it
   * (they stay queued: they are processed after the snapshot and so must be persisted); null when
   * that barrier is not queued here.
   */
  takeBarrier(checkpointId: number): RecordElement<T>[] | null {
    if (!this.queuedBarriers.has(checkpointId)) return null;
    const ahead: RecordElement<T>[] = [];
    for (let i = this.head; i < this.items.length; i++) {
      const e = this.items[i];
      if (e.kind === 'record') ahead.push(e);
      else if (e.checkpointId === checkpointId) {
        this.items.splice(i, 1);
        this.queuedBarriers.delete(checkpointId);
        return ahead;
      }
      // An older barrier is passed over: the records before it are ahead of ours too (and recorded for both).
    }
    return null;
  }

  shift(): StreamElement<T> {
    if (this.head >= this.items.length) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        'read from an empty channel; the scheduler must only pick channels that hold elements.',
      );
    }
    const element = this.items[this.head++];
    if (element.kind === 'barrier') this.queuedBarriers.delete(element.checkpointId);
    // Compact now and then so the array does not grow without bound.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return element;
  }
}

/**
 * A barrier the gate hands to its task. Aligned barriers come as they are; unaligned and
 * at-least-once ones carry what the task must do: take its snapshot (`snapshot`, default true)
 * and/or persist the finished input channel state (`inFlight`: per input channel, the records
 * read after the snapshot and before that channel's barrier, in order).
 */
export interface GateBarrier<T> extends BarrierElement {
  readonly snapshot?: boolean;
  readonly unaligned?: boolean;
  readonly inFlight?: ReadonlyMap<number, readonly RecordElement<T>[]>;
}

/** What InputGate.poll yields: a record to process, a barrier to act on, or nothing (a barrier that now waits). */
export type GateOutput<T> = RecordElement<T> | GateBarrier<T> | null;

/** An unaligned checkpoint under way at a gate: channels whose barrier has not come yet, and what was read from them. */
interface Recording<T> {
  readonly pending: Set<number>;
  readonly records: Map<number, RecordElement<T>[]>;
}

/**
 * The input side of a downstream subtask: one channel per upstream subtask, with barrier handling
 * by alignment (docs/RUNTIME.md, "Checkpointing modes"):
 * - aligned: a channel that delivered barrier n is blocked (its later elements stay buffered) until
 *   barrier n arrived on every channel; then the gate yields the barrier once and unblocks all.
 *   That keeps records after the barrier out of checkpoint n's state (exactly-once).
 * - at-least-once: nothing blocks; the barrier is yielded once every channel delivered it, so
 *   records after it on early channels are in the snapshot and replayed after a restore (duplicates).
 * - unaligned: the first barrier is yielded at once (snapshot now); the records then read from the
 *   channels whose barrier has not come yet are recorded, and handed over once the last barrier came.
 * Records restored from channel state (`recover`) are read before any channel.
 */
export class InputGate<T> {
  private readonly blocked: boolean[];
  private blockedCount = 0;
  private aligning: number | null = null;
  private readonly atLeastOnce = new Map<number, number>();
  private readonly recordings = new Map<number, Recording<T>>();
  private recovered: RecordElement<T>[] = [];
  private recoveredHead = 0;

  constructor(
    readonly channels: readonly Channel<T>[],
    /** Scheduler steps (for aligned barriers with a timeout). */
    private readonly now: () => number = () => 0,
  ) {
    this.blocked = channels.map(() => false);
  }

  /** In-flight records of a restored checkpoint: read (channel -1) before anything else. */
  recover(records: readonly RecordElement<T>[]): void {
    this.recovered.push(...records);
  }

  get recovering(): boolean {
    return this.recoveredHead < this.recovered.length;
  }

  /** Whether channel `i` can be read now (holds elements and is not blocked by alignment); -1: the recovered records. */
  isReadable(i: number): boolean {
    if (i === -1) return this.recovering;
    return !this.recovering && !this.blocked[i] && this.channels[i].size > 0;
  }

  /** The checkpoint being aligned, if a barrier arrived on some but not all channels. */
  get aligningCheckpoint(): number | null {
    return this.aligning;
  }

  /** Whether an unaligned checkpoint still records some channel here. */
  get recordingInFlight(): boolean {
    return this.recordings.size > 0;
  }

  poll(i: number): GateOutput<T> {
    if (i === -1) {
      const r = this.recovered[this.recoveredHead++];
      if (!this.recovering) {
        this.recovered = [];
        this.recoveredHead = 0;
      }
      return r;
    }
    if (this.blocked[i]) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `channel ${i} is blocked by barrier alignment; the scheduler must not read it.`,
      );
    }
    const element = this.channels[i].shift();
    if (element.kind === 'record') {
      if (this.recordings.size > 0) {
        for (const rec of this.recordings.values()) if (rec.pending.has(i)) rec.records.get(i)!.push(element);
      }
      return element;
    }
    const id = element.checkpointId;
    switch (effectiveAlignment(element, this.now())) {
      case 'at-least-once': {
        const seen = (this.atLeastOnce.get(id) ?? 0) + 1;
        if (seen < this.channels.length) {
          this.atLeastOnce.set(id, seen);
          return null;
        }
        this.atLeastOnce.delete(id);
        return { kind: 'barrier', checkpointId: id, alignment: 'at-least-once' };
      }
      case 'unaligned': {
        const rec = this.recordings.get(id);
        if (rec === undefined) return this.startUnaligned(id, i);
        rec.pending.delete(i);
        if (rec.pending.size > 0) return null;
        this.recordings.delete(id);
        return { kind: 'barrier', checkpointId: id, snapshot: false, unaligned: true, inFlight: rec.records };
      }
      case 'aligned':
        return this.align(element, i);
    }
  }

  /**
   * The aligned-checkpoint timeout of `checkpointId` passed: if this gate is aligning it, or its
   * barrier is stuck in one of the channels, switch to unaligned now (the barrier overtakes what
   * is queued ahead of it). Returns what the task must do, or null when there is nothing to switch.
   */
  timeOut(checkpointId: number): GateBarrier<T> | null {
    if (this.recovering || this.recordings.has(checkpointId)) return null;
    if (this.aligning !== checkpointId && !this.channels.some((c) => c.hasBarrier(checkpointId))) return null;
    return this.startUnaligned(checkpointId, null);
  }

  private align(element: BarrierElement, i: number): GateOutput<T> {
    if (this.aligning === null) this.aligning = element.checkpointId;
    else if (this.aligning !== element.checkpointId) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `barrier ${element.checkpointId} arrived on channel ${i} while aligning barrier ${this.aligning}; barriers must arrive in checkpoint order on every channel.`,
      );
    }
    this.blocked[i] = true;
    this.blockedCount++;
    if (this.blockedCount < this.channels.length) return null;
    this.unblockAll();
    return element;
  }

  private unblockAll(): void {
    this.blocked.fill(false);
    this.blockedCount = 0;
    this.aligning = null;
  }

  /**
   * Unaligned checkpoint `id` starts here (its barrier came on `delivered`, or it timed out): every
   * other channel either has the barrier queued (it overtakes the records ahead of it, which are
   * recorded) or is recorded until the barrier comes. Channels an alignment already blocked are done.
   */
  private startUnaligned(id: number, delivered: number | null): GateBarrier<T> {
    const pending = new Set<number>();
    const records = new Map<number, RecordElement<T>[]>();
    const aligned = this.aligning === id;
    for (let c = 0; c < this.channels.length; c++) {
      if (c === delivered || (aligned && this.blocked[c])) continue;
      const ahead = this.channels[c].takeBarrier(id);
      if (ahead !== null) {
        if (ahead.length > 0) records.set(c, ahead);
      } else {
        pending.add(c);
        records.set(c, []);
      }
    }
    if (aligned) this.unblockAll();
    if (pending.size === 0) return { kind: 'barrier', checkpointId: id, unaligned: true, inFlight: records };
    this.recordings.set(id, { pending, records });
    return { kind: 'barrier', checkpointId: id, unaligned: true };
  }
}
