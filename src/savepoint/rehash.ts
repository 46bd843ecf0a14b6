import type { CheckpointStreamFactory, StateFileReader } from '../backend/contract.js';
import type { KeyedStateMetaInfo, KeyGroupRangeJson, KeyGroupsStateHandle } from '../backend/handles.js';
import type { SerializerSnapshot } from '../serializers/serializer.js';
import { FormatError, RestoreError } from '../errors.js';
import { CANONICAL_LAYOUT, entryKindOf, readKeyGroups } from '../format/key-groups-stream.js';
import { checkMaxParallelism, keyGroupRangeForSubtask } from '../keygroups/key-groups.js';
import {
  CanonicalKeyGroupsWriter,
  canonicalStates,
  normalizeSerializerSnapshot,
  stateIdentity,
} from '../format/canonical-layout.js';
import { KeyGroupIndex } from './rehash-memory.js';
import { SectionSplit } from './rehash-split.js';
import { KeyGroupSpill, planSpillBuckets, DEFAULT_BUCKET_BYTES, DEFAULT_SPILL_BUFFER_BYTES } from './rehash-spill.js';

export { forEachEntry } from './rehash-split.js';

/**
 * Changing the max parallelism of keyed state (docs/KEY-GROUPS.md, "Changing maxParallelism"):
 * every entry of every key-groups stream is moved to the key group its key hashes to under the
 * new max parallelism, `murmur3_32(key bytes) mod maxParallelism'`. Entries are moved as encoded
 * bytes (values, list elements, map entries, TTL timestamps and timers all stay as they are;
 * timers go with their key). Three routes, by what the numbers allow:
 * - the new max parallelism divides the old: whole old key groups merge into new ones, streamed
 *   in one pass without hashing (mergeToDivisor);
 * - otherwise every key is hashed and its entry partitioned by new key group: in memory within
 *   RehashOptions.memoryBytes (KeyGroupIndex), through spill files beyond it (KeyGroupSpill), so
 *   memory stays bounded whatever the state's size. A source section's entries are grouped by new
 *   key group first (SectionSplit) and move as one run per group: kept, spilled, sorted and
 *   handed to the writer per run, not per entry.
 * The canonical writer sorts each new key group. The result is canonical key-groups streams, one
 * per new subtask.
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
  /**
   * Planned size of one spill bucket (a key-group range with its own spill file, read back whole);
   * default half of memoryBytes, at least DEFAULT_BUCKET_BYTES.
   */
  readonly bucketBytes?: number;
  /** Total of the spill's write buffers. */
  readonly bufferBytes?: number;
  /**
   * Keyed state of at most this many bytes (the source blocks) is re-hashed in memory, without
   * spill files; more goes through them. Default DEFAULT_REHASH_MEMORY_BYTES; 0 always spills.
   * Not used when the new max parallelism divides the old (one streaming pass, no spill).
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
 * disk (the process then holds up to about twice this at its peak).
 */
export const DEFAULT_REHASH_MEMORY_BYTES = 256 * 1024 * 1024;

/** Checks a new max parallelism against the bounds and the parallelism it must hold. */
export function checkNewMaxParallelism(maxParallelism: number, parallelism: number, what: string): void {
  checkMaxParallelism(maxParallelism, '--max-parallelism');
  if (parallelism > maxParallelism) {
    throw new RestoreError(
      'PARALLELISM_INVALID',
      `--max-parallelism ${maxParallelism} is below ${what}'s parallelism ${parallelism}: every subtask needs at least one key group. ` +
        `Pass --max-parallelism ${parallelism} or more, or lower --parallelism too.`,
    );
  }
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
  if (sources.length === 0)
    return { handles: Array.from({ length: opts.parallelism }, () => null), bytesRead: 0, keyGroups: 0, entries: 0 };
  const { states, ids } = canonicalIds(sources);
  const total = sources.reduce((n, s) => n + s.handle.blocks.reduce((m, b) => m + b.length, 0), 0);
  const ranges = Array.from({ length: opts.parallelism }, (_, i) =>
    keyGroupRangeForSubtask(newMaxP, opts.parallelism, i).toJSON(),
  );
  const plan: RehashPlan = { states, ids, total, ranges, keySerializer: sources[0].handle.keySerializer };
  const divisor = divisorSources(sources, newMaxP);
  if (divisor !== undefined) return mergeToDivisor(sources, divisor, plan, opts);
  return partition(sources, plan, opts);
}

