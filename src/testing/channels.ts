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
}

export interface BarrierElement {
  readonly kind: 'barrier';
  readonly checkpointId: number;
}

export type StreamElement<T> = RecordElement<T> | BarrierElement;

/** A FIFO between one upstream subtask and one downstream subtask. Capacity is soft: barriers always fit. */
export class Channel<T> {
  private items: StreamElement<T>[] = [];
  private head = 0;

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.items.length - this.head;
  }

  get hasRoom(): boolean {
    return this.size < this.capacity;
  }

  push(element: StreamElement<T>): void {
    this.items.push(element);
  }

  shift(): StreamElement<T> {
    if (this.head >= this.items.length) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        'read from an empty channel; the scheduler must only pick channels that hold elements.',
      );
    }
    const element = this.items[this.head++];
    // Compact now and then so the array does not grow without bound.
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return element;
  }
}

/** What InputGate.poll yields: a record to process, an aligned barrier to act on, or nothing (a barrier that now waits). */
export type GateOutput<T> = RecordElement<T> | BarrierElement | null;

/**
 * The input side of a downstream subtask: one channel per upstream subtask, with barrier alignment.
 * A channel that delivered barrier n is blocked (its later elements stay buffered) until barrier n
 * arrived on every channel; then the gate yields the barrier once and unblocks all channels. That is
 * what keeps records after the barrier out of checkpoint n's state (exactly-once).
 */
export class InputGate<T> {
  private readonly blocked: boolean[];
  private blockedCount = 0;
  private aligning: number | null = null;

  constructor(readonly channels: readonly Channel<T>[]) {
    this.blocked = channels.map(() => false);
  }

  /** Whether channel `i` can be read now (holds elements and is not blocked by alignment). */
  isReadable(i: number): boolean {
    return !this.blocked[i] && this.channels[i].size > 0;
  }

  /** The checkpoint being aligned, if a barrier arrived on some but not all channels. */
  get aligningCheckpoint(): number | null {
    return this.aligning;
  }

  poll(i: number): GateOutput<T> {
    if (this.blocked[i]) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `channel ${i} is blocked by barrier alignment; the scheduler must not read it.`,
      );
    }
    const element = this.channels[i].shift();
    if (element.kind === 'record') return element;
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
    this.blocked.fill(false);
    this.blockedCount = 0;
    this.aligning = null;
    return element;
  }
}
