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
import type { SectionCursor } from './section-cursor.js';
import { TimeSlicer, type SnapshotSlicing } from './time-slicer.js';

/** One state (or timer queue) in a snapshot: writes its section of key group `i`. */
export interface SnapshotPart {
  readonly stateId: number;
  readonly kind: EntryKind;
  /** Fills `section` with the entries of key group index `i` (or returns raw sections to copy). */
  write(i: number, section: SectionWriter): readonly RawSection[] | void;
  /**
   * When present, key group `i` is written through this cursor in time slices instead of by
   * `write` (`refs` is scratch space the cursor may fill; it is reused, capacity kept, for the next part).
   */
  open?(i: number, refs: unknown[]): SectionCursor;
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

export function cancelledError(checkpointId: number): SnapshotError {
  return new SnapshotError(
    'SNAPSHOT_CANCELLED',
    `snapshot ${checkpointId} was cancelled (the keyed backend was closed, or the checkpoint aborted); its partial files were deleted.`,
  );
}

/**
 * The asynchronous part: writes the heap-v1 key-groups stream one key group at a time, in time
 * slices (TimeSlicer: at most `maxSliceMs` of work between turns of the event loop, and about
 * `cpuShare` of the thread while records are being processed). A key group's entries are walked
 * and written in bounded steps (snapshot-entries.ts). It stays pending (its writers keep recording
 * undo and copying containers before mutating them) until all of it is written, so the values
 * the walk referenced stay as the snapshot saw them while the writer yields; then it is marked done. `isCancelled` is checked after every await.
 * The bytes do not depend on where the slices fall.
 */
export async function writeHeapSnapshot(
  checkpointId: number,
  plan: SnapshotPlan,
  stream: StateOutputStream,
  isCancelled: () => boolean,
  chunkBytes?: number,
  slicing?: SnapshotSlicing,
): Promise<KeyGroupsStateHandle | null> {
  const writer = new KeyGroupsStreamWriter(stream, plan.header, {
    canonical: plan.canonical,
    ...(chunkBytes === undefined ? {} : { flushBytes: chunkBytes }),
  });
  const section = new SectionWriter();
  const sorted = new SectionWriter();
  const refs: unknown[] = [];
  try {
    // Start on a later macrotask: snapshot() must return (ending the synchronous pause) before any key group is written.
    await new Promise<void>((resolve) => setImmediate(resolve));
    const slicer = new TimeSlicer(slicing);
    const due = (): boolean => slicer.due();
    for (let i = 0; i < plan.rangeSize; i++) {
      if (isCancelled()) throw cancelledError(checkpointId);
      writer.beginKeyGroup(plan.rangeStart + i);
      for (const part of plan.parts) {
        if (part.open !== undefined) {
          const cursor = part.open(i, refs);
          while (!cursor.writeSome(section, due)) {
            await slicer.yield();
            if (isCancelled()) throw cancelledError(checkpointId);
          }
        } else {
          const raw = part.write(i, section);
          if (raw !== undefined) {
            // Restored sections carried over unchanged (several handles may contribute to one key group).
            for (const s of raw) {
              section.out.raw(s.bytes);
              section.count += s.entryCount;
            }
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
      // Closing the block (checksum, copy) is own work; a flush that waits for the store lets others run.
      await writer.endKeyGroup(slicer);
      if (slicer.due()) await slicer.yield();
    }
    if (isCancelled()) throw cancelledError(checkpointId);
    const handle = await writer.finish();
    if (isCancelled()) throw cancelledError(checkpointId);
    return handle;
  } catch (err) {
    await stream.discard().catch(() => undefined);
    if (err instanceof StreamStateError) throw err;
    throw new SnapshotError(
      'SNAPSHOT_FAILED',
      `snapshot ${checkpointId} failed while writing keyed state: ${(err as Error).message}`,
      { cause: err },
    );
  } finally {
    refs.length = 0;
    plan.run.release();
  }
}
