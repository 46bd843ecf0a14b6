import type { CheckpointStreamFactory, StateOutputStream } from '../backend/contract.js';
import type { KeyGroupRangeJson } from '../backend/handles.js';
import { SnapshotError } from '../errors.js';
import { ByteWriter } from '../format/bytes.js';
import { ChunkBuffers } from './chunk-buffers.js';
import type { ChangelogLogIdentity, ChangelogSegmentRef } from './handle.js';
import { encodeSegmentParts } from './segment-format.js';

/** An uploaded copy of a chunk and the factory that wrote it (to discard it if nobody takes it). */
export interface SegmentCopy {
  readonly ref: ChangelogSegmentRef;
  readonly via: CheckpointStreamFactory;
}

/** A copy a checkpoint references, and whether the checkpoint only borrows it (`confirmed`) or owns it. */
export interface UsedSegment {
  readonly chunk: Chunk;
  readonly copy: SegmentCopy;
  /** An earlier upload it reuses (a completed checkpoint references it, or mayReuse said so): not its own. */
  readonly confirmed: boolean;
}

/**
 * How a checkpoint will reference one chunk, decided in its synchronous part: an earlier upload it
 * may reuse (`reuse`), else the chunk's preemptive upload (`spare`, taken now: another checkpoint
 * must not take it too, and the log may have dropped the bytes it holds), else a copy of its own
 * made from `bytes` (taken now: a completion notice may drop them before the asynchronous part runs).
 */
export interface PlannedSegment {
  readonly chunk: Chunk;
  readonly reuse: ChangelogSegmentRef | null;
  readonly spare: SegmentCopy | null;
  readonly bytes: Buffer | null;
}

/**
 * A run of records cut from the log; becomes one segment file when persisted.
 *
 * A copy of the segment uploaded for checkpoint N is deleted by the coordinator when N is aborted
 * or subsumed, and the backend may learn that late or never. So a copy is reused by a later
 * checkpoint only if the coordinator says it may (SnapshotOptions.mayReuse) or, without it, once a
 * completion notice confirmed it (`ref`); until then every checkpoint that needs the chunk
 * references a copy of its own (or takes the one unclaimed `spare`), and the bytes stay in memory
 * for such re-uploads. They are dropped once a copy is confirmed, or, beyond the log's memory bound,
 * once a spare holds them (ChangeLog.boundMemory); a chunk whose confirmed copy is later refused, or
 * whose spare went with a declined checkpoint, has no way back but a fresh materialization.
 */
export class Chunk {
  /** The copy a completed checkpoint references (by a completion notice): reused without mayReuse too. */
  ref: ChangelogSegmentRef | null = null;
  /** The checkpoint whose completion notice confirmed `ref`. */
  confirmedBy: number | null = null;
  /** Copies uploaded by checkpoints not confirmed yet (by id): reused only where mayReuse says so. */
  readonly copies = new Map<number, ChangelogSegmentRef>();
  /** A copy no checkpoint references (a preemptive upload): the next checkpoint takes it. */
  spare: SegmentCopy | null = null;
  /** The preemptive upload in flight (it ends as `spare`). */
  preemptive: Promise<void> | null = null;
  /** Readers of `bytes` that may outlive the log's own reference (planned or running uploads). */
  private readers = 0;
  /** Bytes the log dropped while they still had readers: their memory goes back on the last release. */
  private dropped: Buffer | null = null;

  constructor(
    readonly fromSeq: number,
    readonly toSeq: number,
    private ownBytes: Buffer | null,
    /** Where the bytes' memory goes once nobody reads them (null: to the garbage collector). */
    private readonly pool: ChunkBuffers | null = null,
  ) {}

  /** The records, while the log keeps them in memory (null once dropped). */
  get bytes(): Buffer | null {
    return this.ownBytes;
  }

  get confirmed(): boolean {
    return this.ref !== null;
  }

  get size(): number {
    return this.bytes?.length ?? this.ref?.file.size ?? 0;
  }

  /** Called when completed checkpoint `checkpointId` references `ref`: later checkpoints share it; the bytes can go. */
  confirm(ref: ChangelogSegmentRef, checkpointId: number): void {
    this.ref = ref;
    this.confirmedBy = checkpointId;
    this.copies.clear();
    this.dropBytes();
  }

