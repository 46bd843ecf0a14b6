import type { CheckpointStreamFactory, StateOutputStream, StateScope } from '../../backend/contract.js';
import type { FileStreamHandle, StreamHandle } from '../../backend/handles.js';

/** A latch tests open to let blocked snapshot I/O continue. */
export class Gate {
  private release!: () => void;
  private opened = false;
  readonly whenOpen: Promise<void> = new Promise<void>((resolve) => {
    this.release = resolve;
  });

  get isOpen(): boolean {
    return this.opened;
  }

  open(): void {
    this.opened = true;
    this.release();
  }
}

/**
 * Wraps a stream factory so that snapshot I/O stalls until `gate` opens, the way a slow upload
 * would. Each write is forwarded first and then held (so a partial file really exists while the
 * snapshot is blocked); closeAndGetHandle is held before it is forwarded. `reached` resolves the
 * first time a write or close hits the closed gate.
 */
export class GatedStreamFactory implements CheckpointStreamFactory {
  readonly gate = new Gate();
  private markReached!: () => void;
  readonly reached: Promise<void> = new Promise<void>((resolve) => {
    this.markReached = resolve;
  });
  /** Streams created through this factory (to check they were discarded or closed). */
  readonly streams: GatedOutputStream[] = [];

  constructor(private readonly inner: CheckpointStreamFactory) {}

  /** Called by the gated streams before they wait. */
  hold(): Promise<void> {
    if (this.gate.isOpen) return Promise.resolve();
    this.markReached();
    return this.gate.whenOpen;
  }

  createOutputStream(scope: StateScope): StateOutputStream {
    const s = new GatedOutputStream(this.inner.createOutputStream(scope), this);
    this.streams.push(s);
    return s;
  }

  async uploadFile(localPath: string, scope: StateScope, name?: string): Promise<FileStreamHandle> {
    await this.hold();
    return this.inner.uploadFile(localPath, scope, name);
  }

  discardFiles(files: readonly FileStreamHandle[]): Promise<void> {
    return this.inner.discardFiles(files);
  }
}

/**
 * Like a real upload, an operation blocked on this stream fails as soon as the stream is
 * discarded underneath it (that is how close() can cancel a snapshot stuck in I/O).
 */
export class GatedOutputStream implements StateOutputStream {
  discarded = false;
  closed = false;
  private abort!: (err: Error) => void;
  private readonly aborted = new Promise<never>((_, reject) => {
    this.abort = reject;
  });

  constructor(
    private readonly inner: StateOutputStream,
    private readonly factory: GatedStreamFactory,
  ) {
    this.aborted.catch(() => undefined);
  }

  get position(): number {
    return this.inner.position;
  }

  private wait(): Promise<void> {
    return Promise.race([this.factory.hold(), this.aborted]);
  }

  async write(chunk: Uint8Array): Promise<void> {
    if (this.discarded) throw new Error('write to a discarded stream');
    await this.inner.write(chunk);
    await this.wait();
  }

  async closeAndGetHandle(): Promise<StreamHandle | null> {
    await this.wait();
    this.closed = true;
    return this.inner.closeAndGetHandle();
  }

  discard(): Promise<void> {
    this.discarded = true;
    this.abort(new Error('the stream was discarded while its write was blocked'));
    return this.inner.discard();
  }
}
