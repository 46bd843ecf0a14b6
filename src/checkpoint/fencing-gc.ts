import type { BlobInfo } from '../storage/blob-store.js';
import { isLeaseName } from './lease.js';

/** Default grace period: unreferenced files younger than this may belong to another live instance. */
export const DEFAULT_FENCING_MIN_AGE_MS = 10 * 60_000;

export interface SpareContext {
  readonly jobId: string;
  /** The first checkpoint id this instance handed out: chk-<n> with n >= it can never be completed by an older instance. */
  readonly firstOwnId: number;
  /** Now, on the clock of the store's modification times (ms since epoch). */
  readonly now: number;
  /** Files younger than this are spared while an older instance may be alive. */
  readonly minAgeMs: number;
  /** Whether an older instance of the job may still be alive (its lease was not released). */
  readonly othersMayBeAlive: boolean;
}

const CHK = /^chk-(0|[1-9][0-9]*)$/;

/**
 * Of the files garbage collection wants to delete (`doomed`, store-relative names), those it may
 * delete now without destroying a checkpoint another (older, possibly still live) instance of the
 * job may yet complete. `listing` is the job directory's listing with modification times.
 *
 * - Lease markers: never.
 * - No older instance may be alive (every older lease released, or none exists): all of them.
 * - `chk-<n>/` files with n >= firstOwnId: all (an older instance that completes chk-<n> must have
 *   passed its lease check before this one started, with its data files already written, and this
 *   instance's ids start above every chk-<n> it then listed).
 * - Other `chk-<n>/` files: the whole directory or nothing, once its newest file is `minAgeMs` old.
 * - Anything else (shared/): each file once it is `minAgeMs` old. Unknown ages count as young.
 */
export function deletableNow(doomed: readonly string[], listing: readonly BlobInfo[], ctx: SpareContext): string[] {
  const candidates = doomed.filter((name) => !isLeaseName(ctx.jobId, name));
  if (!ctx.othersMayBeAlive) return candidates;
  const modified = new Map<string, number | undefined>();
  const newestInDir = new Map<number, number>();
  for (const b of listing) {
    modified.set(b.name, b.modified);
    const id = checkpointDirOf(ctx.jobId, b.name);
    if (id !== undefined)
      newestInDir.set(
        id,
        Math.max(newestInDir.get(id) ?? Number.NEGATIVE_INFINITY, b.modified ?? Number.POSITIVE_INFINITY),
      );
  }
  const oldEnough = (t: number | undefined): boolean =>
    t !== undefined && Number.isFinite(t) && ctx.now - t >= ctx.minAgeMs;
  return candidates.filter((name) => {
    const id = checkpointDirOf(ctx.jobId, name);
    if (id !== undefined) return id >= ctx.firstOwnId || oldEnough(newestInDir.get(id) ?? modified.get(name));
    return oldEnough(modified.get(name));
  });
}

function checkpointDirOf(jobId: string, name: string): number | undefined {
  const prefix = `${jobId}/`;
  if (!name.startsWith(prefix)) return undefined;
  const rest = name.slice(prefix.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return undefined;
  const m = CHK.exec(rest.slice(0, slash));
  return m === null ? undefined : Number(m[1]);
}
