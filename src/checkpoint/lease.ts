import { FencedError, StreamStateError, isStreamStateError } from '../errors.js';
import type { BlobInfo, BlobStore } from '../storage/blob-store.js';
import { randomHex } from '../storage/blob-names.js';

/**
 * The job lease: one live instance per job and checkpoint storage (docs/RUNTIME.md, "Fencing").
 *
 * Every start of an instance (CheckpointCoordinator.restore()) writes a marker object
 *
 *   <job>/_lease/epoch-<16-digit epoch>-<16 hex instance id>
 *
 * with an epoch one above the highest marker it lists. The holder of the lease is the marker that
 * sorts last (epoch, then instance id): zero-padding makes name order that order. Two instances
 * that start at the same moment may pick the same epoch; the instance id breaks the tie the same
 * way for every reader, and the loser's start fails with FENCED. This needs only a put and a
 * strongly consistent LIST, so it works alike on local disk, in memory and on S3 (S3 lists are
 * strongly consistent since 2020; s3rver ignores If-None-Match, so an exclusive create is not
 * relied on).
 *
 * An instance is fenced as soon as a marker sorts after its own (or its own is gone): it then may
 * not complete checkpoints, delete files or collect garbage; check() raises FENCED (sticky).
 */
export const LEASE_DIR = '_lease';

const MARKER = /^epoch-(\d{16})-([0-9a-f]{16})$/;
const LEASE_FORMAT = 1;

/** What readLease() reports about a job's lease. */
export interface LeaseInfo {
  readonly jobId: string;
  /** Strictly increasing per start of an instance of the job. */
  readonly epoch: number;
  readonly instanceId: string;
  /** Store-relative name of the marker object. */
  readonly marker: string;
  /** When the holder took the lease (ms since epoch, the holder's clock); undefined if its marker is unreadable. */
  readonly acquiredAt?: number;
  /**
   * When the holder last renewed it (ms since epoch): the marker's modification time as the store
   * reports it (the store's clock, comparable with other files' ages), else the holder's own record.
   * The holder renews at start and after every completed checkpoint.
   */
  readonly renewedAt?: number;
  /** The holder shut down cleanly: no instance is live on this lease. */
  readonly released: boolean;
}

interface MarkerBody {
  readonly format: number;
  readonly jobId: string;
  readonly epoch: number;
  readonly instanceId: string;
  readonly acquiredAt: number;
  readonly renewedAt: number;
  readonly released: boolean;
}

export interface JobLeaseOptions {
  /** ms clock for the holder's records. Default Date.now. */
  readonly now?: () => number;
}

/** The directory of a job's lease markers (list prefix). */
export function leasePrefix(jobId: string): string {
  return `${jobId}/${LEASE_DIR}/`;
}

/** Whether a store-relative name lies in a job's lease directory (gc must never delete these). */
export function isLeaseName(jobId: string, name: string): boolean {
  return name.startsWith(leasePrefix(jobId));
}

/**
 * The current lease of `jobId` on `store` (the newest marker), or null when no instance ever took
 * one (a fresh job, or one written before fencing existed). For `streamstate gc` and operators:
 * refuse to delete while `released` is false and `renewedAt` is recent.
 */
export async function readLease(store: BlobStore, jobId: string): Promise<LeaseInfo | null> {
  const markers = await listMarkers(store, jobId);
  const newest = markers.at(-1);
  return newest === undefined ? null : describeMarker(store, jobId, newest);
}

/**
 * Older leases that may still have a live instance behind them: markers sorting before `before`
 * (default: all) that were not released. Used by start-up cleanup to spare files another instance may complete.
 */
export async function unreleasedOlderLeases(store: BlobStore, jobId: string, before?: string): Promise<LeaseInfo[]> {
  const out: LeaseInfo[] = [];
  for (const m of await listMarkers(store, jobId)) {
    if (before !== undefined && m.info.name >= before) continue;
    const info = await describeMarker(store, jobId, m);
    if (!info.released) out.push(info);
  }
  return out;
}

interface ParsedMarker {
  readonly info: BlobInfo;
  readonly epoch: number;
  readonly instanceId: string;
}

