import type { CheckpointStreamFactory } from '../backend/contract.js';
import { StreamStateError } from '../errors.js';
import type { CompletedCheckpointInfo } from './metadata.js';
import { MountedCheckpointStorage } from './mounted-storage.js';
import { locateRestorePointer } from './restore-pointer.js';
import {
  ExternalStores,
  checkNotInJobDirectory,
  checkSavepointTarget,
  isOutsideStorage,
  type SavepointLocationOptions,
} from './savepoint-location.js';
import type { RestoreMode } from './shared-registry.js';
import type { CheckpointStorage, ResolvedSnapshot } from './storage.js';

/** Where triggerSavepoint() writes. */
export interface SavepointTriggerOptions {
  readonly format?: 'canonical' | 'native';
  /**
   * The savepoint's own directory, anywhere: a local path (relative ones against the cwd) or an
   * s3:// URL. It must not exist or be empty (SAVEPOINT_TARGET_NOT_EMPTY otherwise, nothing written).
   * Default: a new `savepoint-<job6>-<hex>` directory in the default savepoint location.
   */
  readonly target?: string;
  /**
   * Deprecated (use `target` or the coordinator's `savepoints.dir`): a directory inside the
   * checkpoint storage (store-relative) under which `savepoint-<job6>-<hex>/` is created.
   */
  readonly targetDir?: string;
}

/**
 * Savepoints and restores outside the job's checkpoint storage, for the coordinator: it works
 * through `storage` (the job's storage with the outside directories mounted, mounted-storage.ts)
 * and asks this object where a savepoint goes and how to open a foreign pointer.
 */
export class ExternalSnapshots {
  readonly storage: MountedCheckpointStorage;
  private readonly stores: ExternalStores;
  private readonly opened: { close(): Promise<void> }[] = [];

  constructor(
    inner: CheckpointStorage,
    private readonly options: SavepointLocationOptions & {
      readonly onRefusedDelete?: (err: StreamStateError) => void;
    } = {},
  ) {
    this.storage = new MountedCheckpointStorage(inner, { onRefusedDelete: options.onRefusedDelete });
    this.stores = new ExternalStores(options);
    if (options.dir !== undefined && (typeof options.dir !== 'string' || options.dir.trim() === '')) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        'savepoints.dir must be a non-empty local path or s3:// URL (or left out: savepoints then go into the checkpoint storage).',
      );
    }
  }

  /**
   * The directory and streams of a new savepoint: `target` (checked to be new or empty before
   * anything is written), else a new directory under the default savepoint location, else (no
   * default configured, or the deprecated `targetDir`) inside the checkpoint storage as before.
   */
  savepointLocation(
    jobId: string,
    opts: SavepointTriggerOptions,
  ): { pointer: string; streams: CheckpointStreamFactory } {
    if (opts.target !== undefined && opts.targetDir !== undefined) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        'pass either target (the savepoint directory, anywhere) or the deprecated targetDir (inside the checkpoint storage), not both.',
      );
    }
    if (opts.target === undefined && (opts.targetDir !== undefined || this.options.dir === undefined)) {
      return this.storage.createSavepointLocation(jobId, opts.targetDir);
    }
    const location =
      opts.target !== undefined
        ? this.stores.locate(opts.target, 'savepoint target')
        : this.stores.newSavepointUnder(this.options.dir!, jobId);
    if (this.storage.location.startsWith('/')) checkNotInJobDirectory(location, this.storage.location, jobId);
    const pointer = this.storage.mount('savepoint', location, checkSavepointTarget(location));
    return { pointer, streams: this.storage.savepointStreams(pointer) };
  }

  /** Whether a restore pointer lies outside the checkpoint storage (an absolute path or URL not under it). */
  isOutside(pointer: string | undefined): pointer is string {
    return pointer !== undefined && isOutsideStorage(pointer, this.storage.location);
  }

  /** Opens a pointer outside the storage, read-only (no-claim), and resolves it through its mount. */
  async resolveOutside(pointer: string, mode: RestoreMode): Promise<ResolvedSnapshot> {
    const located = await locateRestorePointer(pointer, mode, { cwd: this.options.cwd, s3: this.options.s3 });
    this.opened.push(located);
    const mounted = this.storage.mount('restored', {
      store: located.storage.store,
      dir: located.pointer,
      display: located.display,
    });
    return this.storage.mountedSnapshot(mounted, located.snapshot.metadata);
  }

  /** A completed checkpoint or savepoint as the user sees it: a savepoint outside the storage by its absolute path or URL. */
  describe(info: CompletedCheckpointInfo): CompletedCheckpointInfo {
    const pointer = this.storage.userPointer(info.pointer);
    return pointer === info.pointer ? info : { ...info, pointer };
  }

  /**
   * A savepoint's completion as its caller sees it: when its target failed the check, the
   * target's error (SAVEPOINT_TARGET_NOT_EMPTY) rather than however the failure surfaced
   * (a failed write, an abort by the runtime).
   */
  completion(pointer: string, completion: Promise<CompletedCheckpointInfo>): Promise<CompletedCheckpointInfo> {
    if (!this.storage.isMounted(pointer)) return completion;
    const mapped = completion.catch(async (err: unknown) => {
      throw (await this.storage.targetFailure(pointer)) ?? err;
    });
    mapped.catch(() => undefined); // nobody has to listen
    return mapped;
  }

  /** Releases the stores of outside locations (S3 clients). */
  async close(): Promise<void> {
    const opened = this.opened.splice(0);
    await Promise.allSettled([...opened.map((o) => o.close()), this.stores.close()]);
  }
}
