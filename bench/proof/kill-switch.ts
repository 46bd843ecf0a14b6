import { appendFileSync } from 'node:fs';
import fsp from 'node:fs/promises';
import { syncBuiltinESMExports } from 'node:module';
import { basename } from 'node:path';
import type { BlobStore } from '../../src/storage/blob-store.js';
import { ForwardingBlobStore } from '../../src/storage/forwarding-blob-store.js';

/**
 * Where a crash-suite child kills itself with SIGKILL. Counts are per child process, from 1.
 *
 * - data-upload:            during the nth data-file upload (putStream), after its first chunk went to the store
 * - metadata-temp-written:  inside the nth _metadata putAtomic: temp file written and fsynced, before it is linked in
 * - metadata-linked:        inside the nth _metadata putAtomic: linked in, before the temp file is unlinked and the dir fsynced
 * - metadata-done:          right after the nth _metadata putAtomic returned (checkpoint durable, nobody notified yet)
 * - cleanup:                in the nth delete of one or more names (retention, aborts, gc): half of them deleted, then killed
 * - commit:                 right after the nth transaction became durable in the external system
 */
export const TARGETED_KILL_KINDS = [
  'data-upload',
  'metadata-temp-written',
  'metadata-linked',
  'metadata-done',
  'cleanup',
  'commit',
] as const;
export type TargetedKillKind = (typeof TARGETED_KILL_KINDS)[number];
/** `random`: the parent kills the child at a random moment (the child knows nothing). */
export type KillKind = TargetedKillKind | 'random';

export interface KillPlan {
  readonly kind: TargetedKillKind;
  readonly nth: number;
}

/** How often each kill point was passed in one child (a clean run tells the parent the ranges to aim at). */
export interface KillPointCounts {
  dataUploads: number;
  metadataWrites: number;
  cleanups: number;
  commits: number;
}

export function emptyKillPointCounts(): KillPointCounts {
  return { dataUploads: 0, metadataWrites: 0, cleanups: 0, commits: 0 };
}

/** The count that a kill of `kind` is numbered by. */
export function countFor(kind: TargetedKillKind, counts: KillPointCounts): number {
  switch (kind) {
    case 'data-upload':
      return counts.dataUploads;
    case 'metadata-temp-written':
    case 'metadata-linked':
    case 'metadata-done':
      return counts.metadataWrites;
    case 'cleanup':
      return counts.cleanups;
    case 'commit':
      return counts.commits;
  }
}

/** Dies now, the way a power cut or OOM killer ends a process: no finally blocks, no flushes. */
export function killSelf(): never {
  process.kill(process.pid, 'SIGKILL');
  // SIGKILL to oneself is delivered before the syscall returns; block in case a platform is slower.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10_000);
  throw new Error('SIGKILL did not end the process');
}

/**
 * Counts the kill points a child passes and fires its plan. `install()` patches fs.promises.link
 * (LocalBlobStore's exclusive putAtomic links the fsynced temp file to `_metadata`), which is the
 * only way to stop inside putAtomic; the BlobStore wrapper (`wrap`) covers the rest.
 */
export class KillSwitch {
  readonly counts = emptyKillPointCounts();

  /** `tracePath`: append every write and delete to this file (debugging a failure; STREAMSTATE_CRASH_TRACE in the child). */
  constructor(
    readonly plan: KillPlan | null,
    private readonly tracePath: string | null = null,
    private readonly traceTag = '',
  ) {}

  trace(line: string): void {
    if (this.tracePath !== null) appendFileSync(this.tracePath, `${this.traceTag} ${line}\n`);
  }

  private fires(kind: TargetedKillKind, count: number): boolean {
    return this.plan !== null && this.plan.kind === kind && this.plan.nth === count;
  }

  install(): void {
    const original = fsp.link;
    const patched: typeof fsp.link = async (existingPath, newPath) => {
      if (basename(String(newPath)) !== '_metadata') return original(existingPath, newPath);
      const n = ++this.counts.metadataWrites;
      if (this.fires('metadata-temp-written', n)) killSelf();
      await original(existingPath, newPath);
      if (this.fires('metadata-linked', n)) killSelf();
    };
    fsp.link = patched;
    syncBuiltinESMExports();
  }

  wrap(inner: BlobStore): BlobStore {
    return new KillSwitchBlobStore(inner, this);
  }

  afterMetadataWrite(name: string): void {
    if (basename(name) === '_metadata' && this.fires('metadata-done', this.counts.metadataWrites)) killSelf();
  }

  nextUpload(): number {
    return ++this.counts.dataUploads;
  }

  uploadChunk(upload: number, chunkIndex: number): void {
    if (chunkIndex >= 1 && this.fires('data-upload', upload)) killSelf();
  }

  nextCleanup(): boolean {
    return this.fires('cleanup', ++this.counts.cleanups);
  }

  committed(): void {
    if (this.fires('commit', ++this.counts.commits)) killSelf();
  }
}

/** A BlobStore that passes everything through and lets the kill switch fire at its kill points. */
class KillSwitchBlobStore extends ForwardingBlobStore {
  constructor(
    inner: BlobStore,
    private readonly kill: KillSwitch,
  ) {
    super(inner);
  }

  override putStream(name: string, data: AsyncIterable<Uint8Array>): Promise<number> {
    this.kill.trace(`put ${name}`);
    const upload = this.kill.nextUpload();
    const kill = this.kill;
    async function* watched(): AsyncGenerator<Uint8Array> {
      let i = 0;
      for await (const chunk of data) {
        // The previous chunk is in the file (the pipeline asked for the next one): kill mid-file.
        kill.uploadChunk(upload, i++);
        yield chunk;
      }
      kill.uploadChunk(upload, i);
    }
    return this.inner.putStream(name, watched());
  }

  override async putAtomic(name: string, data: Uint8Array, opts?: { exclusive?: boolean }): Promise<void> {
    await this.inner.putAtomic(name, data, opts);
    this.kill.trace(`atomic ${name}`);
    this.kill.afterMetadataWrite(name);
  }

  override async delete(names: readonly string[]): Promise<void> {
    if (names.length > 0)
      this.kill.trace(
        `delete ${names.join(' ')} | ${new Error().stack
          ?.split('\n')
          .slice(2, 6)
          .map((l) => l.trim())
          .join(' < ')}`,
      );
    if (names.length === 0 || !this.kill.nextCleanup()) return this.inner.delete(names);
    const half = Math.max(1, names.length >> 1);
    await this.inner.delete(names.slice(0, half));
    killSelf();
  }
}
