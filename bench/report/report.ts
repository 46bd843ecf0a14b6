/**
 * Builds bench/results/REPORT.md and its SVG charts from the figures of bench/results/latest.json
 * (pure: data in, file contents out; generate.ts does the IO). Every section tolerates a suite
 * that did not run: it says so instead of failing the report.
 */
import { checkpointImpactDetails, processingChart, targetsSection } from './checkpoint-impact.js';
import { arr, mdTable, num, type Rec, rec, rowsSection } from './records.js';
import { barChart, compact, lineChart, PALETTE, type LineSeries } from './svg.js';

export { mdTable };

export interface ReportFiles {
  readonly markdown: string;
  /** File name (in the results directory) -> SVG text. */
  readonly charts: ReadonlyMap<string, string>;
}

/** Parses the compact figures the state-access scripts print ("1.31M", "393.0k", "812"). */
export function parseOps(s: unknown): number {
  if (typeof s === 'number') return s;
  if (typeof s !== 'string') return Number.NaN;
  const m = /^([\d.]+)\s*([kMG]?)$/.exec(s.trim());
  if (m === null) return Number.NaN;
  return Number(m[1]) * ({ '': 1, k: 1e3, M: 1e6, G: 1e9 } as Record<string, number>)[m[2]];
}

const mb = (bytes: number): string =>
  Number.isFinite(bytes) ? (bytes / 1048576 >= 100 ? (bytes / 1048576).toFixed(0) : (bytes / 1048576).toFixed(2)) : '–';
const ms = (v: number): string =>
  !Number.isFinite(v) ? '–' : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
