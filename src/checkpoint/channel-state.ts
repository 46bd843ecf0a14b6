import type { CheckpointStreamFactory, StateFileReader } from '../backend/contract.js';
import type { StreamHandle } from '../backend/handles.js';
import {
  ChannelStateError,
  FormatError,
  SnapshotError,
  StateMigrationError,
  StreamStateError,
  type ErrorCode,
} from '../errors.js';
import type { Serializer } from '../serializers/serializer.js';
import { readStreamHandle } from './streams.js';

/**
 * Channel state: the in-flight records of an unaligned checkpoint (docs/FORMAT.md, "Channel state";
 * docs/RUNTIME.md, "Checkpointing modes"). A subtask persists the records a barrier overtook:
 * on its input channels (read after it took its snapshot, before that channel's barrier) and on
 * its output channels (emitted before the barrier but still queued when the barrier jumped ahead).
 */

/** `input`: channel = index of the upstream subtask it comes from; `output`: index of the downstream subtask it feeds. */
export type ChannelDirection = 'input' | 'output';

/**
 * How the exchange routes records, which decides how a restore at another parallelism places them:
 * `keyed` by each record's key group (which the record carries); `round-robin` by the old
 * consuming subtask's index modulo the new parallelism (Flink's ROUND_ROBIN mapper).
 */
export type ChannelPartitioning = 'keyed' | 'round-robin';

/** One channel's records inside a channel-state stream. */
export interface ChannelStateEntry {
  readonly direction: ChannelDirection;
  readonly channel: number;
  readonly partitioning: ChannelPartitioning;
  /** Sequence number of the first record (per channel, counted by the runtime); the rest follow without gaps. */
  readonly firstSequence: number;
  readonly count: number;
  /** Byte range of its record frames in the stream. */
  readonly offset: number;
  readonly length: number;
}

/** A subtask's channel state for one checkpoint: one stream, one entry per channel and direction (Flink's merged handle). */
export interface ChannelStateHandle {
  readonly type: 'channel-state';
  /** Serializer of the record values (id and version), so a restore with another one fails clearly. */
  readonly serializer: { readonly id: string; readonly version: number };
  readonly entries: readonly ChannelStateEntry[];
  readonly stream: StreamHandle;
}

/** One in-flight record as the runtime hands it over and gets it back. */
export interface InFlightRecord<T> {
  readonly sequence: number;
  readonly value: T;
  /** The record's key group on a keyed exchange; absent on others. */
  readonly keyGroup?: number;
}

/** The stream starts with "SSCS" and a u16 version; each record frame is i32 keyGroup (-1: none) | u32 length | bytes. */
export const CHANNEL_STATE_MAGIC = Buffer.from('SSCS', 'ascii');
export const CHANNEL_STATE_VERSION = 1;
const HEADER_BYTES = 6;
const FRAME_HEADER_BYTES = 8;

export interface ChannelStateWriterOptions<T> {
  /** For messages: `<operatorId>[<subtask>]`. */
  readonly subtask: string;
  readonly checkpointId: number;
  /** Channels per direction: input = upstream parallelism, output = downstream parallelism (0: none). */
  readonly inputChannels: number;
  readonly outputChannels: number;
  readonly serializer: Serializer<T>;
}

interface OpenEntry<T> {
  readonly direction: ChannelDirection;
  readonly channel: number;
  readonly partitioning: ChannelPartitioning;
  readonly records: InFlightRecord<T>[];
}

/**
 * Collects one subtask's in-flight records for one checkpoint and writes them, at `finish`,
 * through the checkpoint's stream factory (exclusive scope: the file lives and dies with the
 * checkpoint's directory). Records of a channel must come in order, with consecutive sequence
 * numbers (CHANNEL_STATE_SEQUENCE_GAP otherwise); channels outside the subtask's
 * (CHANNEL_STATE_UNKNOWN_CHANNEL) are refused at once, before anything is written.
 */
export class ChannelStateWriter<T> {
  private readonly entries = new Map<string, OpenEntry<T>>();
  private finished = false;

