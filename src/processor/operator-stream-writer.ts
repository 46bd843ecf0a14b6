import type { CheckpointStreamFactory } from '../backend/contract.js';
import type { OperatorStateHandle, OperatorStateMetaInfo } from '../backend/handles.js';
import { SnapshotError } from '../errors.js';
import { ByteWriter } from '../format/bytes.js';
import { OPERATOR_STREAM_MAGIC, OPERATOR_STREAM_VERSION } from '../operator/operator-stream.js';

/** One operator state's records for one subtask: list elements, or broadcast [key, value] pairs, as serialized bytes. */
export interface OperatorStateRecords {
  readonly meta: Omit<OperatorStateMetaInfo, 'offsets'>;
  readonly records: readonly (Uint8Array | readonly [Uint8Array, Uint8Array])[];
}

/**
 * Writes one subtask's operator-state stream (docs/FORMAT.md, "operator state stream": magic,
 * version, then `bytes(element)` or `bytes(key) bytes(value)` records) and returns its handle with
 * the offset of every record; null when no state has records.
 */
export async function writeOperatorStream(
  streams: CheckpointStreamFactory,
  states: readonly OperatorStateRecords[],
): Promise<OperatorStateHandle | null> {
  const withRecords = states.filter((s) => s.records.length > 0);
  if (withRecords.length === 0) return null;
  const w = new ByteWriter();
  w.raw(OPERATOR_STREAM_MAGIC).u8(OPERATOR_STREAM_VERSION);
  const metas: OperatorStateMetaInfo[] = [];
  for (const s of withRecords) {
    const offsets: number[] = [];
    for (const r of s.records) {
      offsets.push(w.length);
      if (r instanceof Uint8Array) w.bytes(r);
      else w.bytes(r[0]).bytes(r[1]);
    }
    metas.push({ ...s.meta, offsets });
  }
  const stream = streams.createOutputStream('exclusive');
  try {
    await stream.write(w.toBuffer());
    const handle = await stream.closeAndGetHandle();
    if (handle === null)
      throw new SnapshotError(
        'SNAPSHOT_FAILED',
        'the operator-state stream returned no handle although data was written',
      );
    return { type: 'operator', states: metas, stream: handle };
  } catch (err) {
    await stream.discard().catch(() => undefined);
    throw err;
  }
}