const pct = (a: number, b: number): string =>
  Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${((100 * a) / b).toFixed(a / b < 0.1 ? 2 : 0)}%` : '–';
const sizeLabel = (mbValue: number): string =>
  mbValue >= 1024 ? `${+(mbValue / 1024).toFixed(2)} GB` : `${mbValue} MB`;

interface RatioRow {
  readonly operation: string;
  readonly ours: number;
  readonly raw: number;
}

/** The [operation, ours, raw, ratio] rows the state-access scripts record. */
function ratioRows(section: Rec | undefined): RatioRow[] {
  return arr(section?.ratios).map((r) => {
    const vals = Object.values(r);
    return { operation: String(vals[0]), ours: parseOps(vals[1]), raw: parseOps(vals[2]) };
  });
}

const VARIANT_LABEL: Record<string, string> = {
  full: 'full snapshot (heap, filesystem)',
  'leveldb-incremental': 'LevelDB incremental',
  changelog: 'changelog(filesystem)',
};
const VARIANT_COLOR: Record<string, string> = {
  full: PALETTE[1],
  'leveldb-incremental': PALETTE[0],
  changelog: PALETTE[2],
};

export function buildReport(data: Rec): ReportFiles {
  const charts = new Map<string, string>();
  const md: string[] = [];
  const run = rec(data.run);
  const quick = run?.quick === true;
  md.push('# streamstate benchmark report', '');
  md.push(
    `Generated from \`bench/results/latest.json\` by \`node dist/bench/report/generate.js\`; reproduce with \`npm run bench\`${run === undefined ? '' : quick ? '' : ' (this is a full run)'}.`,
  );
  if (quick)
    md.push(
      '',
      '> **Quick run** (`npm run bench -- --quick`): small states and few samples; for a smoke test, not for quoting.',
    );
  md.push('');
  md.push(...machineSection(run, data));

  const heap = rec(data.stateAccessHeap);
  const level = rec(data.stateAccessLeveldb);
  const sizes = rec(data.checkpointSizes);
  const cl = rec(data['changelog-checkpoint']);
  const s3 = rec(data['s3-storage']);
  const pause = rec(data.snapshotPauseHeap);
  const sp = rec(data['savepoint-throughput']);
  const scaling = rec(data.changelogScaling);

  md.push('## Headline', '');
  md.push(...headline(heap, level, pause, s3, sp, sizes));
  md.push(...checkpointHeadline(sizes, scaling));
  md.push(...targetsSection(data));

  md.push('## Charts', '');
  charts.set('checkpoint-duration.svg', durationChart(sizes));
  charts.set('checkpoint-bytes.svg', bytesChart(sizes));
  charts.set(
    'state-access-heap.svg',
    accessChart('Heap backend state access vs raw Map', heap, 'heap backend', 'raw Map', PALETTE[2], '#9a9a9a'),
  );
  charts.set(
    'state-access-leveldb.svg',
    accessChart(
      'LevelDB backend state access vs raw classic-level',
      level,
      'leveldb backend',
      'raw classic-level',
      PALETTE[0],
      '#9a9a9a',
    ),
  );
  charts.set('changelog-recovery.svg', recoveryChart(cl));
  charts.set('storage-throughput.svg', storageChart(s3, pause, sp, sizes));
  charts.set(
    'processing-during-checkpoint.svg',
    processingChart([rec(data.processingDuringCheckpoint), rec(data.processingDuringCheckpoint1G)]),
  );
  md.push('![checkpoint duration versus state size](checkpoint-duration.svg)', '');
  md.push('![bytes written per checkpoint versus state size](checkpoint-bytes.svg)', '');
  md.push('![heap state access](state-access-heap.svg)', '');
  md.push('![leveldb state access](state-access-leveldb.svg)', '');
  md.push('![changelog recovery time versus log since materialization](changelog-recovery.svg)', '');
  md.push('![write throughput versus raw baselines](storage-throughput.svg)', '');
  md.push('![records per second during a checkpoint](processing-during-checkpoint.svg)', '');

  md.push('## Details', '');
  md.push(...accessDetails('State access: heap backend vs raw Map (`bench/state-access.ts`)', heap));
  md.push(...accessDetails('State access: leveldb backend vs raw classic-level (`bench/leveldb-state.ts`)', level));
  md.push(...sizesDetails(sizes));
  md.push(...changelogDetails(cl));
  md.push(...changelogScalingDetails(scaling));
  md.push(
    ...rowsSection(
      'Heap snapshot pause (`bench/snapshot-pause.ts`)',
      pause,
      'rows',
      'Synchronous pause of a heap snapshot vs entries (8-byte values), async part, and the raw baselines of the same run (Map copy, file write + fsync).',
    ),
  );
  md.push(...leveldbCheckpointDetails(rec(data.leveldbCheckpoint)));
  md.push(...savepointDetails(sp, rec(data.convertLarge)));
  md.push(...s3Details(s3));
  md.push(
    ...rowsSection(
      'Durable before complete: checkpoints with and without the data-file fsync (`bench/durability.ts`)',
      rec(data.durability),
      'rows',
      "Whole checkpoints on local disk (4 subtasks writing through the coordinator's streams, then `_metadata`), with every data file fsynced before `_metadata` (what streamstate does) and without (before 2026-12-04), in alternating rounds; medians. Directory and `_metadata` fsyncs happen in both modes.",
    ),
  );
  md.push(
    ...rowsSection(
      'Unaligned checkpoints under backpressure (`bench/unaligned.ts`)',
      rec(data.unaligned),
      'rows',
      'The reference runtime with a slow sink, every channel holding a backlog of N records; aligned (the baseline) and unaligned runs alternate. Checkpoint duration is the median trigger-to-last-acknowledgement of the checkpoints of a run (the final, always aligned one left out), then the median over rounds; channel-state bytes are the in-flight records an unaligned checkpoint stored.',
    ),
  );
  md.push(...checkpointImpactDetails(data));
  return { markdown: `${md.join('\n')}\n`, charts };
}

/** Sections recorded outside the run (a suite re-run later on its own, or kept from an earlier run), with their dates. */
function sectionsOutsideRun(run: Rec, data: Rec): string[] {
  const start = Date.parse(String(run.startedAt));
  const end = start + num(run.totalSeconds) * 1000;
  if (!Number.isFinite(start)) return [];
  const out: string[] = [];
  for (const [key, value] of Object.entries(data)) {
    const at = Date.parse(String(rec(value)?.recordedAt));
    if (key !== 'run' && Number.isFinite(at) && (at < start || at > end + 60_000))
      out.push(`${key} (${String(rec(value)?.recordedAt).slice(0, 16).replace('T', ' ')} UTC)`);
  }
  return out;
}

