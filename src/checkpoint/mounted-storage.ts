import type { CheckpointStreamFactory } from '../backend/contract.js';
import type { FileStreamHandle } from '../backend/handles.js';
import { StorageError, StreamStateError } from '../errors.js';
import type { BlobInfo, BlobStore, DownloadOptions } from '../storage/blob-store.js';
import { BlobCheckpointStorage } from './checkpoint-storage.js';
import { ForwardingCheckpointStorage } from './forwarding-storage.js';
import type { CheckpointMetadata } from './metadata.js';
import type { ExternalLocation } from './savepoint-location.js';
import type { CheckpointStorage, ResolvedSnapshot } from './storage.js';
import { BlobCheckpointStreamFactory, BlobStateFileReader } from './streams.js';

/**
 * The job's checkpoint storage plus directories outside it, "mounted" under reserved top-level
 * names (`~ext-<n>`, which no job id or savepoint name can be) so that everything the coordinator
 * does with store-relative names — recording uploads, resolving handle paths with the one
 * confinement rule (handle-paths.ts), deleting what an abort leaves — works unchanged for a
 * savepoint written to another directory or bucket and for a snapshot restored from one.
 *
 * Two kinds of mount:
 * - `savepoint`: a savepoint target. Nothing is written before its check (new or empty directory)
 *   has passed; if it failed, nothing is ever written or deleted there. Only names inside the
 *   savepoint's directory are reachable.
 * - `restored`: a snapshot restored from outside the storage, always in no-claim mode. Read-only:
 *   writes fail, deletions are dropped (and reported), whatever part of the coordinator asks.
 */

export const MOUNT_PREFIX = '~ext-';

export type MountKind = 'savepoint' | 'restored';

interface Mount {
  readonly name: string;
  readonly kind: MountKind;
  readonly location: ExternalLocation;
  /** Savepoint mounts: settles when the target check is done; writes wait for it. */
  readonly ready: Promise<void>;
  /** Set when the target check failed: the mount is inert from then on. */
  failure: unknown;
}

export interface MountedStorageOptions {
  /** Deletions refused because they name files of a restored (no-claim) snapshot or of a failed savepoint target. */
  readonly onRefusedDelete?: (err: StreamStateError) => void;
}

function mountNameOf(name: string): string | null {
  if (!name.startsWith(MOUNT_PREFIX)) return null;
  const slash = name.indexOf('/');
  return slash < 0 ? name : name.slice(0, slash);
}

/** A BlobStore that routes `~ext-<n>/…` names to the mounted stores and everything else to the job's store. */
class MountingBlobStore implements BlobStore {
  readonly dataFileName?: (name: string) => string;

  constructor(
    private readonly inner: BlobStore,
    private readonly mounts: ReadonlyMap<string, Mount>,
    private readonly refused: (err: StreamStateError) => void,
  ) {
    // Entropy injection applies to the job's own checkpoint files only.
    if (inner.dataFileName !== undefined)
      this.dataFileName = (name) => (mountNameOf(name) === null ? inner.dataFileName!(name) : name);
  }

  get location(): string {
    return this.inner.location;
  }

  /** The mount a name lies in and its name there; null for the job's own store. */
  private route(name: string): { mount: Mount; name: string } | null {
    const m = mountNameOf(name);
    if (m === null) return null;
    const mount = this.mounts.get(m);
    if (mount === undefined || name.length <= m.length + 1) {
      throw new StorageError(
        'NOT_FOUND',
        `${name}: no such external location is open in this coordinator (it was closed, or the name was made up).`,
      );
    }
    const rest = name.slice(m.length + 1);
    if (mount.kind === 'savepoint' && !(rest === mount.location.dir || rest.startsWith(`${mount.location.dir}/`))) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `${name} lies outside savepoint target ${mount.location.display}; a savepoint writes only inside its own directory.`,
      );
    }
    return { mount, name: rest };
  }

  private async writable(mount: Mount, name: string): Promise<void> {
    if (mount.kind === 'restored') {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `refusing to write ${name} into ${mount.location.display}: it is a snapshot restored in no-claim mode, which streamstate never changes.`,
      );
    }
    await mount.ready; // rejects with the target's error: nothing is written into a target that failed its check
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    const r = this.route(name);
    if (r === null) return this.inner.put(name, data);
    await this.writable(r.mount, r.name);
    return r.mount.location.store.put(r.name, data);
  }

  async putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    const r = this.route(name);
    if (r === null) return this.inner.putStream(name, data);
    await this.writable(r.mount, r.name);
    return r.mount.location.store.putStream(r.name, data);
  }

  async putAtomic(name: string, data: Uint8Array, opts?: { exclusive?: boolean }): Promise<void> {
    const r = this.route(name);
    if (r === null) return this.inner.putAtomic(name, data, opts);
    await this.writable(r.mount, r.name);
    return r.mount.location.store.putAtomic(r.name, data, opts);
  }

  get(name: string): Promise<Buffer> {
    const r = this.route(name);
    return r === null ? this.inner.get(name) : r.mount.location.store.get(r.name);
  }

  getRange(name: string, offset: number, length: number): Promise<Buffer> {
    const r = this.route(name);
    return r === null
      ? this.inner.getRange(name, offset, length)
      : r.mount.location.store.getRange(r.name, offset, length);
  }

  download(name: string, localPath: string, opts?: DownloadOptions): Promise<void> {
    const r = this.route(name);
    return r === null
      ? this.inner.download(name, localPath, opts)
      : r.mount.location.store.download(r.name, localPath, opts);
  }

  async stat(name: string): Promise<BlobInfo | null> {
    const r = this.route(name);
    if (r === null) return this.inner.stat(name);
    const info = await r.mount.location.store.stat(r.name);
    return info === null ? null : { ...info, name };
  }

  async list(prefix: string): Promise<BlobInfo[]> {
    const m = mountNameOf(prefix);
    if (m === null) return this.inner.list(prefix);
    const r = this.route(prefix);
    if (r === null) return [];
    const blobs = await r.mount.location.store.list(r.name);
    return blobs.map((b) => ({ ...b, name: `${r.mount.name}/${b.name}` }));
  }

  async delete(names: readonly string[]): Promise<void> {
    const own: string[] = [];
    const byMount = new Map<Mount, string[]>();
    for (const name of names) {
      const r = this.route(name);
      if (r === null) own.push(name);
      else byMount.set(r.mount, [...(byMount.get(r.mount) ?? []), r.name]);
    }
    for (const [mount, rest] of byMount) {
      if (mount.kind === 'savepoint') await mount.ready.catch(() => undefined);
      if (mount.kind === 'restored' || mount.failure !== undefined) {
        // Never someone else's files: a no-claim snapshot, or what was in a target before us.
        this.refused(
          new StreamStateError(
            'INVALID_ARGUMENT',
            `refused to delete ${rest.length} file(s) in ${mount.location.display} (e.g. ${rest[0]}): ` +
              (mount.kind === 'restored'
                ? 'they belong to a snapshot restored in no-claim mode.'
                : 'the savepoint target held them before the savepoint.'),
          ),
        );
        continue;
      }
      await mount.location.store.delete(rest);
    }
    if (own.length > 0) await this.inner.delete(own);
  }

  close(): Promise<void> {
    return this.inner.close?.() ?? Promise.resolve();
  }
}