  /**
   * The bytes for a reader that may still need them after the log dropped them (null when they
   * are gone already); it must call release() once done. Their memory is reused only after the
   * last release, so an upload planned before a notice dropped them still writes these records.
   */
  retain(): Buffer | null {
    if (this.ownBytes !== null) this.readers++;
    return this.ownBytes;
  }

  release(): void {
    this.readers--;
    this.recycle();
  }

  /** The log no longer needs the bytes (a copy was confirmed, or they were truncated). */
  dropBytes(): void {
    if (this.ownBytes === null) return;
    this.dropped = this.ownBytes;
    this.ownBytes = null;
    this.recycle();
  }

  private recycle(): void {
    if (this.readers > 0 || this.dropped === null) return;
    this.pool?.giveBack(this.dropped);
    this.dropped = null;
  }

  /** The confirmation can no longer be trusted (a checkpoint that reused it was declined). */
  unconfirm(): void {
    this.ref = null;
    this.confirmedBy = null;
  }
}

export interface LogSettings extends ChangelogLogIdentity {
  readonly maxParallelism: number;
  readonly keyGroupRange: KeyGroupRangeJson;
  /** Chunk bytes kept in memory beyond which those a spare also holds are dropped (default DEFAULT_LOG_MEMORY_BYTES). */
  readonly maxMemoryBytes?: number;
}

/**
 * Without completion notices (a long materialization: its checkpoint completes only when it ends)
 * no chunk is confirmed, so the log kept every chunk's bytes: GBs of fresh off-heap memory at
 * 1 GB of state, whose page faults and external-memory pressure (full collections of the whole
 * heap) halved record processing. Beyond this many bytes, chunks a preemptive upload holds give
 * their memory back to later cuts.
 */
export const DEFAULT_LOG_MEMORY_BYTES = 64 * 1024 * 1024;

/**
 * The state-change log of one keyed backend: records appended in memory with increasing sequence
 * numbers (the first is 1), cut into chunks, persisted as segments into shared checkpoint storage.
 */
export class ChangeLog {
  private open = new ByteWriter(64 * 1024);
  private readonly buffers = new ChunkBuffers();
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
    const chunk = new Chunk(this.openFrom, this.nextSeq - 1, this.buffers.copy(this.open.view()), this.buffers);
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

