import type { CheckpointStreamFactory, StateFileReader } from '../backend/contract.js';
import type { KeyedStateMetaInfo, KeyGroupsStateHandle } from '../backend/handles.js';
import { FormatError, RestoreError } from '../errors.js';
import { ByteReader } from '../format/bytes.js';
import { CANONICAL_LAYOUT, entryKindOf, readKeyGroups, type EntryKind } from '../format/key-groups-stream.js';
import { keyGroupRangeForSubtask, MAX_MAX_PARALLELISM } from '../keygroups/key-groups.js';
import { murmur3Range } from '../keygroups/murmur3.js';
import {
  CanonicalKeyGroupsWriter,
  canonicalStates,
  normalizeSerializerSnapshot,
  stateIdentity,
} from '../format/canonical-layout.js';
import { KeyGroupIndex } from './rehash-memory.js';
import { KeyGroupSpill, planSpillBuckets, DEFAULT_BUCKET_BYTES, DEFAULT_SPILL_BUFFER_BYTES } from './rehash-spill.js';

/**
 * Changing the max parallelism of keyed state (docs/KEY-GROUPS.md, "Changing maxParallelism"):
 * every entry of every key-groups stream is moved to the key group its key hashes to under the
 * new max parallelism, `murmur3_32(key bytes) mod maxParallelism'`. Entries are moved as encoded
 * bytes (values, list elements, map entries, TTL timestamps and timers all stay as they are;
 * timers go with their key), through an external partitioning step (KeyGroupSpill), so memory
 * stays bounded whatever the state's size; state within RehashOptions.memoryBytes is partitioned
 * in memory instead (KeyGroupIndex: references into the source sections, no copies). The result
 * is canonical key-groups streams, one per new subtask.
 *
 * Used by convert (src/savepoint/convert.ts); usable by any tool that has key-groups streams
 * and wants them at another max parallelism or parallelism.
 */

export interface RehashSource {
  readonly handle: KeyGroupsStateHandle;
  readonly files: StateFileReader;
}

export interface RehashOptions {
  /** The new max parallelism (number of key groups). */
  readonly maxParallelism: number;
  /** The new parallelism: one canonical stream per subtask. */
  readonly parallelism: number;
  /** Where the canonical streams are written. */
  readonly streams: CheckpointStreamFactory;
  /** A local directory for spill files (created, and removed again before the call returns). */
  readonly scratchDir: string;
  /** What the error messages name, e.g. `operator op-1`. */
  readonly what: string;
  readonly flushBytes?: number;
  /** Planned size of one spill bucket; reading one back holds about twice this. */
  readonly bucketBytes?: number;
  /** Total of the spill's write buffers. */
  readonly bufferBytes?: number;
  /**
   * Keyed state of at most this many bytes (the source blocks) is re-hashed in memory, without
   * spill files; more goes through them. Default DEFAULT_REHASH_MEMORY_BYTES; 0 always spills.
   */
  readonly memoryBytes?: number;
  readonly progress?: (phase: string, done: number, total: number) => void;
}

export interface RehashResult {
  /** Per new subtask: its canonical stream, or null when it holds no keyed state. */
  readonly handles: readonly (KeyGroupsStateHandle | null)[];
  /** Bytes of the source blocks read. */
  readonly bytesRead: number;
  /** Key groups written (with data). */
  readonly keyGroups: number;
  /** Entries moved. */
  readonly entries: number;
}

/**
 * Default of RehashOptions.memoryBytes: state up to this size is re-hashed without touching the
 * disk (the process then holds about twice this at its peak).
 */
export const DEFAULT_REHASH_MEMORY_BYTES = 256 * 1024 * 1024;

/** Checks a new max parallelism against the bounds and the parallelism it must hold. */
export function checkNewMaxParallelism(maxParallelism: number, parallelism: number, what: string): void {
  if (!Number.isInteger(maxParallelism) || maxParallelism < 1 || maxParallelism > MAX_MAX_PARALLELISM) {
    throw new RestoreError(
      'PARALLELISM_INVALID',
      `--max-parallelism ${maxParallelism} is outside 1..${MAX_MAX_PARALLELISM}; pass an integer in that range.`,
    );
  }
  if (parallelism > maxParallelism) {
    throw new RestoreError(
      'PARALLELISM_INVALID',
      `--max-parallelism ${maxParallelism} is below ${what}'s parallelism ${parallelism}: every subtask needs at least one key group. ` +
        `Pass --max-parallelism ${parallelism} or more, or lower --parallelism too.`,
    );
  }
}

/**
 * Calls `fn` for each entry of a section: the entry's byte range [start, end) and its key's
 * [keyStart, keyEnd) within `bytes` (encodings: docs/FORMAT.md, "Key-groups stream").
 */
export function forEachEntry(
  kind: EntryKind,
  bytes: Buffer,
  count: number,
  what: string,
  fn: (start: number, end: number, keyStart: number, keyEnd: number) => void,
): void {
  const r = new ByteReader(bytes, what);
  for (let i = 0; i < count; i++) {
    const start = r.pos;
    if (kind === 'timers') r.skip(8);
    const kl = r.varint();
    const keyStart = r.pos;
    r.skip(kl);
    const keyEnd = r.pos;
    r.skip(r.varint()); // namespace
    if (kind === 'value') r.skip(r.varint());
    else if (kind === 'list') {
      const n = r.count(1, 'list elements');
      for (let j = 0; j < n; j++) r.skip(r.varint());
    } else if (kind === 'map') {
      const n = r.count(2, 'map elements');
      for (let j = 0; j < n; j++) {
        r.skip(r.varint());
        if (r.u8() === 0) r.skip(r.varint());
      }
    }
    fn(start, r.pos, keyStart, keyEnd);
  }
  if (!r.done)
    throw new FormatError(
      'CORRUPT',
      `${what}: ${r.remaining} bytes after the section's last entry; the section is damaged.`,
    );
}