/** What every path of rehashKeyedState shares: canonical states, totals, the new subtasks' ranges. */
interface RehashPlan {
  readonly states: KeyedStateMetaInfo[];
  /** Per source: its state ids → canonical ids. */
  readonly ids: Map<number, number>[];
  /** Bytes of the source blocks. */
  readonly total: number;
  readonly ranges: KeyGroupRangeJson[];
  readonly keySerializer: SerializerSnapshot;
}

/** One canonical stream per new subtask, each filled by `fill`; a stream is discarded when `fill` fails. */
async function writeSubtasks(
  plan: RehashPlan,
  opts: RehashOptions,
  fill: (writer: CanonicalKeyGroupsWriter, subtask: number) => Promise<void>,
): Promise<(KeyGroupsStateHandle | null)[]> {
  const handles: (KeyGroupsStateHandle | null)[] = [];
  for (let i = 0; i < opts.parallelism; i++) {
    const stream = opts.streams.createOutputStream('exclusive');
    try {
      const writer = new CanonicalKeyGroupsWriter(
        stream,
        {
          layout: CANONICAL_LAYOUT,
          keySerializer: plan.keySerializer,
          maxParallelism: opts.maxParallelism,
          keyGroupRange: plan.ranges[i],
          states: plan.states,
        },
        opts.flushBytes === undefined ? {} : { flushBytes: opts.flushBytes },
      );
      await fill(writer, i);
      handles.push(await writer.finish());
    } catch (err) {
      await stream.discard().catch(() => undefined);
      throw err;
    }
  }
  return handles;
}

/**
 * When the new max parallelism divides the old one (every source at the same old max
 * parallelism, each old key group in one source), old key group k belongs wholly to new key group
 * k mod maxParallelism' (murmur mod a multiple of n, mod n, is murmur mod n): no key is hashed
 * again. Returns, per old key group, the index of the source holding its block (-1: none), or
 * undefined when this does not apply.
 */
function divisorSources(sources: readonly RehashSource[], newMaxP: number): Int32Array | undefined {
  const oldMaxP = sources[0].handle.maxParallelism;
  if (newMaxP >= oldMaxP || oldMaxP % newMaxP !== 0) return undefined;
  if (sources.some((s) => s.handle.maxParallelism !== oldMaxP)) return undefined;
  const holder = new Int32Array(oldMaxP).fill(-1);
  for (let i = 0; i < sources.length; i++) {
    for (const b of sources[i].handle.blocks) {
      if (b.keyGroup < 0 || b.keyGroup >= oldMaxP || holder[b.keyGroup] !== -1) return undefined;
      holder[b.keyGroup] = i;
    }
  }
  return holder;
}

/**
 * The divisor case (divisorSources): each new key group is the union of the old key groups
 * k, k + maxParallelism', k + 2 * maxParallelism', ..., read with one ranged read each and merged
 * by the canonical writer. One pass over the source, no spill, memory one new key group.
 */
