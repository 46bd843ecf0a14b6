import type { CheckpointStreamFactory, StateOutputStream, StateScope, UploadFileOptions } from '../backend/contract.js';
import type { FileStreamHandle, StreamHandle } from '../backend/handles.js';
import { resolveHandlePath } from './streams.js';

/** What the coordinator learns from the streams it hands to one checkpoint. */
export interface StreamRecorder {
  /** A file was written through the factory (store-relative name), known once its stream is closed. */
  written(key: string): void;
  /** The backend asks to delete files it wrote; the coordinator decides which may go. */
  discard(files: readonly FileStreamHandle[]): Promise<void>;
}

/**
 * The CheckpointStreamFactory a pending checkpoint hands out: the storage's factory, plus a record
 * of every file written through it. That record is how the coordinator knows which files a
 * checkpoint wrote itself (it may delete them when the checkpoint fails) as opposed to files it
 * merely references (which belong to other checkpoints). Deletions a backend asks for go through
 * the coordinator too, so a backend cannot delete a file a completed checkpoint references.
 */
export class RecordingStreamFactory implements CheckpointStreamFactory {
  constructor(
    private readonly inner: CheckpointStreamFactory,
    /** The directory handle paths are relative to (the checkpoint's pointer). */
    private readonly baseDir: string,
    private readonly recorder: StreamRecorder,
  ) {}

  createOutputStream(scope: StateScope): StateOutputStream {
    return new RecordingOutputStream(this.inner.createOutputStream(scope), (handle) => this.record(handle));
  }

  async uploadFile(
    localPath: string,
    scope: StateScope,
    name?: string,
    opts?: UploadFileOptions,
  ): Promise<FileStreamHandle> {
    const handle = await this.inner.uploadFile(localPath, scope, name, opts);
    this.record(handle);
    return handle;
  }

  discardFiles(files: readonly FileStreamHandle[]): Promise<void> {
    return this.recorder.discard(files);
  }

  private record(handle: StreamHandle | null): void {
    if (handle?.type === 'file') this.recorder.written(resolveHandlePath(this.baseDir, handle.path));
  }
}

class RecordingOutputStream implements StateOutputStream {
  constructor(
    private readonly inner: StateOutputStream,
    private readonly onClosed: (handle: StreamHandle | null) => void,
  ) {}

  get position(): number {
    return this.inner.position;
  }

  write(chunk: Uint8Array): Promise<void> {
    return this.inner.write(chunk);
  }

  async closeAndGetHandle(): Promise<StreamHandle | null> {
    const handle = await this.inner.closeAndGetHandle();
    this.onClosed(handle);
    return handle;
  }

  discard(): Promise<void> {
    return this.inner.discard();
  }
}
