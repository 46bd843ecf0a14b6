import { formatBytes } from './inspect.js';
import type { OperatorKeyGroups } from './key-group-sizes.js';

/** The human-readable form of `inspect --key-groups` (the JSON form is the reports themselves). */

const BAR_WIDTH = 40;

function bar(n: number, max: number): string {
  const len = max === 0 ? 0 : Math.round((n / max) * BAR_WIDTH);
  return (n > 0 && len === 0 ? '.' : '#'.repeat(len)).padEnd(BAR_WIDTH);
}

function count(n: number): string {
  return n.toLocaleString('en-US');
}

/**
 * `basis` says where the sizes come from: the snapshot's own key-groups streams, or a canonical
 * conversion of native handles made for this report.
 */
export function formatKeyGroupSizes(
  reports: readonly OperatorKeyGroups[],
  basis: 'snapshot' | 'canonical-view',
): string {
  const lines: string[] = [];
  for (const r of reports) {
    if (lines.length > 0) lines.push('');
    const source =
      basis === 'snapshot'
        ? 'sizes from _metadata'
        : 'sizes of a canonical conversion (native handles were restored and written canonically for this report)';
    lines.push(
      `operator ${r.operatorId}: maxParallelism ${r.maxParallelism}, parallelism ${r.parallelism} (${source}; entries ${r.entriesFrom})`,
    );
    if (r.keyGroupsWithData === 0) {
      lines.push('  no keyed state');
      continue;
    }
    const top = r.largest[0];
    lines.push(
      `  ${r.keyGroupsWithData} of ${r.maxParallelism} key groups hold ${formatBytes(r.bytes)} in ${count(r.entries)} entries; ` +
        `mean ${formatBytes(Math.round(r.meanBytes))}, max ${formatBytes(r.maxBytes)} (key group ${top.keyGroup}), skew ${r.skew.toFixed(2)} (max/mean)`,
    );
    lines.push('  bytes per key group:');
    const most = Math.max(...r.histogram.map((b) => b.keyGroups));
    const labels = r.histogram.map((b, i) =>
      i === 0 ? 'empty' : `${formatBytes(b.fromBytes)} - ${formatBytes(b.toBytes)}`,
    );
    const width = Math.max(...labels.map((l) => l.length));
    r.histogram.forEach((b, i) =>
      lines.push(`    ${labels[i].padStart(width)}  ${bar(b.keyGroups, most)} ${b.keyGroups}`),
    );
    lines.push('  largest key groups:');
    for (const k of r.largest)
      lines.push(
        `    key group ${String(k.keyGroup).padStart(5)}  ${formatBytes(k.bytes).padStart(10)}  ${count(k.entries).padStart(10)} entries`,
      );
    const proposed = r.proposedParallelism === r.parallelism ? 'its parallelism' : 'the proposed parallelism';
    lines.push(`  at ${proposed} ${r.proposedParallelism}: subtask skew ${r.subtaskSkew.toFixed(2)} (max/mean bytes)`);
    for (const s of r.subtasks) {
      lines.push(
        `    subtask ${String(s.subtaskIndex).padStart(4)}  key groups ${`${s.keyGroupRange.start}-${s.keyGroupRange.end}`.padEnd(11)} ${formatBytes(s.bytes).padStart(10)}  ${count(s.entries).padStart(10)} entries  (${s.keyGroupsWithData} key groups with data)`,
      );
    }
  }
  return `${lines.join('\n')}\n`;
}