/**
 * The checkpoint storage a coordinator works through: `inner` for the job's own checkpoints and
 * in-storage savepoints, the mounts for everything outside it (see the top of this file).
 */
export class MountedCheckpointStorage extends ForwardingCheckpointStorage {
  readonly store: BlobStore;
  private readonly mounts = new Map<string, Mount>();
  /** The same layout rules (placement check, exclusive _metadata) applied to mounted names. */
  private readonly viaMounts: BlobCheckpointStorage;
  private counter = 0;

  constructor(inner: CheckpointStorage, opts: MountedStorageOptions = {}) {
    super(inner);
    this.store = new MountingBlobStore(inner.store, this.mounts, (err) => opts.onRefusedDelete?.(err));
    this.viaMounts = new BlobCheckpointStorage(this.store, { inlineThreshold: inner.inlineThreshold });
  }

  /**
   * Mounts `location`: a savepoint target (writes wait for `check`; if it fails the mount is
   * inert) or a restored snapshot (read-only). Returns the mounted, store-relative name of its directory.
   */
  mount(kind: MountKind, location: ExternalLocation, check: Promise<void> = Promise.resolve()): string {
    const name = `${MOUNT_PREFIX}${++this.counter}`;
    const mount: Mount = { name, kind, location, ready: check, failure: undefined };
    check.catch((err: unknown) => {
      mount.failure = err ?? new Error('savepoint target check failed');
    });
    this.mounts.set(name, mount);
    return `${name}/${location.dir}`;
  }

  isMounted(pointer: string): boolean {
    return mountNameOf(pointer) !== null;
  }

  /** What the user sees for a pointer: the absolute path or URL of a mounted directory; other pointers unchanged. */
  userPointer(pointer: string): string {
    const m = mountNameOf(pointer);
    const mount = m === null ? undefined : this.mounts.get(m);
    if (mount === undefined) return pointer;
    const rest = pointer.slice(mount.name.length + 1);
    const extra = rest === mount.location.dir ? '' : rest.slice(mount.location.dir.length);
    return `${mount.location.display}${extra}`;
  }

  /** The error a savepoint target's check failed with, if it did (settles first). */
  async targetFailure(pointer: string): Promise<unknown> {
    const m = mountNameOf(pointer);
    const mount = m === null ? undefined : this.mounts.get(m);
    if (mount === undefined) return undefined;
    await mount.ready.catch(() => undefined);
    return mount.failure;
  }

  /** The streams of a savepoint in a mounted target: every file inside its directory, relative paths, no entropy. */
  savepointStreams(pointer: string): CheckpointStreamFactory {
    return new BlobCheckpointStreamFactory({
      store: this.store,
      baseDir: pointer,
      sharedDir: pointer,
      inlineThreshold: this.inner.inlineThreshold,
    });
  }

  /** A restored snapshot read through its mount: handle paths stay confined to `pointer`'s snapshot folders. */
  mountedSnapshot(pointer: string, metadata: CheckpointMetadata): ResolvedSnapshot {
    return { pointer, metadata, files: new BlobStateFileReader(this.store, pointer) };
  }

  override writeMetadata(pointer: string, metadata: CheckpointMetadata): Promise<void> {
    return this.isMounted(pointer)
      ? this.viaMounts.writeMetadata(pointer, metadata)
      : this.inner.writeMetadata(pointer, metadata);
  }

  override resolve(pointer: string): Promise<ResolvedSnapshot> {
    return this.isMounted(pointer) ? this.viaMounts.resolve(pointer) : this.inner.resolve(pointer);
  }

  override deleteFiles(pointer: string, files: readonly FileStreamHandle[]): Promise<void> {
    return this.isMounted(pointer)
      ? this.viaMounts.deleteFiles(pointer, files)
      : this.inner.deleteFiles(pointer, files);
  }
}
