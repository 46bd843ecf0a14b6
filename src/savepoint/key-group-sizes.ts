import type { StateFileReader } from '../backend/contract.js';
import type { KeyGroupsStateHandle } from '../backend/handles.js';
import type { CheckpointMetadata, OperatorSnapshot } from '../checkpoint/metadata.js';
import { RestoreError } from '../errors.js';
import { readKeyGroups } from '../format/key-groups-stream.js';
import { checkParallelism, keyGroupRangeForSubtask } from '../keygroups/key-groups.js';
import { keyGroupsHandlesIn } from './inspect.js';

/**
 * `streamstate inspect --key-groups`: bytes and entries per key group of each operator's keyed
 * state, their histogram, the largest key groups, the skew, and what each subtask would hold at
 * a proposed parallelism (the key-group range assignment of docs/KEY-GROUPS.md).
 *
 * Bytes are the blocks' lengths in the key-groups streams (exact, from _metadata); entries are
 * the counts the writer recorded per block (blocks[].entries) or, for snapshots written before
 * that, counted by reading the blocks (`entriesFrom: 'scanned'`).
 */

export interface KeyGroupSize {
  readonly keyGroup: number;
  readonly bytes: number;
  readonly entries: number;
}

export interface HistogramBucket {
  /** Key groups whose size lies in [fromBytes, toBytes] (inclusive). */
  readonly fromBytes: number;
  readonly toBytes: number;
  readonly keyGroups: number;
}

export interface SubtaskShare {
  readonly subtaskIndex: number;
  readonly keyGroupRange: { readonly start: number; readonly end: number };
  readonly bytes: number;
  readonly entries: number;
  readonly keyGroupsWithData: number;
}

export interface OperatorKeyGroups {
  readonly operatorId: string;
  readonly maxParallelism: number;
  readonly parallelism: number;
  /** Where the entry counts come from. */
  readonly entriesFrom: 'recorded' | 'scanned';
  /** Bytes of every key group's block, summed. */
  readonly bytes: number;
  readonly entries: number;
  /** Bytes of the key-groups streams that hold the blocks (blocks plus each stream's header and footer). */
  readonly streamBytes: number;
  readonly keyGroupsWithData: number;
  /** Mean bytes over all maxParallelism key groups (empty ones count). */
  readonly meanBytes: number;
  readonly maxBytes: number;
  /** maxBytes / meanBytes (0 without data): 1 is perfectly even. */
  readonly skew: number;
  readonly largest: readonly KeyGroupSize[];
  readonly histogram: readonly HistogramBucket[];
  /** The proposed parallelism the shares are computed for. */
  readonly proposedParallelism: number;
  readonly subtasks: readonly SubtaskShare[];
  /** Largest subtask bytes / mean subtask bytes at the proposed parallelism. */
  readonly subtaskSkew: number;
  /** Every key group with data, ascending. */
  readonly keyGroups: readonly KeyGroupSize[];
}

export interface KeyGroupSizesOptions {
  /** Parallelism to compute subtask shares for; default each operator's own. */
  readonly parallelism?: number;
  /** How many of the largest key groups to list. Default 10. */
  readonly top?: number;
  /** Histogram buckets over the non-empty sizes. Default 10. */
  readonly buckets?: number;
}

function ratio(a: number, b: number): number {
  return b === 0 ? 0 : a / b;
}

/** Sizes of one operator's key groups; blocks without recorded entries are read to count them. */
async function sizesOf(
  op: OperatorSnapshot,
  files: StateFileReader,
): Promise<{ sizes: Map<number, { bytes: number; entries: number }>; streamBytes: number; scanned: boolean }> {
  const sizes = new Map<number, { bytes: number; entries: number }>();
  let streamBytes = 0;
  let scanned = false;
  const handles: KeyGroupsStateHandle[] = [];
  for (const s of op.subtasks) for (const h of s.keyed) handles.push(...keyGroupsHandlesIn(h));
  for (const h of handles) {
    streamBytes += h.stream.size;
    const missing = h.blocks.some((b) => b.entries === undefined);
    const counted = new Map<number, number>();
    if (missing) {
      scanned = true;
      for await (const kg of readKeyGroups(h, files, h.keyGroupRange))
        counted.set(
          kg.keyGroup,
          kg.sections.reduce((n, s) => n + s.entryCount, 0),
        );
    }
    for (const b of h.blocks) {
      const seen = sizes.get(b.keyGroup) ?? { bytes: 0, entries: 0 };
      seen.bytes += b.length;
      seen.entries += b.entries ?? counted.get(b.keyGroup) ?? 0;
      sizes.set(b.keyGroup, seen);
    }
  }
  return { sizes, streamBytes, scanned };
}

