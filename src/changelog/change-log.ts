import type { CheckpointStreamFactory, StateOutputStream } from '../backend/contract.js';
import type { KeyGroupRangeJson } from '../backend/handles.js';
import { SnapshotError } from '../errors.js';
import { ByteWriter } from '../format/bytes.js';
import type { ChangelogLogIdentity, ChangelogSegmentRef } from './handle.js';
import { encodeSegment } from './segment-format.js';

/**
 * A run of records cut from the log; becomes one segment file when persisted. The bytes are kept
 * until a completed checkpoint confirms the segment, so an aborted checkpoint (whose new files the
 * coordinator may delete) can be followed by a re-upload.
 */
export class Chunk {
  ref: ChangelogSegmentRef | null = null;
  persisting: Promise<ChangelogSegmentRef> | null = null;
  /** The factory of the upload in flight. */
  persistingVia: CheckpointStreamFactory | null = null;
  confirmed = false;
  /** Part of a snapshot handle that was handed out (a checkpoint may complete with it). */
  handedOut = false;

  constructor(
    readonly fromSeq: number,
    readonly toSeq: number,
    public bytes: Buffer | null,
  ) {}

  get size(): number {
    return this.bytes?.length ?? this.ref?.file.size ?? 0;
  }
}

export interface LogSettings extends ChangelogLogIdentity {
  readonly maxParallelism: number;
  readonly keyGroupRange: KeyGroupRangeJson;
}

/**
 * The state-change log of one keyed backend: records appended in memory with increasing sequence
 * numbers (the first is 1), cut into chunks, persisted as segments into shared checkpoint storage.
 */
export class ChangeLog {
  private open = new ByteWriter(64 * 1024);
  private openFrom = 1;
  private nextSeq = 1;
  private chunks: Chunk[] = [];
  private readonly streams = new Set<StateOutputStream>();
  private closed = false;

  constructor(readonly settings: LogSettings) {}

  /** Sequence number of the last appended record (0 before the first). */
  get lastSeq(): number {
    return this.nextSeq - 1;
  }

  /** Bytes appended but not cut into a chunk yet. */
  get openBytes(): number {
    return this.open.length;
  }

  /** Appends one record body (copied). Synchronous and allocation-free once the buffer has grown. */
  append(body: Uint8Array): void {
    this.open.bytes(body);
    this.nextSeq++;
  }

  /** Freezes the open records into a chunk (null when there are none). */
  cut(): Chunk | null {
    if (this.nextSeq === this.openFrom) return null;
    const chunk = new Chunk(this.openFrom, this.nextSeq - 1, this.open.toBuffer());
    this.chunks.push(chunk);
    this.openFrom = this.nextSeq;
    // Reuse the buffer unless it grew large (do not pin megabytes after a burst).
    if (this.open.length > 4 * 1024 * 1024) this.open = new ByteWriter(64 * 1024);
    else this.open.reset();
    return chunk;
  }

  /** The cut chunks holding records after `seq`, in order. `seq` must be a chunk boundary. */
  chunksAfter(seq: number): Chunk[] {
    return this.chunks.filter((c) => c.fromSeq > seq);
  }

  /** Forgets chunks whose records are all at or before `seq` (they are covered by a confirmed materialization). */
  truncate(seq: number): void {
    this.chunks = this.chunks.filter((c) => c.toSeq > seq);
  }

  /** Chunks whose segment was persisted but that no checkpoint has confirmed yet. */
  unconfirmedPersisted(): Chunk[] {
    return this.chunks.filter((c) => !c.confirmed && c.ref !== null);
  }

  /**
   * Persists a chunk as a segment file through `streams` (shared scope), or returns the segment it
   * already has. An upload in flight through the same factory or through `background` (a
   * preemptive one) is awaited; one in flight for another checkpoint is not (it may be stalled):
   * this checkpoint writes its own copy then. A failed attempt is forgotten so the next caller retries.
   */
  persist(chunk: Chunk, streams: CheckpointStreamFactory, background: CheckpointStreamFactory | null): Promise<ChangelogSegmentRef> {
    if (chunk.ref !== null) return Promise.resolve(chunk.ref);
    if (chunk.persisting !== null) {
      if (chunk.persistingVia === streams || chunk.persistingVia === background) return chunk.persisting;
      return this.write(chunk, streams);
    }
    const attempt = this.write(chunk, streams).then(
      (ref) => {
        if (chunk.persisting === attempt) {
          chunk.ref = ref;
          chunk.persisting = null;
          chunk.persistingVia = null;
        }
        return ref;
      },
      (err: unknown) => {
        if (chunk.persisting === attempt) {
          chunk.persisting = null;
          chunk.persistingVia = null;
        }
        throw err;
      },
    );
    chunk.persisting = attempt;
    chunk.persistingVia = streams;
    return attempt;
  }

  private async write(chunk: Chunk, streams: CheckpointStreamFactory): Promise<ChangelogSegmentRef> {
    if (this.closed) throw cancelled();
    if (chunk.bytes === null) throw new SnapshotError('SNAPSHOT_FAILED', `changelog segment ${chunk.fromSeq}..${chunk.toSeq} is no longer in memory and has no file; trigger a new materialization.`);
    const s = this.settings;
    const bytes = encodeSegment(
      {
        logId: s.logId,
        jobId: s.jobId,
        operatorId: s.operatorId,
        subtaskIndex: s.subtaskIndex,
        backend: s.backend,
        maxParallelism: s.maxParallelism,
        keyGroupRange: s.keyGroupRange,
        fromSeq: chunk.fromSeq,
        toSeq: chunk.toSeq,
        records: chunk.toSeq - chunk.fromSeq + 1,
      },
      chunk.bytes,
    );
    return { file: await writeStream(streams, bytes, this.streams), fromSeq: chunk.fromSeq, toSeq: chunk.toSeq };
  }

  /** Stops new writes and discards the ones in flight (their partial files are deleted). */
  async close(): Promise<void> {
    this.closed = true;
    const open = [...this.streams];
    this.streams.clear();
    await Promise.allSettled(open.map((s) => s.discard()));
  }
}

export function cancelled(): SnapshotError {
  return new SnapshotError('SNAPSHOT_CANCELLED', 'the changelog backend was closed while a snapshot was being written; take the checkpoint again on a new backend.');
}

/** Writes bytes as one shared-scope stream; the stream is tracked in `active` so close() can discard it. */
export async function writeStream(streams: CheckpointStreamFactory, bytes: Uint8Array, active: Set<StateOutputStream>, scope: 'shared' | 'exclusive' = 'shared') {
  const out = streams.createOutputStream(scope);
  active.add(out);
  try {
    await out.write(bytes);
    const handle = await out.closeAndGetHandle();
    if (handle === null) throw new SnapshotError('SNAPSHOT_FAILED', 'a changelog segment stream returned no handle although bytes were written.');
    return handle;
  } catch (err) {
    await out.discard().catch(() => undefined);
    throw err;
  } finally {
    active.delete(out);
  }
}
