import type { CheckpointStreamFactory, StateOutputStream } from '../backend/contract.js';
import type { KeyGroupRangeJson } from '../backend/handles.js';
import { SnapshotError } from '../errors.js';
import { ByteWriter } from '../format/bytes.js';
import type { ChangelogLogIdentity, ChangelogSegmentRef } from './handle.js';
import { encodeSegment } from './segment-format.js';

/** An uploaded copy of a chunk and the factory that wrote it (to discard it if nobody takes it). */
export interface SegmentCopy {
  readonly ref: ChangelogSegmentRef;
  readonly via: CheckpointStreamFactory;
}

/** A copy a checkpoint references, and whether the checkpoint only borrows it (`confirmed`) or owns it. */
export interface UsedSegment {
  readonly chunk: Chunk;
  readonly copy: SegmentCopy;
  /** A copy a completed checkpoint already references (the shared-state registry tracks it). */
  readonly confirmed: boolean;
}

/**
 * A run of records cut from the log; becomes one segment file when persisted.
 *
 * A copy of the segment uploaded for checkpoint N is deleted by the coordinator when N is aborted
 * or subsumed, and the backend may learn that late or never. So a copy is shared by later
 * checkpoints only once a completed checkpoint references it (`ref`); until then every checkpoint
 * that needs the chunk references a copy of its own (or takes the one unclaimed `spare`), and the
 * bytes stay in memory for such re-uploads.
 */
export class Chunk {
  /** The copy a completed checkpoint references: every later checkpoint may reference it too. */
  ref: ChangelogSegmentRef | null = null;
  /** A copy no checkpoint references (a preemptive upload): the next checkpoint takes it. */
  spare: SegmentCopy | null = null;
  /** The preemptive upload in flight (it ends as `spare`). */
  preemptive: Promise<void> | null = null;

  constructor(
    readonly fromSeq: number,
    readonly toSeq: number,
    public bytes: Buffer | null,
  ) {}

  get confirmed(): boolean {
    return this.ref !== null;
  }

  get size(): number {
    return this.bytes?.length ?? this.ref?.file.size ?? 0;
  }

  /** Called when a completed checkpoint references `ref`: later checkpoints share it; the bytes can go. */
  confirm(ref: ChangelogSegmentRef): void {
    this.ref = ref;
    this.bytes = null;
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

  /** Uploaded copies that no checkpoint references (orphans once the backend closes). */
  spares(): SegmentCopy[] {
    const out: SegmentCopy[] = [];
    for (const c of this.chunks) if (c.spare !== null) out.push(c.spare);
    return out;
  }

  /**
   * Uploads a chunk in the background (no checkpoint references it yet); the copy becomes the
   * chunk's spare. A failure is reported and forgotten: the next checkpoint uploads it itself.
   */
  persistEarly(chunk: Chunk, streams: CheckpointStreamFactory): Promise<void> {
    if (chunk.confirmed || chunk.spare !== null) return Promise.resolve();
    if (chunk.preemptive !== null) return chunk.preemptive;
    const attempt = this.write(chunk, streams).then(
      async (ref) => {
        if (chunk.preemptive === attempt) chunk.preemptive = null;
        if (chunk.spare === null && !chunk.confirmed && !this.closed && this.chunks.includes(chunk)) chunk.spare = { ref, via: streams };
        else await discardCopy({ ref, via: streams }); // not needed any more (or closed meanwhile)
      },
      (err: unknown) => {
        if (chunk.preemptive === attempt) chunk.preemptive = null;
        throw err;
      },
    );
    chunk.preemptive = attempt;
    return attempt;
  }

  /**
   * The copy of a chunk that checkpoint-to-be may reference: the confirmed one if a completed
   * checkpoint references one; else the spare (taken: nobody else gets it), awaiting a preemptive
   * upload through `background` if one is in flight; else a new upload through `streams`.
   * Owned copies (not `confirmed`) must not be given to another checkpoint until confirmed.
   */
  async persist(chunk: Chunk, streams: CheckpointStreamFactory, background: CheckpointStreamFactory | null): Promise<UsedSegment> {
    if (chunk.ref !== null) return { chunk, copy: { ref: chunk.ref, via: streams }, confirmed: true };
    if (chunk.spare === null && chunk.preemptive !== null && background !== null) await chunk.preemptive.catch(() => undefined);
    if (chunk.ref !== null) return { chunk, copy: { ref: chunk.ref, via: streams }, confirmed: true };
    const spare = chunk.spare;
    if (spare !== null) {
      chunk.spare = null;
      return { chunk, copy: spare, confirmed: false };
    }
    return { chunk, copy: { ref: await this.write(chunk, streams), via: streams }, confirmed: false };
  }

  /**
   * Takes back copies owned by a snapshot that failed before it was acknowledged: the coordinator
   * never saw them, so they are safe to reuse; one per chunk is kept as spare, the rest deleted.
   */
  async giveBack(used: readonly UsedSegment[]): Promise<void> {
    const extra: SegmentCopy[] = [];
    for (const u of used) {
      if (u.confirmed) continue;
      if (!this.closed && !u.chunk.confirmed && u.chunk.spare === null && this.chunks.includes(u.chunk)) u.chunk.spare = u.copy;
      else extra.push(u.copy);
    }
    await Promise.allSettled(extra.map(discardCopy));
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

  /** Stops new writes and discards the ones in flight (their partial files are deleted) and the spare copies. */
  async close(): Promise<void> {
    this.closed = true;
    const open = [...this.streams];
    this.streams.clear();
    await Promise.allSettled(open.map((s) => s.discard()));
    const spares = this.spares();
    for (const c of this.chunks) c.spare = null;
    await Promise.allSettled(spares.map(discardCopy));
  }
}

/** Deletes a copy no checkpoint references (best effort: a leftover is only garbage for gc). */
async function discardCopy(copy: SegmentCopy): Promise<void> {
  if (copy.ref.file.type === 'file') await copy.via.discardFiles([copy.ref.file]).catch(() => undefined);
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