  constructor(private readonly opts: ChannelStateWriterOptions<T>) {}

  addInput(channel: number, partitioning: ChannelPartitioning, records: readonly InFlightRecord<T>[]): void {
    this.add('input', channel, partitioning, records);
  }

  addOutput(channel: number, partitioning: ChannelPartitioning, records: readonly InFlightRecord<T>[]): void {
    this.add('output', channel, partitioning, records);
  }

  /** Records collected so far. */
  get recordCount(): number {
    let n = 0;
    for (const e of this.entries.values()) n += e.records.length;
    return n;
  }

  private add(
    direction: ChannelDirection,
    channel: number,
    partitioning: ChannelPartitioning,
    records: readonly InFlightRecord<T>[],
  ): void {
    const { opts } = this;
    if (this.finished) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `channel state of ${opts.subtask} for checkpoint ${opts.checkpointId} was already written; add records before finish().`,
      );
    }
    const channels = direction === 'input' ? opts.inputChannels : opts.outputChannels;
    if (!Number.isSafeInteger(channel) || channel < 0 || channel >= channels) {
      throw new ChannelStateError(
        'CHANNEL_STATE_UNKNOWN_CHANNEL',
        `${opts.subtask} handed checkpoint ${opts.checkpointId} ${direction} channel state for channel ${channel}, but it has ${channels} ${direction} channel(s) (0..${channels - 1}); ` +
          'the runtime must name the channel by the index of the subtask on its other end.',
      );
    }
    if (records.length === 0) return;
    const key = `${direction}:${channel}`;
    let entry = this.entries.get(key);
    if (entry === undefined) {
      entry = { direction, channel, partitioning, records: [] };
      this.entries.set(key, entry);
    } else if (entry.partitioning !== partitioning) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `${opts.subtask}: ${direction} channel ${channel} was first ${entry.partitioning}, now ${partitioning}; a channel has one partitioning.`,
      );
    }
    let expected = entry.records.at(-1)?.sequence;
    for (const r of records) {
      if (
        !Number.isSafeInteger(r.sequence) ||
        r.sequence < 0 ||
        (expected !== undefined && r.sequence !== expected + 1)
      ) {
        throw new ChannelStateError(
          'CHANNEL_STATE_SEQUENCE_GAP',
          `${opts.subtask}, checkpoint ${opts.checkpointId}, ${direction} channel ${channel}: record sequence ${r.sequence} follows ${expected ?? 'nothing'}; ` +
            `expected ${expected === undefined ? 'a non-negative integer' : expected + 1}. In-flight records must be handed over in channel order, none left out.`,
        );
      }
      if (partitioning === 'keyed' && !(Number.isSafeInteger(r.keyGroup) && (r.keyGroup as number) >= 0)) {
        throw new ChannelStateError(
          'CHANNEL_STATE_UNPLACEABLE',
          `${opts.subtask}, checkpoint ${opts.checkpointId}: record ${r.sequence} on keyed ${direction} channel ${channel} has no key group, so a restore could not place it; the runtime must pass each keyed record's key group.`,
        );
      }
      expected = r.sequence;
      entry.records.push(r);
    }
  }

  /** Writes everything collected; null when there was nothing in flight (no stream is opened). */
  async finish(streams: CheckpointStreamFactory): Promise<ChannelStateHandle | null> {
    this.finished = true;
    if (this.recordCount === 0) return null;
    const chunks: Buffer[] = [];
    const header = Buffer.alloc(HEADER_BYTES);
    CHANNEL_STATE_MAGIC.copy(header, 0);
    header.writeUInt16BE(CHANNEL_STATE_VERSION, 4);
    chunks.push(header);
    let position = HEADER_BYTES;
    const entries: ChannelStateEntry[] = [];
    const sorted = [...this.entries.values()].sort((a, b) =>
      a.direction === b.direction ? a.channel - b.channel : a.direction === 'input' ? -1 : 1,
    );
    for (const e of sorted) {
      const offset = position;
      for (const r of e.records) {
        const bytes = this.opts.serializer.serialize(r.value);
        const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES);
        frame.writeInt32BE(r.keyGroup ?? -1, 0);
        frame.writeUInt32BE(bytes.length, 4);
        chunks.push(frame, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
        position += FRAME_HEADER_BYTES + bytes.length;
      }
      entries.push({
        direction: e.direction,
        channel: e.channel,
        partitioning: e.partitioning,
        firstSequence: e.records[0].sequence,
        count: e.records.length,
        offset,
        length: position - offset,
      });
    }
    const out = streams.createOutputStream('exclusive');
    try {
      await out.write(Buffer.concat(chunks, position));
      const stream = await out.closeAndGetHandle();
      if (stream === null) throw new SnapshotError('SNAPSHOT_FAILED', 'the channel-state stream returned no handle.');
      const { id, version } = this.opts.serializer;
      return { type: 'channel-state', serializer: { id, version }, entries, stream };
    } catch (err) {
      await out.discard().catch(() => undefined);
      throw err;
    }
  }
}