/** The canonical states of `sources` and, per source, its state ids → canonical ids. */
function canonicalIds(sources: readonly RehashSource[]): { states: KeyedStateMetaInfo[]; ids: Map<number, number>[] } {
  const states = canonicalStates(sources.flatMap((s) => s.handle.states));
  const byIdentity = new Map(states.map((s) => [stateIdentity(s), s.stateId]));
  const ids = sources.map((s) => new Map(s.handle.states.map((m) => [m.stateId, byIdentity.get(stateIdentity(m))!])));
  return { states, ids };
}

/**
 * Re-hashes the keyed state of `sources` (one operator's key-groups streams, any layout the
 * format level reads, any max parallelism) into canonical streams at the new max parallelism and
 * parallelism.
 */
export async function rehashKeyedState(sources: readonly RehashSource[], opts: RehashOptions): Promise<RehashResult> {
  const newMaxP = opts.maxParallelism;
  checkNewMaxParallelism(newMaxP, opts.parallelism, opts.what);
  const keySerializers = new Set(
    sources.map((s) => JSON.stringify(normalizeSerializerSnapshot(s.handle.keySerializer))),
  );
  if (keySerializers.size > 1) {
    throw new FormatError(
      'CORRUPT',
      `${opts.what}: subtasks recorded different key serializers (${[...keySerializers].join(', ')}); the snapshot is inconsistent.`,
    );
  }
  const handles: (KeyGroupsStateHandle | null)[] = [];
  if (sources.length === 0)
    return { handles: Array.from({ length: opts.parallelism }, () => null), bytesRead: 0, keyGroups: 0, entries: 0 };
  const { states, ids } = canonicalIds(sources);
  const kinds = states.map((s) => entryKindOf(s.kind));
  const total = sources.reduce((n, s) => n + s.handle.blocks.reduce((m, b) => m + b.length, 0), 0);
  const ranges = Array.from({ length: opts.parallelism }, (_, i) =>
    keyGroupRangeForSubtask(newMaxP, opts.parallelism, i).toJSON(),
  );
  const inMemory = total <= (opts.memoryBytes ?? DEFAULT_REHASH_MEMORY_BYTES);
  // In memory, one bucket per subtask: its size costs nothing but the memory already allowed.
  const buckets = planSpillBuckets(
    ranges,
    newMaxP,
    total,
    inMemory ? Number.POSITIVE_INFINITY : (opts.bucketBytes ?? DEFAULT_BUCKET_BYTES),
  );
  const spill = inMemory
    ? new KeyGroupIndex(newMaxP, buckets)
    : new KeyGroupSpill(opts.scratchDir, newMaxP, buckets, {
        bufferBytes: opts.bufferBytes ?? DEFAULT_SPILL_BUFFER_BYTES,
      });
  let keyGroups = 0;
  try {
    await spill.open();
    // 1. Partition: every entry to the bucket of its new key group.
    let done = 0;
    for (let s = 0; s < sources.length; s++) {
      const { handle, files } = sources[s];
      for await (const kg of readKeyGroups(handle, files, handle.keyGroupRange)) {
        for (const sec of kg.sections) {
          const id = ids[s].get(sec.stateId)!;
          const bytes = sec.bytes;
          forEachEntry(
            kinds[id],
            bytes,
            sec.entryCount,
            `${opts.what}, key group ${kg.keyGroup}`,
            (start, end, keyStart, keyEnd) => {
              spill.add(murmur3Range(bytes, keyStart, keyEnd) % newMaxP, id, bytes, start, end);
            },
          );
          done += bytes.length;
        }
        await spill.drain();
        opts.progress?.(`re-hashing ${opts.what} to maxParallelism ${newMaxP}`, done, total);
      }
    }
    await spill.finishWriting();
    // 2. Write: per new subtask, its buckets in key-group order, canonically.
    const keySerializer = sources[0].handle.keySerializer;
    let bucket = 0;
    for (let i = 0; i < opts.parallelism; i++) {
      const stream = opts.streams.createOutputStream('exclusive');
      try {
        const writer = new CanonicalKeyGroupsWriter(
          stream,
          { layout: CANONICAL_LAYOUT, keySerializer, maxParallelism: newMaxP, keyGroupRange: ranges[i], states },
          opts.flushBytes === undefined ? {} : { flushBytes: opts.flushBytes },
        );
        for (; bucket < buckets.length && buckets[bucket].subtask === i; bucket++) {
          for await (const kg of spill.readBucket(bucket)) {
            writer.beginKeyGroup(kg.keyGroup);
            const { sources: from, sourceIds } = kg;
            for (let j = 0; j < kg.count; j++) {
              const data = from === undefined || sourceIds === undefined ? kg.data : from[sourceIds[j]];
              writer.addRawRange(kg.stateIds[j], 1, data, kg.starts[j], kg.ends[j]);
            }
            await writer.endKeyGroup();
            keyGroups++;
          }
          opts.progress?.(`writing ${opts.what} at maxParallelism ${newMaxP}`, bucket + 1, buckets.length);
        }
        handles.push(await writer.finish());
      } catch (err) {
        await stream.discard().catch(() => undefined);
        throw err;
      }
    }
    return { handles, bytesRead: total, keyGroups, entries: spill.size };
  } finally {
    await spill.close();
  }
}
