import type { CheckpointStreamFactory, StateOutputStream } from '../backend/contract.js';
import type { OperatorStateHandle, OperatorStateMetaInfo } from '../backend/handles.js';
import { SnapshotError, StreamStateError } from '../errors.js';
import { ByteWriter } from '../format/bytes.js';
import { OPERATOR_STREAM_MAGIC, OPERATOR_STREAM_VERSION } from '../operator/operator-stream.js';

/** One operator state's records for one subtask: list elements, or broadcast [key, value] pairs, as serialized bytes. */
export interface OperatorStateRecords {
  readonly meta: Omit<OperatorStateMetaInfo, 'offsets'>;
  readonly records: readonly (Uint8Array | readonly [Uint8Array, Uint8Array])[];
}

/**
 * Writes one subtask's operator-state stream (docs/FORMAT.md, "operator state stream": magic,
 * version, then `bytes(element)` or `bytes(key) bytes(value)` records) and returns its handle with
 * the offset of every record; null when no state has records.
 */
export async function writeOperatorStream(
  streams: CheckpointStreamFactory,
  states: readonly OperatorStateRecords[],
): Promise<OperatorStateHandle | null> {
  const withRecords = states.filter((s) => s.records.length > 0);
  if (withRecords.length === 0) return null;
  const w = new ByteWriter();
  w.raw(OPERATOR_STREAM_MAGIC).u8(OPERATOR_STREAM_VERSION);
  const metas: OperatorStateMetaInfo[] = [];
  for (const s of withRecords) {
    const offsets: number[] = [];
    for (const r of s.records) {
      offsets.push(w.length);
      if (r instanceof Uint8Array) w.bytes(r);
      else w.bytes(r[0]).bytes(r[1]);
    }
    metas.push({ ...s.meta, offsets });
  }
  const stream = streams.createOutputStream('exclusive');
  try {
    await stream.write(w.toBuffer());
    const handle = await stream.closeAndGetHandle();
    if (handle === null)
      throw new SnapshotError(
        'SNAPSHOT_FAILED',
        'the operator-state stream returned no handle although data was written',
      );
    return { type: 'operator', states: metas, stream: handle };
  } catch (err) {
    await stream.discard().catch(() => undefined);
    throw err;
  }
}

/** Records are handed to the stream in writes of about this size. */
const OPERATOR_STREAM_FLUSH_BYTES = 1024 * 1024;

/**
 * Writes one subtask's operator-state stream record by record, for inputs that need not fit in
 * memory (bootstrap's iterables): states one after the other (`beginState`, then `add` its records),
 * flushed to the stream every MiB. Memory: the write buffer, plus the offset of every record
 * (which the handle lists). The same bytes as writeOperatorStream.
 */
export class OperatorStreamWriter {
  private readonly out = new ByteWriter(64 * 1024);
  private readonly metas: OperatorStateMetaInfo[] = [];
  private current: { meta: Omit<OperatorStateMetaInfo, 'offsets'>; offsets: number[] } | undefined;
  private readonly stream: StateOutputStream;
  /** Bytes already handed to the stream. */
  private flushed = 0;

  constructor(streams: CheckpointStreamFactory) {
    this.stream = streams.createOutputStream('exclusive');
  }

  /** Starts the next state; a state without records is left out of the handle. */
  beginState(meta: Omit<OperatorStateMetaInfo, 'offsets'>): void {
    this.endState();
    this.current = { meta, offsets: [] };
  }

  /** Adds one record of the current state: a list element, or a broadcast [key, value] pair. */
  async add(record: Uint8Array | readonly [Uint8Array, Uint8Array]): Promise<void> {
    const s = this.current;
    if (s === undefined)
      throw new StreamStateError('INVALID_ARGUMENT', 'operator-state record before beginState; call beginState first');
    if (this.flushed + this.out.length === 0) this.out.raw(OPERATOR_STREAM_MAGIC).u8(OPERATOR_STREAM_VERSION);
    s.offsets.push(this.flushed + this.out.length);
    if (record instanceof Uint8Array) this.out.bytes(record);
    else this.out.bytes(record[0]).bytes(record[1]);
    if (this.out.length >= OPERATOR_STREAM_FLUSH_BYTES) {
      const n = this.out.length;
      await this.stream.write(this.out.view());
      this.flushed += n;
      this.out.reset();
    }
  }

  /** Closes the stream: its handle, or null (stream discarded) when no state had records. */
  async finish(): Promise<OperatorStateHandle | null> {
    this.endState();
    if (this.metas.length === 0) {
      await this.stream.discard();
      return null;
    }
    if (this.out.length > 0) await this.stream.write(this.out.view());
    const handle = await this.stream.closeAndGetHandle();
    if (handle === null)
      throw new SnapshotError(
        'SNAPSHOT_FAILED',
        'the operator-state stream returned no handle although data was written',
      );
    return { type: 'operator', states: this.metas, stream: handle };
  }

  /** Discards what was written (after a failure). */
  async discard(): Promise<void> {
    await this.stream.discard().catch(() => undefined);
  }

  private endState(): void {
    const s = this.current;
    this.current = undefined;
    if (s !== undefined && s.offsets.length > 0) this.metas.push({ ...s.meta, offsets: s.offsets });
  }
}