async function listMarkers(store: BlobStore, jobId: string): Promise<ParsedMarker[]> {
  const prefix = leasePrefix(jobId);
  const out: ParsedMarker[] = [];
  for (const info of await store.list(prefix)) {
    const m = MARKER.exec(info.name.slice(prefix.length));
    if (m !== null) out.push({ info, epoch: Number(m[1]), instanceId: m[2] });
  }
  // Names sort as (epoch, instance id): both fixed-width.
  return out.sort((a, b) => (a.info.name < b.info.name ? -1 : a.info.name > b.info.name ? 1 : 0));
}

async function describeMarker(store: BlobStore, jobId: string, m: ParsedMarker): Promise<LeaseInfo> {
  const body = await readBody(store, m.info.name);
  const renewedAt = m.info.modified ?? body?.renewedAt;
  return {
    jobId,
    epoch: m.epoch,
    instanceId: m.instanceId,
    marker: m.info.name,
    ...(body !== null ? { acquiredAt: body.acquiredAt } : {}),
    ...(renewedAt !== undefined ? { renewedAt } : {}),
    released: body?.released ?? false,
  };
}

/** The marker's record; null when it vanished or cannot be parsed (a torn write): the name still counts. */
async function readBody(store: BlobStore, name: string): Promise<MarkerBody | null> {
  let bytes: Buffer;
  try {
    bytes = await store.get(name);
  } catch (err) {
    if (isStreamStateError(err, 'NOT_FOUND')) return null;
    throw err;
  }
  try {
    const body = JSON.parse(bytes.toString('utf8')) as Partial<MarkerBody>;
    if (typeof body.epoch !== 'number' || typeof body.acquiredAt !== 'number' || typeof body.renewedAt !== 'number')
      return null;
    return {
      format: body.format ?? LEASE_FORMAT,
      jobId: String(body.jobId),
      epoch: body.epoch,
      instanceId: String(body.instanceId),
      acquiredAt: body.acquiredAt,
      renewedAt: body.renewedAt,
      released: body.released === true,
    };
  } catch {
    return null;
  }
}

/** A lease this process holds (or held, until it learns it was fenced). */
export class JobLease {
  /**
   * Takes the lease of `jobId` on `store`: an epoch above every existing marker. Throws FENCED when
   * another instance started at the same moment with the same epoch and won the tie.
   */
  static async acquire(store: BlobStore, jobId: string, opts: JobLeaseOptions = {}): Promise<JobLease> {
    const lease = new JobLease(store, jobId, randomHex(16), opts.now ?? Date.now);
    // Unreleased markers, read before ours exists: start-up cleanup spares files they may complete.
    lease.olderLive = await unreleasedOlderLeases(store, jobId);
    try {
      await lease.take();
    } catch (err) {
      // The marker could not be written (disk full, read-only): the instance starts without the
      // lease and takes it at its first check (see check()); until then it completes nothing.
      if (!isStreamStateError(err, 'STORAGE_IO')) throw err;
      lease.pending = err;
    }
    return lease;
  }

  /** Older leases that were not released when this one was taken (their instances may be alive). */
  olderLive: readonly LeaseInfo[] = [];
  private epochValue = 0;
  private markerName = '';
  private readonly acquiredAt: number;
  private fencedBy: FencedError | null = null;
  private released = false;
  /** Why the marker is not written yet (acquire() could not write it); null once it is. */
  private pending: unknown = null;

  private constructor(
    private readonly store: BlobStore,
    readonly jobId: string,
    readonly instanceId: string,
    private readonly now: () => number,
  ) {
    this.acquiredAt = now();
  }

  /** The lease's epoch (0 while its marker could not be written yet). */
  get epoch(): number {
    return this.epochValue;
  }

  /** Store-relative name of this lease's marker ('' while it could not be written yet). */
  get marker(): string {
    return this.markerName;
  }

