import { describeBlobStore } from 'streamstate/conformance';
import { type BlobInfo, type BlobStore, ForwardingBlobStore, MemoryBlobStore } from 'streamstate';

/**
 * A third-party storage medium, written only against the published entries (`streamstate`,
 * `streamstate/conformance`), proves itself with the published compliance suite in a few lines:
 * here a toy "replicated" store over two in-memory stores that copies what `put` writes and what
 * `delete` removes to a replica it never reads from.
 */
class ReplicatedStore extends ForwardingBlobStore {
  constructor(
    primary: BlobStore,
    private readonly replica: BlobStore,
  ) {
    super(primary);
  }
  override async put(name: string, data: Uint8Array): Promise<void> {
    await super.put(name, data);
    await this.replica.put(name, data);
  }
  override async delete(names: readonly string[]): Promise<void> {
    await super.delete(names);
    await this.replica.delete(names);
  }
  /** What the replica holds (for a check of this example, not part of BlobStore). */
  replicaList(prefix: string): Promise<BlobInfo[]> {
    return this.replica.list(prefix);
  }
}

describeBlobStore(
  'a third-party store (replicating, over the public API)',
  async () => {
    const primary = new MemoryBlobStore();
    const replica = new MemoryBlobStore();
    const store = new ReplicatedStore(primary, replica);
    return { store, cleanup: async () => (primary.destroy(), replica.destroy()) };
  },
  { putFile: false },
);