function machineSection(run: Rec | undefined, data: Rec): string[] {
  if (run === undefined)
    return ['_Machine and run information missing (the suites were run one by one, not through `npm run bench`)._', ''];
  const m = rec(run.machine) ?? {};
  const load = rec(run.load) ?? {};
  const out = ['## Machine and run', ''];
  out.push(
    mdTable([
      { what: 'CPU', value: `${String(m.cpuModel ?? '?')}, ${String(m.cpus ?? '?')} vCPU` },
      { what: 'memory', value: `${String(m.memGiB ?? '?')} GiB` },
      { what: 'OS', value: String(m.os ?? '?') },
      { what: 'Node', value: String(m.node ?? '?') },
      {
        what: 'run',
        value: `${String(run.startedAt ?? '?')}, ${quick(run)}, ${num(run.totalSeconds).toFixed(0)} s in total`,
      },
      {
        what: 'load average during the run',
        value: `start ${fmtLoad(load.start)}, mean ${num(load.mean).toFixed(2)}, max ${num(load.max).toFixed(2)} (1-min; other work on the machine shows here)`,
      },
    ]),
  );
  const suites = arr(run.suites);
  if (suites.length > 0)
    out.push(
      'Suites: ' +
        suites.map((s) => `${String(s.name)} ${String(s.status)} (${num(s.seconds).toFixed(1)} s)`).join(', ') +
        '.',
      '',
    );
  const outside = sectionsOutsideRun(run, data);
  if (outside.length > 0)
    out.push(`Recorded outside this run (on the same machine, by the suite alone): ${outside.join(', ')}.`, '');
  return out;
}

const quick = (run: Rec): string => (run.quick === true ? 'quick mode' : 'full mode');
const fmtLoad = (v: unknown): string => (Array.isArray(v) ? v.map((x) => num(x).toFixed(2)).join(' / ') : '?');

/** Full heap checkpoint MB/s at the largest swept size, with the raw sequential write of the same bytes. */
function fullVersusRaw(sizes: Rec | undefined): { stateMB: number; ours: number; raw: number } | undefined {
  const raws = arr(sizes?.rawWrites);
  const w = raws[raws.length - 1];
  if (w === undefined) return undefined;
  const full = sizeSeries(sizes).find(
    (s) => s.variant === 'full' && s.pattern === 'rate' && s.stateMB === num(w.stateMB),
  );
  if (full === undefined) return undefined;
  return {
    stateMB: full.stateMB,
    ours: full.meanBytesPerCheckpoint / 1048576 / (full.medianMs / 1000),
    raw: num(w.MBps),
  };
}

function headline(
  heap: Rec | undefined,
  level: Rec | undefined,
  pause: Rec | undefined,
  s3: Rec | undefined,
  sp: Rec | undefined,
  sizes: Rec | undefined,
): string[] {
  const rows: Array<Record<string, string>> = [];
  const add = (what: string, ours: number, raw: number, baseline: string, unit: string): void => {
    if (!Number.isFinite(ours) && !Number.isFinite(raw)) return;
    rows.push({
      what,
      streamstate: `${compact(ours)} ${unit}`,
      'raw baseline (same run)': `${compact(raw)} ${unit} (${baseline})`,
      ratio: pct(ours, raw),
    });
  };
  const pick = (rows2: RatioRow[], op: string): RatioRow | undefined => rows2.find((r) => r.operation === op);
  const h = ratioRows(heap);
  for (const op of ['ValueState get+update', 'MapState get', 'ListState add']) {
    const r = pick(h, op);
    if (r) add(`heap ${op}`, r.ours, r.raw, 'raw Map', 'ops/s');
  }
  const l = ratioRows(level);
  for (const op of [
    'ValueState get',
    'ValueState update',
    'ValueState update, one synchronous burst',
    'MapState get',
  ]) {
    const r = pick(l, op);
    if (r)
      add(
        `leveldb ${op}`,
        r.ours,
        r.raw,
        op.includes('update') ? 'raw classic-level batch put' : 'raw classic-level getSync',
        'ops/s',
      );
  }
  const fr = fullVersusRaw(sizes);
  if (fr !== undefined)
    add(
      `full heap checkpoint, ${sizeLabel(fr.stateMB)} of 1 KB values`,
      fr.ours,
      fr.raw,
      'sequential file write + fsync',
      'MB/s',
    );
  const pr = arr(pause?.rows);
  const last = pr[pr.length - 1];
  if (last !== undefined)
    add(
      `heap snapshot write, ${compact(num(last.entries))} entries of 8 B`,
      num(last['async MB/s']),
      num(last['raw write MB/s']),
      'sequential file write + fsync',
      'MB/s',
    );
  const local = rec(s3?.local);
  const remote = rec(s3?.s3);
  if (local)
    add(
      'checkpoint write, local filesystem',
      num(local.writeMBps),
      num(rec(s3?.rawFileWrite)?.MBps),
      'file write + fsync',
      'MB/s',
    );
  if (remote)
    add(
      'checkpoint write, S3 (s3rver on loopback)',
      num(remote.writeMBps),
      num(rec(s3?.rawS3Put)?.MBps),
      'raw S3 PutObject',
      'MB/s',
    );
  const mem = rec(rec(sp?.memory)?.canonical);
  const raw = rec(sp?.raw);
  if (mem && raw)
    add(
      'canonical savepoint write (heap)',
      num(mem.bytes) / 1048576 / (num(mem.ms) / 1000),
      num(raw.bytes) / 1048576 / (num(raw.ms) / 1000),
      'serialize + write the same entries',
      'MB/s',
    );
  if (rows.length === 0) return ['_No throughput suites in this run._', ''];
  return [
    mdTable(rows),
    'Ratios above 100% are possible where the raw baseline does more work per call (e.g. allocating a list read).',
    '',
  ];
}