async function mergeToDivisor(
  sources: readonly RehashSource[],
  holder: Int32Array,
  plan: RehashPlan,
  opts: RehashOptions,
): Promise<RehashResult> {
  const newMaxP = opts.maxParallelism;
  const phase = `merging ${opts.what}'s key groups into maxParallelism ${newMaxP}`;
  let done = 0;
  let keyGroups = 0;
  let entries = 0;
  const handles = await writeSubtasks(plan, opts, async (writer, subtask) => {
    const { start, end } = plan.ranges[subtask];
    for (let kg = start; kg <= end; kg++) {
      let open = false;
      for (let old = kg; old < holder.length; old += newMaxP) {
        const s = holder[old];
        if (s < 0) continue;
        const { handle, files } = sources[s];
        for await (const raw of readKeyGroups(handle, files, { start: old, end: old })) {
          for (const sec of raw.sections) {
            if (!open) writer.beginKeyGroup(kg);
            open = true;
            writer.addRawSection(sec.stateId, sec.entryCount, sec.bytes, plan.ids[s]);
            entries += sec.entryCount;
            done += sec.bytes.length;
          }
        }
      }
      if (!open) continue;
      await writer.endKeyGroup();
      keyGroups++;
      opts.progress?.(phase, done, plan.total);
    }
  });
  return { handles, bytesRead: plan.total, keyGroups, entries };
}

/**
 * The general case: every entry's key is hashed and the entry partitioned by its new key group,
 * in memory within RehashOptions.memoryBytes (KeyGroupIndex), through spill files beyond it
 * (KeyGroupSpill); then each new subtask's key groups are written in order.
 */
async function partition(
  sources: readonly RehashSource[],
  plan: RehashPlan,
  opts: RehashOptions,
): Promise<RehashResult> {
  const newMaxP = opts.maxParallelism;
  const { states, ids, total, ranges } = plan;
  const kinds = states.map((s) => entryKindOf(s.kind));
  const memoryBytes = opts.memoryBytes ?? DEFAULT_REHASH_MEMORY_BYTES;
  const inMemory = total <= memoryBytes;
  // In memory, one bucket per subtask: its size costs nothing but the memory already allowed.
  // Spilled, a bucket read back holds about its size: half the budget (at least the default), so
  // fewer, larger spill files where the budget allows.
  const bucketBytes = inMemory
    ? Number.POSITIVE_INFINITY
    : (opts.bucketBytes ?? Math.max(DEFAULT_BUCKET_BYTES, Math.floor(memoryBytes / 2)));
  const buckets = planSpillBuckets(ranges, newMaxP, total, bucketBytes);
  const spill = inMemory
    ? new KeyGroupIndex(newMaxP, buckets)
    : new KeyGroupSpill(opts.scratchDir, newMaxP, buckets, {
        bufferBytes: opts.bufferBytes ?? DEFAULT_SPILL_BUFFER_BYTES,
      });
  try {
    await spill.open();
    // 1. Partition: every entry to the bucket of its new key group, a section's entries grouped
    // by new key group first (SectionSplit), so each group moves as one run.
    const phase = `re-hashing ${opts.what} to maxParallelism ${newMaxP}`;
    const split = new SectionSplit(newMaxP);
    let done = 0;
    for (let s = 0; s < sources.length; s++) {
      const { handle, files } = sources[s];
      for await (const kg of readKeyGroups(handle, files, handle.keyGroupRange)) {
        for (const sec of kg.sections) {
          const id = ids[s].get(sec.stateId)!;
          split.split(kinds[id], sec.bytes, sec.entryCount, `${opts.what}, key group ${kg.keyGroup}`);
          spill.addSplit(id, sec.bytes, split);
          done += sec.bytes.length;
        }
        await spill.drain();
        opts.progress?.(phase, done, total);
      }
    }
    await spill.finishWriting();
    // 2. Write: per new subtask, its buckets in key-group order, canonically.
    let bucket = 0;
    let keyGroups = 0;
    const writing = `writing ${opts.what} at maxParallelism ${newMaxP}${inMemory ? '' : ' (from spill files)'}`;
    const handles = await writeSubtasks(plan, opts, async (writer, i) => {
      for (; bucket < buckets.length && buckets[bucket].subtask === i; bucket++) {
        keyGroups += await spill.writeBucket(bucket, writer);
        opts.progress?.(writing, bucket + 1, buckets.length);
      }
    });
    return { handles, bytesRead: total, keyGroups, entries: spill.size };
  } finally {
    await spill.close();
  }
}