  /** Writes a marker one epoch above every existing one and checks it won. */
  private async take(): Promise<void> {
    const markers = await listMarkers(this.store, this.jobId);
    const epoch = (markers.at(-1)?.epoch ?? 0) + 1;
    if (!Number.isSafeInteger(epoch) || epoch >= 1e16) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `job ${this.jobId} has used up its lease epochs (${epoch - 1}); remove ${leasePrefix(this.jobId)} once no instance runs.`,
      );
    }
    this.epochValue = epoch;
    this.markerName = `${leasePrefix(this.jobId)}epoch-${String(epoch).padStart(16, '0')}-${this.instanceId}`;
    await this.write(false);
    this.pending = null;
    try {
      await this.check('start');
    } catch (err) {
      // Lost a same-epoch tie: this marker sorts below the winner's and means nothing any more.
      if (isStreamStateError(err, 'FENCED')) await this.store.delete([this.marker]).catch(() => undefined);
      throw err;
    }
    await this.pruneReleased();
  }

  /**
   * Like check(), for deletions: an instance whose marker could not be written yet (storage full
   * or read-only at its start) may still delete, so that gc and retention can free space; it
   * completes nothing until it holds the lease. Fenced is fenced.
   */
  async checkMayDelete(action: string): Promise<void> {
    try {
      await this.check(action);
    } catch (err) {
      if (this.pending !== null && isStreamStateError(err, 'STORAGE_IO')) return;
      throw err;
    }
  }

  /** Whether this instance already knows it was fenced (no storage access). */
  get fenced(): boolean {
    return this.fencedBy !== null;
  }

  /** Throws FENCED if this instance already knows it was fenced (synchronous; for trigger calls). */
  throwIfKnownFenced(action: string): void {
    if (this.fencedBy !== null) throw this.fencedError(action, this.fencedBy.message);
  }

  /**
   * Lists the lease markers and throws FENCED unless this lease still sorts last. Once fenced,
   * always fenced (no storage access). Storage failures pass through as StorageError.
   */
  async check(action: string): Promise<void> {
    this.throwIfKnownFenced(action);
    if (this.pending !== null) {
      await this.take(); // throws the storage error while the marker still cannot be written
      return;
    }
    const markers = await listMarkers(this.store, this.jobId);
    const newest = markers.at(-1);
    if (newest?.info.name === this.marker) return;
    const mine = markers.some((m) => m.info.name === this.marker);
    const why =
      newest === undefined || !mine
        ? `its lease marker ${this.marker} was removed from ${this.store.location}`
        : `instance ${newest.instanceId} took the lease with epoch ${newest.epoch} (this instance has epoch ${this.epoch})`;
    this.fencedBy = new FencedError('FENCED', why);
    throw this.fencedError(action, why);
  }

  /** Records that the holder is alive (after a completed checkpoint). Checks first: a fenced instance does not renew. */
  async renew(): Promise<void> {
    await this.check('renew its lease');
    await this.write(false);
  }

  /** Marks the lease released (clean shutdown): later starts need not spare this instance's files. */
  async release(): Promise<void> {
    if (this.released || this.fencedBy !== null || this.pending !== null) return;
    await this.check('release its lease');
    await this.write(true);
    this.released = true;
  }

  /**
   * Deletes older markers of instances that shut down cleanly, so starts stay cheap (each start reads
   * the older unreleased markers). Never this one: the newest marker keeps the epochs increasing.
   * Best effort; unreleased ones stay (their instance may be alive).
   */
  private async pruneReleased(): Promise<void> {
    try {
      const older = (await listMarkers(this.store, this.jobId)).filter((m) => m.info.name < this.marker);
      const released: string[] = [];
      for (const m of older)
        if ((await readBody(this.store, m.info.name))?.released === true) released.push(m.info.name);
      if (released.length > 0) await this.store.delete(released);
    } catch {
      // A leftover marker costs one read at the next start; nothing more.
    }
  }

  private async write(released: boolean): Promise<void> {
    const body: MarkerBody = {
      format: LEASE_FORMAT,
      jobId: this.jobId,
      epoch: this.epoch,
      instanceId: this.instanceId,
      acquiredAt: this.acquiredAt,
      renewedAt: this.now(),
      released,
    };
    // Atomic: a reader never sees a torn record (the name alone would still count).
    await this.store.putAtomic(this.marker, Buffer.from(JSON.stringify(body)));
  }

  private fencedError(action: string, why: string): FencedError {
    return new FencedError(
      'FENCED',
      `this instance of job ${this.jobId} (lease epoch ${this.epoch}) may not ${action}: it was fenced, ${why}. ` +
        'A newer instance owns the checkpoint storage now; stop this one (its unfinished checkpoints are left for the new instance to clean up).',
    );
  }
}
