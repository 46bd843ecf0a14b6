import { describe, expect, it } from 'vitest';
import { buildReport, mdTable, parseOps } from '../../bench/report/report.js';
import { barChart, lineChart } from '../../bench/report/svg.js';

const wellFormed = (svg: string): void => {
  expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
  expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
  expect(svg).not.toMatch(/NaN|undefined|Infinity/);
  // every opened group is closed
  expect((svg.match(/<g[ >]/g) ?? []).length).toBe((svg.match(/<\/g>/g) ?? []).length);
};

const series = (variant: string, pattern: string, stateMB: number, medianMs: number, bytes: number) => ({
  variant,
  pattern,
  stateMB,
  keys: stateMB * 1000,
  changesPerCheckpoint: pattern === 'fixed' ? 1000 : stateMB * 10,
  checkpoints: 10,
  medianMs,
  p99Ms: medianMs * 2,
  meanBytesPerCheckpoint: bytes,
  writeAmplification: 1.5,
});

describe('benchmark report', () => {
  it('renders every section and chart when no suite ran', () => {
    const { markdown, charts } = buildReport({});
    expect(markdown).toContain('# streamstate benchmark report');
    expect(markdown).toContain('_Checkpoint-size sweep not run._');
    expect(charts.size).toBe(7);
    for (const svg of charts.values()) wellFormed(svg);
    expect(charts.get('checkpoint-duration.svg')).toContain('no data in this run');
  });

  it('plots checkpoint duration on log axes and evaluates the targets', () => {
    const data = {
      run: {
        quick: false,
        startedAt: '2026-01-01T00:00:00Z',
        totalSeconds: 600,
        machine: { cpuModel: 'AMD EPYC', cpus: 2, memGiB: 24, node: 'v20.20.2', os: 'Linux' },
        load: { start: [1, 1, 1], mean: 1.5, max: 2 },
      },
      checkpointSizes: {
        fixedChanges: 1000,
        sizesMb: [10, 100, 1000],
        targets: {
          changelogDurationSpread: 1.3,
          changelogDurationWithin2x: true,
          changelogWorstBytesShareOfFull: 0.011,
          changelogBytesWithin2Pct: true,
        },
        rawWrites: [{ stateMB: 1000, bytes: 1e9, ms: 1000, MBps: 950 }],
        series: [10, 100, 1000].flatMap((mb) => [
          series('full', 'fixed', mb, mb * 5, mb * 1048576),
          series('full', 'rate', mb, mb * 5, mb * 1048576),
          series('changelog', 'fixed', mb, 3, 1048576),
          series('changelog', 'rate', mb, 2, mb * 10486),
        ]),
      },
    };
    const { markdown, charts } = buildReport(data);
    const duration = charts.get('checkpoint-duration.svg')!;
    wellFormed(duration);
    // 2 variants x 2 patterns, 3 sizes each
    expect((duration.match(/<polyline /g) ?? []).length).toBe(4);
    expect(duration).toContain('(log scale)');
    for (const label of ['>10<', '>100<', '>1k<']) expect(duration).toContain(label);
    expect(markdown).toContain('**1.30x** — met');
    expect(markdown).toContain('AMD EPYC, 2 vCPU');
    expect(markdown).toMatch(/full heap checkpoint, 1000 MB of 1 KB values \| 200 MB\/s \| 950 MB\/s/);
  });

  it('reports the interleaved changelog scaling run next to the size-by-size sweep', () => {
    const rows = [10, 1000].map((mb, i) => ({
      stateMB: mb,
      keys: mb * 1000,
      checkpoints: 40,
      medianMs: 4 + i,
      p90Ms: 9,
      maxMs: 30,
      medianBytes: 1018194,
    }));
    const { markdown } = buildReport({
      checkpointSizes: {
        fixedChanges: 1000,
        sizesMb: [10, 1000],
        targets: {
          changelogDurationSpread: 3.1,
          changelogDurationWithin2x: false,
          changelogWorstBytesShareOfFull: 0.01,
          changelogBytesWithin2Pct: true,
        },
        series: [10, 1000].flatMap((mb) => [
          series('full', 'rate', mb, mb * 5, mb * 1048576),
          series('changelog', 'fixed', mb, mb === 10 ? 9 : 3, 1048576),
        ]),
      },
      changelogScaling: {
        changesPerCheckpoint: 1000,
        valueBytes: 1000,
        rounds: 40,
        rows,
        spread: 1.25,
        within2x: true,
      },
    });
    expect(markdown).toContain('**3.10x** — NOT met');
    expect(markdown).toContain('**1.25x** — met (medians 4.00 ms @ 10 MB, 5.00 ms @ 1000 MB)');
    expect(markdown).toContain('### Changelog checkpoint duration vs state size, interleaved');
    expect(buildReport({}).markdown).toMatch(/interleaved \(`bench\/changelog-scaling.ts`\)\n\n_not run_/);
  });

  it('evaluates the 1 GB convert target per format', () => {
    const { markdown } = buildReport({
      'savepoint-throughput': { sizeMb: 64, entries: 1000, valueBytes: 200 },
      convertLarge: {
        sizeMb: 1024,
        entries: 5064819,
        valueBytes: 200,
        savepointBytes: 1087829282,
        convertMemoryToLeveldb_canonical: { ms: 16707, bytes: 1087826383 },
        convertMemoryToLeveldb_native: { ms: 61000, bytes: 1087826383 },
      },
    });
    expect(markdown).toContain('Converting 1 GB of state');
    expect(markdown).toMatch(/memory → leveldb \(canonical\) \| 16\.7 \| [\d.]+ \| met/);
    expect(markdown).toMatch(/memory → leveldb \(native\) \| 61\.0 \| [\d.]+ \| NOT met/);
  });

  it('puts each issue 15/17 goal next to the figure measured, met or not, and charts processing during checkpoints', () => {
    const pdcRow = (backend: string, idle: number, during: number, ratio: string, p99During: number) => ({
      backend,
      'state MB': 1000,
      'records/s idle': idle,
      'records/s during': during,
      'during/idle': ratio,
      'delay p50/p99/max idle ms': '3.0/4.3/10.1',
      'delay p50/p99/max during ms': `3.5/${p99During}/58.9`,
      'GC share idle/during': '0%/1%',
      'checkpoint s': '65.22',
      'pause ms': '0.9',
    });
    const { markdown, charts } = buildReport({
      processingDuringCheckpoint1G: {
        sizeMb: 1000,
        keys: 5_000_000,
        rounds: 1,
        rows: [pdcRow('filesystem', 300_000, 250_000, '83%', 14.8), pdcRow('memory', 400_000, 190_000, '47%', 38)],
      },
      heapFullSnapshot1G: {
        sizeMb: 1000,
        keys: 5_000_000,
        valueBytes: 200,
        rounds: 3,
        rows: [
          {
            what: 'full snapshot (filesystem)',
            'MB/s': 193,
            'raw MB/s': 223,
            'of raw': '86%',
            'GC ms (share)': '131 (2%)',
            'raw GC ms': 331,
          },
          {
            what: 'restore (filesystem)',
            'MB/s': 24,
            'raw MB/s': 56,
            'of raw': '44%',
            'GC ms (share)': '22460 (51%)',
            'raw GC ms': 5319,
          },
        ],
      },
      convertMaxParallelism: {
        sizeMb: 200,
        entries: 1000,
        rounds: 3,
        ratio: 2.19,
        divisorRatio: 1.39,
        medianPlainMs: 885,
        medianRehashMs: 1941,
        medianDivisorMs: 1226,
      },
      's3-storage': { rawS3Put: { ratio: 0.82, cpuRatio: 0.78 }, s3: { requests: { PutObject: 9, HeadObject: 1 } } },
    });
    const targets = markdown.slice(markdown.indexOf('## Targets'), markdown.indexOf('## Charts'));
    const line = (start: string): string => targets.split('\n').find((l) => l.startsWith(`| ${start}`)) ?? '';
    expect(line('filesystem: records/s')).toMatch(/83%, p99 14.8 ms.*\| yes \|$/);
    expect(line('memory: records/s')).toMatch(/47%, p99 38 ms.*\| no \|$/);
    expect(line('full heap snapshot')).toMatch(/86%.*\| yes \|$/);
    expect(line('heap restore')).toMatch(/44%.*GC 22460 \(51%\).*\| no \|$/);
    expect(line('S3 checkpoint write')).toMatch(/82%.*PutObject 9, HeadObject 1 \| yes \|$/);
    expect(line('convert --max-parallelism')).toMatch(/2.19x.*\| no \|$/);
    expect(line('LevelDB checkpoint upload')).toMatch(/\| not run \|$/);
    const chart = charts.get('processing-during-checkpoint.svg') ?? '';
    wellFormed(chart);
    expect(chart).toContain('filesystem, 1 GB');
    expect(markdown).toContain('Full heap snapshot and restore against the raw limit, 1 GB');
  });

  it('shows a run at another batch size beside the 1 GB figures, without replacing them', () => {
    const row = (backend: string, ratio: string) => ({ backend, 'state MB': 1000, 'during/idle': ratio });
    const { markdown } = buildReport({
      processingDuringCheckpoint1G: { sizeMb: 1000, keys: 5_000_000, rounds: 1, rows: [row('leveldb', '113%')] },
      processingDuringCheckpoint1GBatch100: {
        sizeMb: 1000,
        keys: 5_000_000,
        batch: 100,
        rounds: 3,
        rows: [row('leveldb', '90%')],
      },
    });
    const details = markdown.slice(markdown.indexOf('### Processing during a checkpoint'));
    expect(details).toMatch(/1 round\(s\):\n\n\| backend[\s\S]*\| leveldb \| 1000 \| 113% \|/);
    expect(details).toMatch(
      /yielding every 100 records instead of 1,000 \(`--batch=100`\), 3 round\(s\)[\s\S]*\| leveldb \| 1000 \| 90% \|/,
    );
    // The targets stay those of the measurement (1,000 records per turn).
    const targets = markdown.slice(markdown.indexOf('## Targets'), markdown.indexOf('## Charts'));
    expect(targets).toContain('113%');
    expect(targets).not.toContain('90%');
  });

  it('parses the compact figures of the state-access scripts', () => {
    expect(parseOps('1.31M')).toBeCloseTo(1.31e6);
    expect(parseOps('393.0k')).toBeCloseTo(393e3);
    expect(parseOps('812')).toBe(812);
    expect(parseOps('n/a')).toBeNaN();
  });

  it('names the sections recorded outside the run, with their dates', () => {
    const run = { quick: false, startedAt: '2026-01-01T00:00:00Z', totalSeconds: 600, machine: {}, load: {} };
    const { markdown } = buildReport({
      run,
      stateAccessHeap: { recordedAt: '2026-01-01T00:05:00Z' },
      stateAccessLeveldb: { recordedAt: '2026-01-03T08:12:00Z' },
      convertLarge: { recordedAt: '2025-12-31T10:00:00Z' },
    });
    const line = markdown.split('\n').find((l) => l.startsWith('Recorded outside this run')) ?? '';
    expect(line).toContain('stateAccessLeveldb (2026-01-03 08:12 UTC)');
    expect(line).toContain('convertLarge (2025-12-31 10:00 UTC)');
    expect(line).not.toContain('stateAccessHeap');
    expect(buildReport({ run, stateAccessHeap: { recordedAt: '2026-01-01T00:05:00Z' } }).markdown).not.toContain(
      'Recorded outside this run',
    );
  });

  it('escapes markup in labels and pipes in tables', () => {
    const svg = barChart({
      title: 'a <b> & "c"',
      xLabel: 'x',
      series: [{ name: 's', color: '#000' }],
      groups: [{ label: 'g<1>', values: [5] }],
    });
    wellFormed(svg);
    expect(svg).toContain('a &lt;b&gt; &amp; &quot;c&quot;');
    expect(mdTable([{ a: 'x|y' }])).toContain('x\\|y');
    const line = lineChart({
      title: 't',
      xLabel: 'x',
      yLabel: 'y',
      xLog: true,
      series: [
        {
          name: 's',
          color: '#000',
          points: [
            [0, 1],
            [10, 2],
            [100, 3],
          ],
        },
      ],
    });
    wellFormed(line);
    // the x = 0 point cannot sit on a log axis: dropped, not drawn at -Infinity
    expect((line.match(/<circle /g) ?? []).length).toBe(2 + 1);
  });
});