interface Series {
  variant: string;
  pattern: string;
  stateMB: number;
  changesPerCheckpoint: number;
  checkpoints: number;
  medianMs: number;
  p99Ms: number;
  meanBytesPerCheckpoint: number;
  writeAmplification: number;
}

function sizeSeries(sizes: Rec | undefined): Series[] {
  return arr(sizes?.series).map((r) => ({
    variant: String(r.variant),
    pattern: String(r.pattern),
    stateMB: num(r.stateMB),
    changesPerCheckpoint: num(r.changesPerCheckpoint),
    checkpoints: num(r.checkpoints),
    medianMs: num(r.medianMs),
    p99Ms: num(r.p99Ms),
    meanBytesPerCheckpoint: num(r.meanBytesPerCheckpoint),
    writeAmplification: num(r.writeAmplification),
  }));
}

function checkpointHeadline(sizes: Rec | undefined, scaling: Rec | undefined): string[] {
  const all = sizeSeries(sizes);
  if (all.length === 0) return ['_Checkpoint-size sweep not run._', ''];
  const largest = Math.max(...all.map((s) => s.stateMB));
  const full = all.find((s) => s.variant === 'full' && s.stateMB === largest && s.pattern === 'rate');
  const rows = all
    .filter((s) => s.stateMB === largest)
    .map((s) => ({
      [`checkpoint, ${sizeLabel(largest)} state`]: VARIANT_LABEL[s.variant] ?? s.variant,
      'keys changed per interval':
        s.pattern === 'rate' ? `${s.changesPerCheckpoint} (1%)` : `${s.changesPerCheckpoint} (fixed)`,
      'median ms': ms(s.medianMs),
      'p99 ms': ms(s.p99Ms),
      'MB per checkpoint': mb(s.meanBytesPerCheckpoint),
      'of a full snapshot': pct(s.meanBytesPerCheckpoint, full?.meanBytesPerCheckpoint ?? Number.NaN),
      'write amplification': s.writeAmplification.toFixed(2),
    }));
  const t = rec(sizes?.targets);
  const out = [mdTable(rows)];
  if (t !== undefined) {
    const sizesList = (Array.isArray(sizes?.sizesMb) ? (sizes!.sizesMb as number[]) : []).map(sizeLabel).join(', ');
    out.push(
      `Targets (issue 4), measured on ${sizesList}:`,
      '',
      `- changelog checkpoint duration within 2x across the state-size range (fixed ${String(sizes?.fixedChanges)} changed keys per interval), size by size in this sweep: ` +
        `**${num(t.changelogDurationSpread).toFixed(2)}x** — ${t.changelogDurationWithin2x === true ? 'met' : 'NOT met'} ` +
        `(medians ${all
          .filter((s) => s.variant === 'changelog' && s.pattern === 'fixed')
          .map((s) => `${ms(s.medianMs)} ms @ ${sizeLabel(s.stateMB)}`)
          .join(', ')})`,
      ...(scaling === undefined ? [] : [scalingTargetLine(scaling)]),
      `- bytes per checkpoint ≤ 2% of a full snapshot at a 1% change rate: worst **${(100 * num(t.changelogWorstBytesShareOfFull)).toFixed(2)}%** — ${t.changelogBytesWithin2Pct === true ? 'met' : 'NOT met'}`,
      '',
    );
  }
  return out;
}

