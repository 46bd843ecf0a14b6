import type {
  KeyedStateHandle,
  KeyGroupsStateHandle,
  OperatorStateHandle,
  OperatorStateMetaInfo,
} from '../backend/handles.js';
import { isKeyGroupsHandle } from '../backend/handles.js';
import { RestoreError } from '../errors.js';
import {
  checkParallelism,
  checkRestoreMaxParallelism,
  KeyGroupRange,
  keyGroupRangeForSubtask,
} from '../keygroups/key-groups.js';
import type { OperatorSnapshot } from './metadata.js';

/**
 * Restore assignment: which handles of a snapshot each subtask of the new job gets (Flink's
 * StateAssignmentOperation). Pure functions over handles; nothing is read.
 */

function subtaskHandles<H>(
  operator: OperatorSnapshot,
  pick: (s: OperatorSnapshot['subtasks'][number]) => readonly H[],
): (readonly H[])[] {
  const out: (readonly H[])[] = Array.from({ length: operator.parallelism }, () => []);
  for (const s of operator.subtasks) {
    if (!Number.isInteger(s.subtaskIndex) || s.subtaskIndex < 0 || s.subtaskIndex >= operator.parallelism) {
      throw new RestoreError(
        'RESTORE_FAILED',
        `operator ${operator.operatorId}: the snapshot lists subtask ${s.subtaskIndex} but has parallelism ${operator.parallelism}. Its _metadata is damaged; restore from another checkpoint.`,
      );
    }
    out[s.subtaskIndex] = pick(s);
  }
  return out;
}

/**
 * Keyed state per new subtask. New subtask i owns keyGroupRangeForSubtask(maxP, newP, i) and gets
 * every old handle whose range intersects it: key-groups handles clipped to the intersection
 * (blocks filtered), other handle types whole (their backend clips on restore). At unchanged
 * parallelism, old subtask i's handles are passed through untouched.
 */
export function assignKeyedState(
  operator: OperatorSnapshot,
  newParallelism: number,
  maxParallelism: number,
): KeyedStateHandle[][] {
  checkRestoreMaxParallelism(operator.maxParallelism, maxParallelism, `operator ${operator.operatorId}'s snapshot`);
  checkParallelism(maxParallelism, newParallelism);
  const old = subtaskHandles(operator, (s) => s.keyed);
  for (const handles of old) {
    for (const h of handles) {
      if (h.maxParallelism !== maxParallelism) {
        throw new RestoreError(
          'MAX_PARALLELISM_MISMATCH',
          `operator ${operator.operatorId}: a ${h.type} handle records maxParallelism ${h.maxParallelism}, the operator ${maxParallelism}. ` +
            'The snapshot is inconsistent; restore from another checkpoint.',
        );
      }
    }
  }
  if (newParallelism === operator.parallelism) return old.map((handles) => [...handles]);

  const out: KeyedStateHandle[][] = [];
  for (let i = 0; i < newParallelism; i++) {
    const range = keyGroupRangeForSubtask(maxParallelism, newParallelism, i);
    const mine: KeyedStateHandle[] = [];
    for (const handles of old) {
      for (const h of handles) {
        const overlap = range.intersection(h.keyGroupRange);
        if (overlap.isEmpty) continue;
        mine.push(isKeyGroupsHandle(h) ? clipKeyGroupsHandle(h, overlap) : h);
      }
    }
    out.push(mine);
  }
  return out;
}

function clipKeyGroupsHandle(h: KeyGroupsStateHandle, overlap: KeyGroupRange): KeyGroupsStateHandle {
  if (overlap.equals(h.keyGroupRange)) return h;
  return { ...h, keyGroupRange: overlap.toJSON(), blocks: h.blocks.filter((b) => overlap.contains(b.keyGroup)) };
}

/** Where one state entry of one old handle sits in the logical (concatenated) list of its state. */
interface EntryPosition {
  /** index of the entry's first element in the logical list */
  readonly first: number;
  /** whether it is the first entry of this state name (carries the name when a subtask gets no elements) */
  readonly carriesName: boolean;
}

/**
 * Operator state per new subtask, as OperatorStateHandles that point into the same streams with
 * filtered offsets:
 * - split: the logical list (old subtasks' elements in subtask order) is cut into contiguous
 *   chunks of total/newP elements, the first total%newP subtasks taking one more;
 * - union: every new subtask gets every element of every old subtask;
 * - broadcast: new subtask i gets the copy of old subtask i mod oldP.
 * At unchanged parallelism split and broadcast states pass through (old i → new i, handles
 * untouched when nothing else is added); union state is still fanned out to everybody.
 * A state that yields no elements for a subtask is still listed once (empty) so its name and
 * serializers survive.
 */