function histogram(sizes: readonly KeyGroupSize[], empty: number, buckets: number): HistogramBucket[] {
  const out: HistogramBucket[] = [{ fromBytes: 0, toBytes: 0, keyGroups: empty }];
  if (sizes.length === 0) return out;
  const min = Math.min(...sizes.map((s) => s.bytes));
  const max = Math.max(...sizes.map((s) => s.bytes));
  const n = Math.max(1, Math.min(buckets, max - min + 1));
  const width = (max - min + 1) / n;
  const counts = new Array<number>(n).fill(0);
  for (const s of sizes) counts[Math.min(n - 1, Math.floor((s.bytes - min) / width))]++;
  for (let i = 0; i < n; i++)
    out.push({
      fromBytes: Math.ceil(min + i * width),
      toBytes: Math.ceil(min + (i + 1) * width) - 1,
      keyGroups: counts[i],
    });
  return out;
}

/** Key-group sizes of every operator with keyed state in key-groups streams. */
export async function keyGroupSizes(
  metadata: CheckpointMetadata,
  files: StateFileReader,
  opts: KeyGroupSizesOptions = {},
): Promise<OperatorKeyGroups[]> {
  const out: OperatorKeyGroups[] = [];
  for (const op of metadata.operators) {
    const p = opts.parallelism ?? op.parallelism;
    if (p > op.maxParallelism) {
      throw new RestoreError(
        'PARALLELISM_INVALID',
        `--parallelism ${p} is above operator ${op.operatorId}'s maxParallelism ${op.maxParallelism}; no subtask could hold fewer than one key group. Use at most ${op.maxParallelism}.`,
      );
    }
    checkParallelism(op.maxParallelism, p);
    const { sizes, streamBytes, scanned } = await sizesOf(op, files);
    const keyGroups = [...sizes]
      .map(([keyGroup, s]) => ({ keyGroup, bytes: s.bytes, entries: s.entries }))
      .sort((a, b) => a.keyGroup - b.keyGroup);
    const bytes = keyGroups.reduce((n, k) => n + k.bytes, 0);
    const entries = keyGroups.reduce((n, k) => n + k.entries, 0);
    const maxBytes = keyGroups.reduce((m, k) => Math.max(m, k.bytes), 0);
    const meanBytes = bytes / op.maxParallelism;
    const subtasks: SubtaskShare[] = [];
    for (let i = 0; i < p; i++) {
      const range = keyGroupRangeForSubtask(op.maxParallelism, p, i);
      const mine = keyGroups.filter((k) => range.contains(k.keyGroup));
      subtasks.push({
        subtaskIndex: i,
        keyGroupRange: range.toJSON(),
        bytes: mine.reduce((n, k) => n + k.bytes, 0),
        entries: mine.reduce((n, k) => n + k.entries, 0),
        keyGroupsWithData: mine.length,
      });
    }
    const largestSubtask = subtasks.reduce((m, s) => Math.max(m, s.bytes), 0);
    out.push({
      operatorId: op.operatorId,
      maxParallelism: op.maxParallelism,
      parallelism: op.parallelism,
      entriesFrom: scanned ? 'scanned' : 'recorded',
      bytes,
      entries,
      streamBytes,
      keyGroupsWithData: keyGroups.length,
      meanBytes,
      maxBytes,
      skew: ratio(maxBytes, meanBytes),
      largest: [...keyGroups].sort((a, b) => b.bytes - a.bytes || a.keyGroup - b.keyGroup).slice(0, opts.top ?? 10),
      histogram: histogram(keyGroups, op.maxParallelism - keyGroups.length, opts.buckets ?? 10),
      proposedParallelism: p,
      subtasks,
      subtaskSkew: ratio(largestSubtask, bytes / p),
      keyGroups,
    });
  }
  return out;
}