/** The 2x target as the interleaved measurement (changelog-scaling.ts) sees it. */
function scalingTargetLine(scaling: Rec): string {
  const rows = arr(scaling.rows);
  return (
    `- the same target measured with all sizes alive in one process and checkpointed round-robin (\`bench/changelog-scaling.ts\`, ${String(scaling.changesPerCheckpoint)} changed keys per interval): ` +
    `**${num(scaling.spread).toFixed(2)}x** — ${scaling.within2x === true ? 'met' : 'NOT met'} (medians ${rows.map((r) => `${ms(num(r.medianMs))} ms @ ${sizeLabel(num(r.stateMB))}`).join(', ')})`
  );
}

function changelogScalingDetails(scaling: Rec | undefined): string[] {
  const title = '### Changelog checkpoint duration vs state size, interleaved (`bench/changelog-scaling.ts`)';
  if (scaling === undefined) return [title, '', '_not run_', ''];
  return [
    title,
    '',
    `One changelog(filesystem) job per size, all loaded, materialized and alive at once, checkpointed round-robin in a rotating order for ${String(scaling.rounds)} rounds; ` +
      `each round changes ${String(scaling.changesPerCheckpoint)} keys of ${String(scaling.valueBytes)} B in every job. Machine load and GC hit every size alike. Spread (largest / smallest median): **${num(scaling.spread).toFixed(2)}x**.`,
    '',
    mdTable(
      arr(scaling.rows).map((r) => ({
        state: sizeLabel(num(r.stateMB)),
        keys: num(r.keys),
        checkpoints: num(r.checkpoints),
        'median ms': ms(num(r.medianMs)),
        'p90 ms': ms(num(r.p90Ms)),
        'max ms': ms(num(r.maxMs)),
        'MB per checkpoint': mb(num(r.medianBytes)),
      })),
    ),
  ];
}

function durationChart(sizes: Rec | undefined): string {
  const all = sizeSeries(sizes);
  const series: LineSeries[] = [];
  for (const variant of ['full', 'leveldb-incremental', 'changelog']) {
    for (const pattern of ['fixed', 'rate']) {
      const pts = all
        .filter((s) => s.variant === variant && s.pattern === pattern)
        .map((s) => [s.stateMB, s.medianMs] as const);
      if (pts.length === 0) continue;
      const what = pattern === 'fixed' ? `${String(sizes?.fixedChanges ?? '')} keys changed` : '1% of keys changed';
      series.push({
        name: `${VARIANT_LABEL[variant]}, ${what}`,
        color: VARIANT_COLOR[variant],
        dashed: pattern === 'rate',
        points: pts,
      });
    }
  }
  return lineChart({
    title: 'Checkpoint duration vs state size',
    subtitle: `median of each series; 1 KB values; solid: fixed number of changed keys per interval, dashed: 1% of keys`,
    xLabel: 'state size (MB)',
    yLabel: 'checkpoint duration (ms)',
    xLog: true,
    yLog: true,
    series,
  });
}

function bytesChart(sizes: Rec | undefined): string {
  const all = sizeSeries(sizes);
  const series: LineSeries[] = [];
  for (const variant of ['full', 'leveldb-incremental', 'changelog']) {
    for (const pattern of variant === 'full' ? ['rate'] : ['fixed', 'rate']) {
      const pts = all
        .filter((s) => s.variant === variant && s.pattern === pattern)
        .map((s) => [s.stateMB, s.meanBytesPerCheckpoint / 1048576] as const);
      if (pts.length === 0) continue;
      const what =
        variant === 'full'
          ? 'whole state every time'
          : pattern === 'fixed'
            ? `${String(sizes?.fixedChanges ?? '')} keys changed`
            : '1% of keys changed';
      series.push({
        name: `${VARIANT_LABEL[variant]}, ${what}`,
        color: VARIANT_COLOR[variant],
        dashed: pattern === 'rate' && variant !== 'full',
        points: pts,
      });
    }
  }
  return lineChart({
    title: 'Bytes written per checkpoint vs state size',
    subtitle: 'mean over the series; new files only (files shared with the previous checkpoint are not written again)',
    xLabel: 'state size (MB)',
    yLabel: 'MB written per checkpoint',
    xLog: true,
    yLog: true,
    series,
  });
}