  /**
   * Forgets chunks whose records are all at or before `seq` (they are covered by a confirmed
   * materialization) and deletes their spare copies (uploaded early, referenced by no checkpoint).
   */
  async truncate(seq: number): Promise<void> {
    const dropped = this.chunks.filter((c) => c.toSeq <= seq);
    this.chunks = this.chunks.filter((c) => c.toSeq > seq);
    const spares: SegmentCopy[] = [];
    for (const c of dropped) {
      if (c.spare !== null) spares.push(c.spare);
      c.spare = null;
      c.dropBytes();
    }
    await Promise.allSettled(spares.map(discardCopy));
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
    const body = chunk.retain();
    const written = this.write(chunk, body, streams);
    if (body !== null) void written.then(release(chunk), release(chunk));
    const attempt = written.then(
      async (ref) => {
        if (chunk.preemptive === attempt) chunk.preemptive = null;
        if (chunk.spare === null && chunk.bytes !== null && !this.closed && this.chunks.includes(chunk)) {
          chunk.spare = { ref, via: streams };
          this.boundMemory();
        } else await discardCopy({ ref, via: streams }); // not needed any more (or closed meanwhile)
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
   * Past the memory bound, drops the bytes of the oldest chunks a spare holds too (their memory
   * serves later cuts). The spare stays the chunk's until a checkpoint takes it; should that
   * checkpoint be declined (its files deleted), the chunk is gone and plan() says materialize.
   */
  private boundMemory(): void {
    const max = this.settings.maxMemoryBytes ?? DEFAULT_LOG_MEMORY_BYTES;
    let held = 0;
    for (const c of this.chunks) held += c.bytes?.length ?? 0;
    for (const c of this.chunks) {
      if (held <= max) return;
      if (c.bytes === null || c.spare === null) continue;
      held -= c.bytes.length;
      c.dropBytes();
    }
  }

  /**
   * How a checkpoint whose base covers records up to `afterSeq` references the chunks after it
   * (call after cut(), in the snapshot's synchronous part). Null when it cannot: the chunks do
   * not cover afterSeq+1..lastSeq (truncated), or a chunk's bytes are gone and neither its spare
   * nor an earlier copy of it may be referenced. The caller then materializes afresh.
   */
  plan(afterSeq: number, mayReuse: ((path: string) => boolean) | undefined): PlannedSegment[] | null {
    const chunks = this.chunksAfter(afterSeq);
    let expected = afterSeq + 1;
    for (const c of chunks) {
      if (c.fromSeq !== expected) return null;
      expected = c.toSeq + 1;
    }
    if (expected !== this.nextSeq) return null;
    const reused = chunks.map((c) => reusableCopy(c, mayReuse));
    if (chunks.some((c, i) => reused[i] === null && c.spare === null && c.bytes === null)) return null;
    return chunks.map((c, i) => {
      if (reused[i] !== null) return { chunk: c, reuse: reused[i], spare: null, bytes: null };
      const spare = c.spare;
      c.spare = null;
      // Bytes are retained until persist() is done with them (a completion notice may drop them meanwhile).
      return { chunk: c, reuse: null, spare, bytes: spare === null ? c.retain() : null };
    });
  }

  /**
   * The copy of a planned chunk the checkpoint references: the reusable one or the spare if
   * planned; else a spare that arrived meanwhile (taken: nobody else gets it), awaiting a
   * preemptive upload through `background` if one is in flight; else a new upload through
   * `streams`. Releases the bytes plan() retained.
   */
  async persist(
    p: PlannedSegment,
    streams: CheckpointStreamFactory,
    background: CheckpointStreamFactory | null,
  ): Promise<UsedSegment> {
    try {
      return await this.persistPlanned(p, streams, background);
    } finally {
      if (p.bytes !== null) p.chunk.release();
    }
  }

  private async persistPlanned(
    p: PlannedSegment,
    streams: CheckpointStreamFactory,
    background: CheckpointStreamFactory | null,
  ): Promise<UsedSegment> {
    const chunk = p.chunk;
    if (p.reuse !== null) return { chunk, copy: { ref: p.reuse, via: streams }, confirmed: true };
    if (p.spare !== null) return { chunk, copy: p.spare, confirmed: false };
    if (chunk.spare === null && chunk.preemptive !== null && background !== null)
      await chunk.preemptive.catch(() => undefined);
    const spare = chunk.spare;
    if (spare !== null) {
      chunk.spare = null;
      return { chunk, copy: spare, confirmed: false };
    }
    return {
      chunk,
      copy: { ref: await this.write(chunk, p.bytes, streams), via: streams },
      confirmed: false,
    };
  }

  /** Remembers the copies checkpoint `checkpointId` uploaded for itself: later checkpoints may reuse them where mayReuse says so. */
  recordCopies(checkpointId: number, used: readonly UsedSegment[]): void {
    for (const u of used)
      if (!u.confirmed && !u.chunk.confirmed && u.copy.ref.file.type === 'file')
        u.chunk.copies.set(checkpointId, u.copy.ref);
  }

  /** Checkpoint `checkpointId` was aborted: its copies are (being) deleted. */
  forgetCopies(checkpointId: number): void {
    for (const c of this.chunks) c.copies.delete(checkpointId);
  }

  /** Chunks whose copy was confirmed by `checkpointId`'s notice. */
  confirmedBy(checkpointId: number): Chunk[] {
    return this.chunks.filter((c) => c.confirmedBy === checkpointId);
  }

  /**
   * Takes back copies owned by a snapshot that failed before it was acknowledged: the coordinator
   * never saw them, so they are safe to reuse; one per unconfirmed chunk is kept as spare (unless
   * `keepSpares` is false: an aborted checkpoint's files were deleted by the coordinator), the rest
   * deleted.
   */
  async giveBack(used: readonly UsedSegment[], keepSpares = true): Promise<void> {
    const extra: SegmentCopy[] = [];
    for (const u of used) {
      if (u.confirmed) continue;
      // Also when the bytes are gone but no copy is confirmed: the spare may be all the log has.
      if (keepSpares && !this.closed && u.chunk.spare === null && !u.chunk.confirmed && this.chunks.includes(u.chunk))
        u.chunk.spare = u.copy;
      else extra.push(u.copy);
    }
    await Promise.allSettled(extra.map(discardCopy));
  }

  /**
   * Persists planned chunks in order, at most `limit` at a time (a snapshot's asynchronous part).
   * Each upload starts on a later event-loop turn: encoding and checksumming a segment costs about
   * a millisecond per MiB, so neither the snapshot's synchronous part nor one turn carries the
   * whole log tail (without completion notices that tail is everything since the base).
   */
  async persistAll(
    planned: readonly PlannedSegment[],
    streams: CheckpointStreamFactory,
    background: CheckpointStreamFactory | null,
    limit = PERSIST_CONCURRENCY,
  ): Promise<PromiseSettledResult<UsedSegment>[]> {
    const out: PromiseSettledResult<UsedSegment>[] = new Array(planned.length);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < planned.length) {
        const i = next++;
        try {
          out[i] = { status: 'fulfilled', value: await this.persist(planned[i], streams, background) };
        } catch (reason) {
          out[i] = { status: 'rejected', reason };
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, planned.length)) }, worker));
    return out;
  }

  private async write(
    chunk: Chunk,
    body: Buffer | null,
    streams: CheckpointStreamFactory,
  ): Promise<ChangelogSegmentRef> {
    // Never encode in the caller's turn: a record's commit (preemptive persist) or a snapshot's
    // synchronous part must not pay for a segment's copy and checksum.
    await nextTurn();
    if (this.closed) throw cancelled();
    if (body === null)
      throw new SnapshotError(
        'SNAPSHOT_FAILED',
        `changelog segment ${chunk.fromSeq}..${chunk.toSeq} is no longer in memory and has no file; trigger a new materialization.`,
      );
    const s = this.settings;
    const parts = encodeSegmentParts(
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
      body,
    );
    return { file: await writeStream(streams, parts, this.streams), fromSeq: chunk.fromSeq, toSeq: chunk.toSeq };
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

/**
 * An earlier copy of `c` a checkpoint may reference. With mayReuse: the confirmed copy or another
 * checkpoint's copy, whichever the coordinator vouches for (inline copies need no vouching: they
 * live in _metadata). Without: only the copy a completion notice confirmed.
 */
function reusableCopy(c: Chunk, mayReuse: ((path: string) => boolean) | undefined): ChangelogSegmentRef | null {
  if (mayReuse === undefined) return c.ref;
  for (const ref of [...(c.ref === null ? [] : [c.ref]), ...[...c.copies.values()].reverse()]) {
    if (ref.file.type !== 'file' || mayReuse(ref.file.path)) return ref;
  }
  return null;
}

/** A callback that releases `chunk`'s retained bytes (once an upload settled). */
function release(chunk: Chunk): () => void {
  return () => chunk.release();
}

/** Segment uploads of one snapshot in flight at once (bounds the work queued per event-loop turn). */
const PERSIST_CONCURRENCY = 2;

/** Resolves on a later event-loop turn (after pending I/O callbacks and earlier immediates). */
export function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Deletes a copy no checkpoint references (best effort: a leftover is only garbage for gc). */
async function discardCopy(copy: SegmentCopy): Promise<void> {
  if (copy.ref.file.type === 'file') await copy.via.discardFiles([copy.ref.file]).catch(() => undefined);
}

export function cancelled(): SnapshotError {
  return new SnapshotError(
    'SNAPSHOT_CANCELLED',
    'the changelog backend was closed while a snapshot was being written; take the checkpoint again on a new backend.',
  );
}

/** Writes bytes (or parts in order) as one stream; the stream is tracked in `active` so close() can discard it. */
export async function writeStream(
  streams: CheckpointStreamFactory,
  bytes: Uint8Array | readonly Uint8Array[],
  active: Set<StateOutputStream>,
  scope: 'shared' | 'exclusive' = 'shared',
) {
  const out = streams.createOutputStream(scope);
  active.add(out);
  try {
    for (const part of bytes instanceof Uint8Array ? [bytes] : bytes) await out.write(part);
    const handle = await out.closeAndGetHandle();
    if (handle === null)
      throw new SnapshotError(
        'SNAPSHOT_FAILED',
        'a changelog segment stream returned no handle although bytes were written.',
      );
    return handle;
  } catch (err) {
    await out.discard().catch(() => undefined);
    throw err;
  } finally {
    active.delete(out);
  }
}
