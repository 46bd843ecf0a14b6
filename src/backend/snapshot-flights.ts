import { SnapshotError } from '../errors.js';
import type { CheckpointStreamFactory, StateOutputStream, StateScope, UploadFileOptions } from './contract.js';
import type { FileStreamHandle } from './handles.js';

/** Makes a running asynchronous part stop: its writer stops at its next step and deletes what it wrote. */
export type StopSnapshot = () => Promise<void> | void;

interface Flight {
  readonly checkpointId: number;
  readonly stop: StopSnapshot;
  readonly reject: (err: SnapshotError) => void;
  readonly settled: Promise<void>;
}

/** How long a canceller waits for a stopped part to settle (I/O that cannot be interrupted finishes late). */
const DEFAULT_GRACE_MS = 5000;

/**
 * The asynchronous snapshot parts a backend has running, and the one rule for stopping them that
 * every backend follows (docs/SEMANTICS.md, "Snapshots"): close() cancels all of them and
 * notifyCheckpointAborted(id) those of checkpoint `id` (as Flink's abort notice stops a task's
 * local work for that checkpoint). A cancelled part's `done` rejects at once with
 * SNAPSHOT_CANCELLED; the canceller returns once the part stopped and deleted what it wrote, or
 * after `graceMs` when its I/O cannot be interrupted.
 */
export class SnapshotFlights {
  private readonly running = new Set<Flight>();

  constructor(
    /** Names the backend in cancellation messages ("the LevelDB backend"). */
    private readonly backend: string,
    private readonly graceMs = DEFAULT_GRACE_MS,
  ) {}

  /** Parts still running. */
  get size(): number {
    return this.running.size;
  }

  /** Tracks one asynchronous part; returns its `done`, which a cancellation rejects at once. */
  track<H>(checkpointId: number, work: Promise<H>, stop: StopSnapshot): Promise<H> {
    let reject!: (err: SnapshotError) => void;
    const cancelled = new Promise<never>((_, rej) => (reject = rej));
    cancelled.catch(() => undefined);
    const settled = work.then(
      () => undefined,
      () => undefined,
    );
    const flight: Flight = { checkpointId, stop, reject, settled };
    this.running.add(flight);
    void settled.then(() => this.running.delete(flight));
    const done = Promise.race([work, cancelled]);
    // A runtime that drops a cancelled task must not crash the process with an unhandled rejection.
    done.catch(() => undefined);
    return done;
  }

  /** notifyCheckpointAborted: stops checkpoint `checkpointId`'s running parts. */
  cancel(checkpointId: number): Promise<void> {
    const mine = [...this.running].filter((f) => f.checkpointId === checkpointId);
    return this.stop(mine, (id) => `checkpoint ${id} was aborted (notifyCheckpointAborted)`);
  }

  /** close(): stops every running part. */
  cancelAll(): Promise<void> {
    return this.stop([...this.running], () => `${this.backend} was closed`);
  }

  private async stop(flights: Flight[], why: (checkpointId: number) => string): Promise<void> {
    if (flights.length === 0) return;
    for (const f of flights) {
      this.running.delete(f);
      f.reject(
        new SnapshotError(
          'SNAPSHOT_CANCELLED',
          `the snapshot of checkpoint ${f.checkpointId} was cancelled: ${why(f.checkpointId)} while it was written; its partial files are deleted.`,
        ),
      );
    }
    await Promise.allSettled(flights.map(async (f) => f.stop()));
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(flights.map((f) => f.settled)),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, this.graceMs);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
  }
}

/**
 * A checkpoint's stream factory that can discard every stream still open through it: what stops a
 * part that writes through many streams (the changelog's segment copies). Streams closed before
 * belong to their handles; new streams and uploads after discardAll() fail with SNAPSHOT_CANCELLED.
 */
export class DiscardableStreams implements CheckpointStreamFactory {
  private readonly open = new Set<StateOutputStream>();
  private wasDiscarded = false;

  constructor(private readonly inner: CheckpointStreamFactory) {}

  /** discardAll() was called: the part was cancelled. */
  get discarded(): boolean {
    return this.wasDiscarded;
  }

  createOutputStream(scope: StateScope): StateOutputStream {
    this.checkLive();
    const stream = this.inner.createOutputStream(scope);
    const open = this.open;
    open.add(stream);
    return {
      get position() {
        return stream.position;
      },
      write: (chunk) => stream.write(chunk),
      closeAndGetHandle: async () => {
        try {
          return await stream.closeAndGetHandle();
        } finally {
          open.delete(stream);
        }
      },
      discard: async () => {
        open.delete(stream);
        await stream.discard();
      },
    };
  }

  uploadFile(localPath: string, scope: StateScope, name?: string, opts?: UploadFileOptions): Promise<FileStreamHandle> {
    this.checkLive();
    return this.inner.uploadFile(localPath, scope, name, opts);
  }

  discardFiles(files: readonly FileStreamHandle[]): Promise<void> {
    return this.inner.discardFiles(files);
  }

  /** Discards every open stream (aborting blocked writes, deleting what they wrote). */
  async discardAll(): Promise<void> {
    this.wasDiscarded = true;
    const open = [...this.open];
    this.open.clear();
    await Promise.allSettled(open.map((s) => s.discard()));
  }

  private checkLive(): void {
    if (this.wasDiscarded)
      throw new SnapshotError('SNAPSHOT_CANCELLED', 'the snapshot was cancelled: its streams were discarded.');
  }
}