function accessChart(
  title: string,
  section: Rec | undefined,
  ours: string,
  raw: string,
  oursColor: string,
  rawColor: string,
): string {
  const rows = ratioRows(section);
  return barChart({
    title,
    subtitle:
      section === undefined
        ? 'not run'
        : `${compact(num(section.numKeys))} keys; operations per second, each including setCurrentKey for ours`,
    xLabel: 'operations per second',
    series: [
      { name: ours, color: oursColor },
      { name: raw, color: rawColor },
    ],
    groups: rows.map((r) => ({ label: r.operation, values: [r.ours, r.raw] })),
  });
}

function recoveryChart(cl: Rec | undefined): string {
  const rec2 = arr(cl?.recovery);
  return lineChart({
    title: 'Changelog recovery time vs log since the last materialization',
    subtitle:
      cl === undefined
        ? 'not run'
        : `changelog(filesystem), ${String(cl.stateMB)} MB state, ${String(cl.changesPerCheckpoint)} keys changed per checkpoint interval; restore = open + replay`,
    xLabel: 'checkpoint intervals of log since materialization',
    yLabel: 'restore time (ms)',
    series: [
      {
        name: 'restore (median)',
        color: PALETTE[2],
        points: rec2.map((r) => [num(r.intervalsSinceMaterialization), num(r.restoreMs)] as const),
      },
    ],
    formatX: (v) => String(v),
  });
}

function storageChart(
  s3: Rec | undefined,
  pause: Rec | undefined,
  sp: Rec | undefined,
  sizes: Rec | undefined,
): string {
  const groups: Array<{ label: string; values: number[] }> = [];
  const fr = fullVersusRaw(sizes);
  if (fr !== undefined)
    groups.push({ label: `full heap checkpoint, ${sizeLabel(fr.stateMB)} (1 KB values)`, values: [fr.ours, fr.raw] });
  const pr = arr(pause?.rows);
  const last = pr[pr.length - 1];
  if (last !== undefined)
    groups.push({
      label: `heap snapshot, ${compact(num(last.entries))} entries of 8 B`,
      values: [num(last['async MB/s']), num(last['raw write MB/s'])],
    });
  const local = rec(s3?.local);
  if (local)
    groups.push({
      label: 'checkpoint files, local filesystem',
      values: [num(local.writeMBps), num(rec(s3?.rawFileWrite)?.MBps)],
    });
  const remote = rec(s3?.s3);
  if (remote)
    groups.push({
      label: 'checkpoint files, S3 (s3rver loopback)',
      values: [num(remote.writeMBps), num(rec(s3?.rawS3Put)?.MBps)],
    });
  const mem = rec(rec(sp?.memory)?.canonical);
  const raw = rec(sp?.raw);
  if (mem && raw)
    groups.push({
      label: 'canonical savepoint (heap)',
      values: [num(mem.bytes) / 1048576 / (num(mem.ms) / 1000), num(raw.bytes) / 1048576 / (num(raw.ms) / 1000)],
    });
  return barChart({
    title: 'Write throughput vs raw baselines',
    subtitle: 'MB/s; raw = the same bytes written without streamstate in the same run',
    xLabel: 'MB/s',
    series: [
      { name: 'streamstate', color: PALETTE[0] },
      { name: 'raw baseline', color: '#9a9a9a' },
    ],
    groups,
  });
}

function accessDetails(title: string, section: Rec | undefined): string[] {
  if (section === undefined) return [`### ${title}`, '', '_not run_', ''];
  const results = arr(section.results).map((r) => ({
    case: String(r.name),
    'ops/s': compact(num(r.opsPerSec)),
    '±%': num(r.marginPct).toFixed(1),
    samples: num(r.samples),
  }));
  return [
    `### ${title}`,
    '',
    `${String(section.numKeys)} keys. Per-operation figures (cases marked x1000 run 1000 operations per call).`,
    '',
    mdTable(arr(section.ratios)),
    '<details><summary>all benny cases</summary>',
    '',
    mdTable(results),
    '</details>',
    '',
  ];
}

