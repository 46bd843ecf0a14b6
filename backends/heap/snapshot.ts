import type { StateOutputStream } from '../../src/backend/contract.js';
import type { KeyGroupsStateHandle } from '../../src/backend/handles.js';
import { SnapshotError, StreamStateError } from '../../src/errors.js';
import {
  KeyGroupsStreamWriter,
  SectionWriter,
  type EntryKind,
  type KeyGroupsStreamHeader,
  type RawSection,
  writeCanonicalEntries,
} from '../../src/format/key-groups-stream.js';
import type { SnapshotRun } from './cow.js';

/** One state (or timer queue) in a snapshot: writes its section of key group `i`. */
export interface SnapshotPart {
  readonly stateId: number;
  readonly kind: EntryKind;
  /** Fills `section` with the entries of key group index `i` (or returns raw sections to copy). */
  write(i: number, section: SectionWriter): readonly RawSection[] | void;
}

/** What the synchronous part of a snapshot captured. */
export interface SnapshotPlan {
  readonly run: SnapshotRun;
  readonly header: KeyGroupsStreamHeader;
  /** Sorted entries (layout canonical-v1). */
  readonly canonical: boolean;
  readonly rangeStart: number;
  readonly rangeSize: number;
  /** In state-id order. */
  readonly parts: readonly SnapshotPart[];
}

/** Hand the event loop back to other work at least this often (ms) while writing. */
const YIELD_EVERY_MS = 4;

export function cancelledError(checkpointId: number): SnapshotError {
  return new SnapshotError('SNAPSHOT_CANCELLED', `snapshot ${checkpointId} was cancelled because the keyed backend was closed; its partial files were deleted.`);
}

/**
 * The asynchronous part: writes the heap-v1 key-groups stream one key group at a time. Each key
 * group is serialized synchronously (live entries overlaid by the undo log, so no write can
 * interleave), then marked done so writers stop recording undo for it, then the event loop gets
 * a turn. `isCancelled` is checked after every await.
 */
export async function writeHeapSnapshot(
  checkpointId: number,
  plan: SnapshotPlan,
  stream: StateOutputStream,
  isCancelled: () => boolean,
  chunkBytes?: number,
): Promise<KeyGroupsStateHandle | null> {
  const writer = new KeyGroupsStreamWriter(stream, plan.header, { canonical: plan.canonical, ...(chunkBytes === undefined ? {} : { flushBytes: chunkBytes }) });
  const section = new SectionWriter();
  const sorted = new SectionWriter();
  try {
    // Start on a later macrotask: snapshot() must return (ending the synchronous pause) before any key group is written.
    await new Promise<void>((resolve) => setImmediate(resolve));
    let lastYield = performance.now();
    for (let i = 0; i < plan.rangeSize; i++) {
      if (isCancelled()) throw cancelledError(checkpointId);
      writer.beginKeyGroup(plan.rangeStart + i);
      for (const part of plan.parts) {
        const raw = part.write(i, section);
        if (raw !== undefined) {
          // Restored sections carried over unchanged (several handles may contribute to one key group).
          for (const s of raw) {
            section.out.raw(s.bytes);
            section.count += s.entryCount;
          }
        }
        if (plan.canonical && section.count > 0) {
          // Sort from the unsorted bytes into a second writer (both are reused across key groups).
          sorted.count += writeCanonicalEntries(part.kind, section.out.view(), section.count, sorted.out, false);
          section.reset();
          writer.addSection(part.stateId, sorted);
        } else writer.addSection(part.stateId, section);
      }
      plan.run.markDone(i);
      await writer.endKeyGroup();
      if (performance.now() - lastYield > YIELD_EVERY_MS) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        lastYield = performance.now();
      }
    }
    if (isCancelled()) throw cancelledError(checkpointId);
    const handle = await writer.finish();
    if (isCancelled()) throw cancelledError(checkpointId);
    return handle;
  } catch (err) {
    await stream.discard().catch(() => undefined);
    if (err instanceof StreamStateError) throw err;
    throw new SnapshotError('SNAPSHOT_FAILED', `snapshot ${checkpointId} failed while writing keyed state: ${(err as Error).message}`, { cause: err });
  } finally {
    plan.run.release();
  }
}