/** The records of every entry of `handle`, in entry order; each entry's records in channel order. */
export async function readChannelState<T>(
  handle: ChannelStateHandle,
  files: StateFileReader,
  serializer: Serializer<T>,
  what: string,
): Promise<{ readonly entry: ChannelStateEntry; readonly records: InFlightRecord<T>[] }[]> {
  if (handle.serializer.id !== serializer.id || handle.serializer.version !== serializer.version) {
    throw new StateMigrationError(
      'SERIALIZER_INCOMPATIBLE',
      `${what}: in-flight records were written with ${handle.serializer.id} v${handle.serializer.version}, not ${serializer.id} v${serializer.version}; restore with the record serializer the job ran with.`,
    );
  }
  const bytes = await readStreamHandle(handle.stream, files);
  if (bytes.length < HEADER_BYTES || !bytes.subarray(0, 4).equals(CHANNEL_STATE_MAGIC))
    bad('BAD_MAGIC', `${what}: not a channel-state stream (no "SSCS" header); the file is damaged.`);
  const version = bytes.readUInt16BE(4);
  if (version !== CHANNEL_STATE_VERSION)
    bad(
      'UNSUPPORTED_VERSION',
      `${what}: channel-state version ${version}; this streamstate reads ${CHANNEL_STATE_VERSION}. Upgrade streamstate.`,
    );
  return handle.entries.map((entry) => {
    const records: InFlightRecord<T>[] = [];
    let at = entry.offset;
    const end = entry.offset + entry.length;
    if (end > bytes.length)
      bad(
        'TRUNCATED',
        `${what}: ${entry.direction} channel ${entry.channel} ends past the stream (${end} > ${bytes.length}).`,
      );
    for (let i = 0; i < entry.count; i++) {
      if (at + FRAME_HEADER_BYTES > end) break;
      const keyGroup = bytes.readInt32BE(at);
      const length = bytes.readUInt32BE(at + 4);
      at += FRAME_HEADER_BYTES;
      if (at + length > end) break;
      const value = serializer.deserialize(bytes.subarray(at, at + length));
      at += length;
      records.push(
        keyGroup >= 0
          ? { sequence: entry.firstSequence + i, value, keyGroup }
          : { sequence: entry.firstSequence + i, value },
      );
    }
    if (records.length !== entry.count || at !== end) {
      throw new ChannelStateError(
        'CHANNEL_STATE_SEQUENCE_GAP',
        `${what}: ${entry.direction} channel ${entry.channel} should hold records ${entry.firstSequence}..${entry.firstSequence + entry.count - 1} in ${entry.length} bytes, ` +
          `found ${records.length} record(s) in ${at - entry.offset} bytes; in-flight records are missing. Restore an earlier checkpoint.`,
      );
    }
    return { entry, records };
  });
}

function bad(code: ErrorCode, message: string): never {
  throw new FormatError(code, message);
}