function sizesDetails(sizes: Rec | undefined): string[] {
  const all = sizeSeries(sizes);
  if (all.length === 0)
    return ['### Checkpoint duration and bytes vs state size (`bench/checkpoint-sizes.ts`)', '', '_not run_', ''];
  const fullOf = (mbv: number, p: string): number =>
    all.find((s) => s.variant === 'full' && s.stateMB === mbv && s.pattern === p)?.meanBytesPerCheckpoint ?? Number.NaN;
  return [
    '### Checkpoint duration and bytes vs state size (`bench/checkpoint-sizes.ts`)',
    '',
    `Values of ${String(sizes?.valueBytes)} B; after a warm-up checkpoint (and, for the changelog, one materialization of the loaded state), ` +
      `checkpoints are taken after either a fixed ${String(sizes?.fixedChanges)} changed keys or 1% of the keys per interval. ` +
      'Bytes = files a checkpoint references that the previous one did not; write amplification = those bytes / bytes of keys and values the job wrote. ' +
      'The changelog rows exclude later materializations (see the next section for their amortized cost).',
    '',
    mdTable(
      all.map((s) => ({
        state: sizeLabel(s.stateMB),
        variant: s.variant,
        changed: s.pattern === 'rate' ? `${s.changesPerCheckpoint} (1%)` : `${s.changesPerCheckpoint} (fixed)`,
        checkpoints: s.checkpoints,
        'median ms': ms(s.medianMs),
        'p99 ms': ms(s.p99Ms),
        'MB/checkpoint': mb(s.meanBytesPerCheckpoint),
        'of full': pct(s.meanBytesPerCheckpoint, fullOf(s.stateMB, s.pattern)),
        'write amp.': s.writeAmplification.toFixed(2),
      })),
    ),
  ];
}

function changelogDetails(cl: Rec | undefined): string[] {
  const title =
    '### Changelog: materialization interval, write amplification, recovery (`bench/changelog-checkpoint.ts`)';
  if (cl === undefined) return [title, '', '_not run_', ''];
  return [
    title,
    '',
    `changelog(filesystem), ${String(cl.stateMB)} MB state (${String(cl.keys)} keys of ${String(cl.valueBytes)} B), ${String(cl.changesPerCheckpoint)} keys changed per interval. ` +
      'Materializing every M checkpoints: bytes per checkpoint include the materializations, amortized.',
    '',
    mdTable(
      arr(cl.intervals).map((r) => ({
        'materialize every': String(r.materializeEvery),
        checkpoints: num(r.checkpoints),
        'median ms': ms(num(r.medianMs)),
        'p99 ms': ms(num(r.p99Ms)),
        'MB/checkpoint': mb(num(r.meanBytesPerCheckpoint)),
        'write amplification': num(r.writeAmplification).toFixed(2),
      })),
    ),
    'Recovery: restore (open the materialization, replay the log on registration) from a checkpoint K intervals after the last materialization — the worst case of a materialization interval of K checkpoints.',
    '',
    mdTable(
      arr(cl.recovery).map((r) => ({
        K: num(r.intervalsSinceMaterialization),
        'log MB': num(r.logMB).toFixed(1),
        'restore ms': ms(num(r.restoreMs)),
      })),
    ),
  ];
}

function leveldbCheckpointDetails(section: Rec | undefined): string[] {
  const title = '### LevelDB checkpoints: full vs incremental, restore (`bench/leveldb-checkpoint.ts`)';
  if (section === undefined) return [title, '', '_not run_', ''];
  const rows = arr(section.runs).flatMap((r) => {
    const first = rec(r.first) ?? {};
    const second = rec(r.second) ?? {};
    return [
      {
        state: `${String(r.stateMb)} MB`,
        mode: String(r.mode),
        checkpoint: 'first',
        'pause ms': ms(num(first.pauseMs)),
        'total ms': ms(num(first.totalMs)),
        'MB written': mb(num(first.bytes)),
        'restore ms': '',
      },
      {
        state: `${String(r.stateMb)} MB`,
        mode: String(r.mode),
        checkpoint: 'after 1% change',
        'pause ms': ms(num(second.pauseMs)),
        'total ms': ms(num(second.totalMs)),
        'MB written': mb(num(second.bytes)),
        'restore ms': ms(num(r.restoreMs)),
      },
    ];
  });
  return [title, '', mdTable(rows)];
}