export function assignOperatorState(operator: OperatorSnapshot, newParallelism: number): OperatorStateHandle[][] {
  if (!Number.isInteger(newParallelism) || newParallelism < 1) {
    throw new RestoreError('PARALLELISM_INVALID', `parallelism must be a positive integer, got ${newParallelism}.`);
  }
  const oldP = operator.parallelism;
  const old = subtaskHandles(operator, (s) => s.operator);
  const samePar = newParallelism === oldP;

  // Logical-list positions of split states (the only ones that need them).
  const totals = new Map<string, number>();
  const positions = new Map<OperatorStateMetaInfo, EntryPosition>();
  for (const handles of old) {
    for (const h of handles) {
      for (const meta of h.states) {
        const seen = totals.get(meta.name);
        positions.set(meta, { first: seen ?? 0, carriesName: seen === undefined });
        totals.set(meta.name, (seen ?? 0) + meta.offsets.length);
      }
    }
  }

  const out: OperatorStateHandle[][] = [];
  for (let i = 0; i < newParallelism; i++) {
    const chosen = new Map<OperatorStateMetaInfo, readonly number[]>();
    const listed = new Set<string>();
    for (let j = 0; j < oldP; j++) {
      for (const h of old[j]) {
        for (const meta of h.states) {
          const offsets = offsetsFor(
            meta,
            positions.get(meta)!.first,
            totals.get(meta.name)!,
            i,
            j,
            newParallelism,
            oldP,
            samePar,
          );
          // Empty contributions are dropped, except an entry that is passed through as it is.
          const passThrough = meta.mode === 'broadcast' || (samePar && meta.mode === 'split');
          if (offsets === null || (offsets.length === 0 && !passThrough)) continue;
          chosen.set(meta, offsets);
          listed.add(meta.name);
        }
      }
    }
    // A state this subtask gets nothing of is still listed once (empty), so its name and serializers survive.
    for (const [meta, pos] of positions) {
      if (pos.carriesName && !listed.has(meta.name)) chosen.set(meta, []);
    }
    const mine: OperatorStateHandle[] = [];
    for (let j = 0; j < oldP; j++) {
      for (const h of old[j]) {
        const states: OperatorStateMetaInfo[] = [];
        for (const meta of h.states) {
          const offsets = chosen.get(meta);
          if (offsets !== undefined) states.push(offsets === meta.offsets ? meta : { ...meta, offsets });
        }
        const unchanged = states.length === h.states.length && states.every((s, k) => s === h.states[k]);
        if (states.length > 0) mine.push(unchanged ? h : { ...h, states });
      }
    }
    out.push(mine);
  }
  return out;
}

/** The offsets of `meta` (from old subtask j, whose first element is element `first` of the logical list) that new subtask i restores; null = none. */
function offsetsFor(
  meta: OperatorStateMetaInfo,
  first: number,
  total: number,
  i: number,
  j: number,
  newP: number,
  oldP: number,
  samePar: boolean,
): readonly number[] | null {
  switch (meta.mode) {
    case 'union':
      return meta.offsets;
    case 'broadcast':
      return j === i % oldP ? meta.offsets : null;
    case 'split': {
      if (samePar) return j === i ? meta.offsets : null;
      const [lo, hi] = chunkBounds(total, newP, i);
      const from = Math.max(lo - first, 0);
      const to = Math.min(hi - first, meta.offsets.length);
      if (from >= to) return null;
      return from === 0 && to === meta.offsets.length ? meta.offsets : meta.offsets.slice(from, to);
    }
    default:
      throw new RestoreError(
        'RESTORE_FAILED',
        `operator state "${meta.name}" has unknown mode ${String(meta.mode)}. Its _metadata is damaged or newer than this streamstate.`,
      );
  }
}

/** [lo, hi) of the logical list that new subtask i gets: near-equal contiguous chunks, larger ones first. */
export function chunkBounds(total: number, parallelism: number, i: number): [number, number] {
  const base = Math.floor(total / parallelism);
  const extra = total % parallelism;
  const lo = i * base + Math.min(i, extra);
  return [lo, lo + base + (i < extra ? 1 : 0)];
}
