import type { CheckpointMetadata, OperatorSnapshot } from '../checkpoint/metadata.js';
import { FormatError } from '../errors.js';
import { keyGroupRangeForSubtask } from '../keygroups/key-groups.js';

/**
 * Key-group coverage of an operator's keyed handles. Subtask i of parallelism p owns exactly
 * keyGroupRangeForSubtask(maxParallelism, p, i), and a subtask's keyed handles together claim
 * exactly that range: a handle reaching into another subtask's key groups would restore (and
 * dump, and convert) those keys twice; a subtask whose handles leave part of its range unclaimed
 * has lost those key groups. A subtask without keyed handles had no keyed state (nothing to check).
 */

/** One line per problem, each naming the operator and subtask; empty when coverage is exact. */
export function keyGroupCoverageProblems(metadata: CheckpointMetadata, operatorId?: string): string[] {
  const problems: string[] = [];
  for (const op of metadata.operators)
    if (operatorId === undefined || op.operatorId === operatorId) operatorProblems(op, problems);
  return problems;
}

function operatorProblems(op: OperatorSnapshot, problems: string[]): void {
  const p = op.parallelism;
  const maxP = op.maxParallelism;
  if (!Number.isSafeInteger(p) || !Number.isSafeInteger(maxP) || p < 1 || maxP < 1 || p > maxP) {
    problems.push(
      `operator ${op.operatorId}: parallelism ${p} and maxParallelism ${maxP} are inconsistent (need 1 <= parallelism <= maxParallelism).`,
    );
    return;
  }
  const seen = new Set<number>();
  for (const s of op.subtasks) {
    const where = `operator ${op.operatorId} subtask ${s.subtaskIndex}`;
    if (!Number.isSafeInteger(s.subtaskIndex) || s.subtaskIndex < 0 || s.subtaskIndex >= p) {
      problems.push(`${where}: no such subtask at parallelism ${p}.`);
      continue;
    }
    if (seen.has(s.subtaskIndex)) {
      problems.push(`${where} appears more than once; its key groups would be restored twice.`);
      continue;
    }
    seen.add(s.subtaskIndex);
    const handles = s.keyed.filter((h) => h !== null && h !== undefined);
    if (handles.length === 0) continue;
    const own = keyGroupRangeForSubtask(maxP, p, s.subtaskIndex);
    const claimed = new Array<number>(own.end - own.start + 1).fill(0);
    for (const h of handles) {
      const r = h.keyGroupRange;
      if (r === undefined || !Number.isSafeInteger(r.start) || !Number.isSafeInteger(r.end) || r.start > r.end) {
        problems.push(`${where}: a ${h.type} handle has no valid keyGroupRange.`);
        continue;
      }
      if (r.start < own.start || r.end > own.end) {
        problems.push(
          `${where}: a ${h.type} handle claims key groups ${r.start}-${r.end}, but subtask ${s.subtaskIndex} of parallelism ${p} owns ${own.start}-${own.end}; ` +
            'key groups outside that range belong to other subtasks and would be read twice.',
        );
      }
      for (let kg = Math.max(r.start, own.start); kg <= Math.min(r.end, own.end); kg++) claimed[kg - own.start]++;
    }
    const twice = runs(claimed, own.start, (n) => n > 1);
    if (twice.length > 0)
      problems.push(`${where}: key groups ${twice.join(', ')} are claimed by more than one of its handles.`);
    const missing = runs(claimed, own.start, (n) => n === 0);
    if (missing.length > 0)
      problems.push(
        `${where}: no handle claims key groups ${missing.join(', ')} of its range ${own.start}-${own.end}; their state is missing.`,
      );
  }
}

/** Ranges ("3-7", "9") of indices whose count matches. */
function runs(counts: readonly number[], offset: number, match: (n: number) => boolean): string[] {
  const out: string[] = [];
  for (let i = 0; i < counts.length; i++) {
    if (!match(counts[i])) continue;
    let j = i;
    while (j + 1 < counts.length && match(counts[j + 1])) j++;
    out.push(i === j ? `${i + offset}` : `${i + offset}-${j + offset}`);
    i = j;
  }
  return out;
}

/** Throws CORRUPT naming the first problems when the keyed handles do not cover key groups exactly once. */
export function checkKeyGroupCoverage(metadata: CheckpointMetadata, where: string, operatorId?: string): void {
  const problems = keyGroupCoverageProblems(metadata, operatorId);
  if (problems.length === 0) return;
  const shown = problems.slice(0, 3).join(' ');
  const more = problems.length > 3 ? ` (${problems.length - 3} more)` : '';
  throw new FormatError(
    'CORRUPT',
    `${where}: keyed state does not cover its key groups exactly once: ${shown}${more} The snapshot is inconsistent; use another checkpoint or savepoint.`,
  );
}