function savepointDetails(sp: Rec | undefined, large: Rec | undefined): string[] {
  const title = '### Savepoints: canonical vs native, convert (`bench/savepoint-throughput.ts`)';
  if (sp === undefined) return [title, '', '_not run_', ''];
  const rows: Array<Record<string, string>> = [];
  const raw = rec(sp.raw);
  if (raw)
    rows.push({
      backend: 'raw',
      what: 'serialize + write the same entries',
      ms: ms(num(raw.ms)),
      'MB/s': compact(num(raw.bytes) / 1048576 / (num(raw.ms) / 1000)),
      'restore ms': '',
    });
  for (const name of ['memory', 'leveldb', 'leveldb-full']) {
    const b = rec(sp[name]);
    if (!b) continue;
    for (const kind of ['native', 'canonical']) {
      const k = rec(b[kind]);
      if (!k) continue;
      rows.push({
        backend: name,
        what: `${kind}${k.handle !== undefined ? ` (${String(k.handle)})` : ''}`,
        ms: ms(num(k.ms)),
        'MB/s': compact(num(k.bytes) / 1048576 / (num(k.ms) / 1000)),
        'restore ms': ms(num(k.restoreMs)),
      });
    }
  }
  for (const format of ['canonical', 'native']) {
    const c = rec(sp[`convertMemoryToLeveldb_${format}`]);
    if (c)
      rows.push({
        backend: 'memory → leveldb',
        what: `convert (${format})`,
        ms: ms(num(c.ms)),
        'MB/s': compact(num(c.bytes) / 1048576 / (num(c.ms) / 1000)),
        'restore ms': '',
      });
  }
  return [
    title,
    '',
    `${String(sp.sizeMb)} MB of state, ${String(sp.entries)} entries of ${String(sp.valueBytes)} B.`,
    '',
    mdTable(rows),
    ...convertLargeRows(large),
  ];
}

/** The 1 GB convert target (`savepoint-throughput.js --convert-only 1024`). */
function convertLargeRows(large: Rec | undefined): string[] {
  if (large === undefined) return [];
  const rows = ['canonical', 'native'].flatMap((format) => {
    const c = rec(large[`convertMemoryToLeveldb_${format}`]);
    return c === undefined
      ? []
      : [
          {
            convert: `memory → leveldb (${format})`,
            seconds: (num(c.ms) / 1000).toFixed(1),
            'MB/s': compact(num(c.bytes) / 1048576 / (num(c.ms) / 1000)),
            'target ≤ 60 s': num(c.ms) <= 60_000 ? 'met' : 'NOT met',
          },
        ];
  });
  return [
    `Converting ${sizeLabel(num(large.sizeMb))} of state (${String(large.entries)} entries of ${String(large.valueBytes)} B; a ${mb(num(large.savepointBytes))} MB native savepoint of the memory backend):`,
    '',
    mdTable(rows),
  ];
}

function s3Details(s3: Rec | undefined): string[] {
  const title = '### Checkpoint storage: local filesystem vs S3 on loopback (`bench/s3-storage.ts`)';
  if (s3 === undefined) return [title, '', '_not run_', ''];
  const row = (label: string, f: Rec | undefined, raw: Rec | undefined): Record<string, string> => ({
    storage: label,
    'write MB/s': compact(num(f?.writeMBps)),
    'raw write MB/s': compact(num(raw?.MBps)),
    'vs raw': pct(num(f?.writeMBps), num(raw?.MBps)),
    'restore MB/s': compact(num(f?.restoreMBps)),
    'key-group range restore ms': ms(num(f?.rangeRestoreMs)),
  });
  return [
    title,
    '',
    `A checkpoint = ${String(s3.subtasks)} files of ${mb(num(s3.bytesPerSubtask))} MB + _metadata; medians of ${String(s3.rounds)}. S3 requests per checkpoint: ${String(s3.s3RequestsPerCheckpoint)}.`,
    '',
    mdTable([
      row('local filesystem', rec(s3.local), rec(s3.rawFileWrite)),
      row('s3rver on loopback', rec(s3.s3), rec(s3.rawS3Put)),
    ]),
  ];
}
