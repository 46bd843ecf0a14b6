import { mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { CheckpointStreamFactory } from '../backend/contract.js';
import { BlobCheckpointStorage } from '../checkpoint/checkpoint-storage.js';
import type { CheckpointMetadata } from '../checkpoint/metadata.js';
import { BlobCheckpointStreamFactory } from '../checkpoint/streams.js';
import { StorageError } from '../errors.js';
import { convertTempNames, type TemporaryPaths } from '../savepoint/convert.js';
import { copySnapshot } from '../savepoint/copy-snapshot.js';
import { isS3Path, openSnapshotDestination, type S3ConnectionOptions } from '../savepoint/locate.js';
import { fsyncDir, LocalBlobStore } from '../storage/local-blob-store.js';

/**
 * A new savepoint directory being written (bootstrap and transforms). Nothing appears at the
 * destination until finish(): locally the savepoint is written into a hidden directory next to it
 * (named like convert's, so `streamstate gc` recognizes an interrupted one) and renamed into
 * place; an s3:// destination is written to a local temporary directory and copied up with
 * _metadata last. abort() removes everything written.
 */
export interface SavepointOutputOptions {
  /** Relative local paths resolve against this. Default process.cwd(). */
  readonly cwd?: string;
  readonly s3?: S3ConnectionOptions;
  /** Told each temporary directory before it is created and once it is gone (the CLI removes what is left on SIGINT/SIGTERM). */
  readonly temporaryPaths?: TemporaryPaths;
}

export class SavepointOutput {
  private done = false;

  private constructor(
    /** Writes the savepoint's files (all exclusive, all files: no inline streams). */
    readonly streams: CheckpointStreamFactory,
    private readonly store: LocalBlobStore,
    private readonly dir: string,
    private readonly publish: () => Promise<void>,
    private readonly cleanup: () => Promise<void>,
    /** The destination as given. */
    readonly display: string,
  ) {}

  /** Checks that `dst` does not exist (ALREADY_EXISTS) and that its parent does, before anything is written. */
  static async open(dst: string, opts: SavepointOutputOptions = {}): Promise<SavepointOutput> {
    if (isS3Path(dst)) return SavepointOutput.openS3(dst, opts.s3 ?? {}, opts.temporaryPaths);
    const target = resolve(opts.cwd ?? process.cwd(), dst.startsWith('file://') ? dst.slice('file://'.length) : dst);
    if (
      await stat(target).then(
        () => true,
        () => false,
      )
    ) {
      throw new StorageError(
        'ALREADY_EXISTS',
        `${dst} already exists; a new savepoint needs a new directory. Pick another destination or remove it.`,
      );
    }
    const parent = dirname(target);
    if (
      !(await stat(parent).then(
        (s) => s.isDirectory(),
        () => false,
      ))
    ) {
      throw new StorageError('NOT_FOUND', `the parent directory of ${dst} does not exist; create it first.`);
    }
    const { output } = convertTempNames(target);
    const temp = resolve(parent, output);
    opts.temporaryPaths?.add(temp);
    const store = new LocalBlobStore(parent);
    const publish = async (): Promise<void> => {
      try {
        await rename(resolve(parent, output), target);
      } catch (err) {
        throw new StorageError(
          'STORAGE_IO',
          `cannot move the new savepoint into place at ${dst}: ${(err as Error).message}. Nothing was written there.`,
          { cause: err },
        );
      }
      await fsyncDir(parent).catch((err: unknown) => {
        throw new StorageError(
          'STORAGE_IO',
          `the savepoint is at ${dst}, but syncing ${parent} failed (${(err as Error).message}); write it again to be sure it survives a power failure.`,
          { cause: err },
        );
      });
    };
    const cleanup = async (): Promise<void> => {
      await rm(temp, { recursive: true, force: true });
      opts.temporaryPaths?.delete(temp);
    };
    return new SavepointOutput(streamsFor(store, output), store, output, publish, cleanup, dst);
  }

  private static async openS3(
    dst: string,
    s3: S3ConnectionOptions,
    temporaryPaths: TemporaryPaths | undefined,
  ): Promise<SavepointOutput> {
    const target = openSnapshotDestination(dst, s3);
    try {
      if ((await target.store.list(`${target.dir}/`)).length > 0) {
        throw new StorageError(
          'ALREADY_EXISTS',
          `${dst} already holds objects; a new savepoint needs a new prefix. Pick another destination or remove it.`,
        );
      }
    } catch (err) {
      await target.close();
      throw err;
    }
    const scratch = await mkdtemp(join(tmpdir(), 'streamstate-savepoint-'));
    temporaryPaths?.add(scratch);
    const store = new LocalBlobStore(scratch);
    const publish = async (): Promise<void> => {
      await copySnapshot({ store, dir: 'savepoint' }, { store: target.store, dir: target.dir });
    };
    const cleanup = async (): Promise<void> => {
      await rm(scratch, { recursive: true, force: true });
      temporaryPaths?.delete(scratch);
      await target.close();
    };
    return new SavepointOutput(streamsFor(store, 'savepoint'), store, 'savepoint', publish, cleanup, dst);
  }

  /** Writes _metadata (last) and moves the savepoint into place. On failure nothing is left behind. */
  async finish(metadata: CheckpointMetadata): Promise<void> {
    try {
      await new BlobCheckpointStorage(this.store, { inlineThreshold: 0 }).writeMetadata(this.dir, metadata);
      await this.publish();
      this.done = true;
    } finally {
      await this.cleanup().catch(() => undefined);
    }
  }

  /** Removes whatever was written (idempotent; a no-op after finish). */
  async abort(): Promise<void> {
    if (!this.done) await this.cleanup().catch(() => undefined);
  }
}

function streamsFor(store: LocalBlobStore, dir: string): CheckpointStreamFactory {
  return new BlobCheckpointStreamFactory({ store, baseDir: dir, sharedDir: dir, inlineThreshold: 0 });
}

/** Runs `write` against a new savepoint at `dst`; finishes it with the metadata `write` returns, or removes everything on failure. */
export async function writeSavepoint(
  dst: string,
  opts: SavepointOutputOptions,
  write: (out: SavepointOutput) => Promise<CheckpointMetadata>,
): Promise<CheckpointMetadata> {
  const out = await SavepointOutput.open(dst, opts);
  try {
    const metadata = await write(out);
    await out.finish(metadata);
    return metadata;
  } catch (err) {
    await out.abort();
    throw err;
  }
}
