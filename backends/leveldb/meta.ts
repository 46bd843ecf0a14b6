import type { KeyedStateMetaInfo, KeyGroupRangeJson } from '../../src/backend/handles.js';
import { FormatError } from '../../src/errors.js';
import { ByteReader, ByteWriter } from '../../src/format/bytes.js';
import type { SerializerSnapshot } from '../../src/serializers/serializer.js';
import type { RawTimer } from './timer-queue.js';

/**
 * The meta stream of a LevelDB native snapshot (docs/FORMAT.md, "LevelDB native snapshot"):
 *
 *   "SSLM" | u16 version | bytes(JSON header) | varint queues | (string name | varint n | (f64 ts | u16 kg | bytes key | bytes ns)*n)*
 *
 * The JSON header holds the key serializer, maxParallelism, key-group range and one meta info per
 * state (LevelStateMetaInfo). Timers live on the heap and are stored here, grouped by queue.
 */
export const META_MAGIC = Buffer.from('SSLM', 'latin1');
/**
 * 2: list states may have chunk rows and chunk counters (states.ts, docs/FORMAT.md); older
 * streamstate refuses such checkpoints (it would read each chunk as a list of its own). Version 1
 * checkpoints hold base rows only, which read unchanged.
 */
export const META_VERSION = 2;

/** A state's meta info plus the serializer generations its rows may carry (value-codec.ts). */
export interface LevelStateMetaInfo extends KeyedStateMetaInfo {
  /** Value serializer per generation (index = generation); `valueSerializer` is the current one. */
  readonly valueGenerations?: readonly (SerializerSnapshot | null)[];
  /** The generation new rows are written under. */
  readonly generation?: number;
}

export interface LevelMeta {
  readonly keySerializer: SerializerSnapshot;
  readonly maxParallelism: number;
  readonly keyGroupRange: KeyGroupRangeJson;
  readonly states: readonly LevelStateMetaInfo[];
  /** queue name → timers */
  readonly timers: ReadonlyMap<string, readonly RawTimer[]>;
}

export function encodeMeta(meta: LevelMeta): Buffer {
  const header = {
    keySerializer: meta.keySerializer,
    maxParallelism: meta.maxParallelism,
    keyGroupRange: meta.keyGroupRange,
    states: meta.states,
  };
  const w = new ByteWriter(4096);
  w.raw(META_MAGIC).u16(META_VERSION).string(JSON.stringify(header));
  w.varint(meta.timers.size);
  for (const [name, timers] of meta.timers) {
    w.string(name).varint(timers.length);
    for (const t of timers) w.f64(t.timestamp).u16(t.keyGroup).bytes(t.key).bytes(t.namespace);
  }
  return w.toBuffer();
}

export function decodeMeta(bytes: Buffer, what: string): LevelMeta {
  const r = new ByteReader(bytes, what);
  if (bytes.length < 6 || !r.raw(4).equals(META_MAGIC)) {
    throw new FormatError(
      'BAD_MAGIC',
      `${what} is not a LevelDB snapshot meta stream. The handle does not match the file; restore from another checkpoint.`,
    );
  }
  const version = r.u16();
  if (version > META_VERSION) {
    throw new FormatError(
      'UNSUPPORTED_VERSION',
      `${what} has meta version ${version}; this streamstate reads up to ${META_VERSION}. Upgrade streamstate.`,
    );
  }
  let header: Omit<LevelMeta, 'timers'>;
  try {
    header = JSON.parse(r.string()) as Omit<LevelMeta, 'timers'>;
  } catch (err) {
    throw new FormatError('CORRUPT', `${what}: the meta header is not valid JSON. Restore from another checkpoint.`, {
      cause: err,
    });
  }
  const timers = new Map<string, RawTimer[]>();
  // Counts are checked against the bytes left before allocating (a queue takes at least 2 bytes, a timer 12).
  const queues = r.count(2, 'timer queues');
  for (let q = 0; q < queues; q++) {
    const name = r.string();
    const n = r.count(12, 'timers');
    const list: RawTimer[] = new Array<RawTimer>(n);
    for (let i = 0; i < n; i++) {
      const timestamp = r.f64();
      const keyGroup = r.u16();
      list[i] = { timestamp, keyGroup, key: Buffer.from(r.bytes()), namespace: Buffer.from(r.bytes()) };
    }
    timers.set(name, list);
  }
  return { ...header, timers };
}
