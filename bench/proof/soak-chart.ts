/** A hand-written SVG line chart (no dependency): one panel per metric, one line per series. */
export interface ChartSeries {
  readonly name: string;
  /** [x, y] points, x ascending. */
  readonly points: readonly (readonly [number, number])[];
}

export interface ChartPanel {
  readonly title: string;
  readonly xLabel: string;
  readonly yLabel: string;
  readonly series: readonly ChartSeries[];
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b'];
const W = 760;
const H = 260;
const M = { left: 70, right: 170, top: 34, bottom: 42 };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function fmt(v: number): string {
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function panel(p: ChartPanel, top: number): string {
  const xs = p.series.flatMap((s) => s.points.map((q) => q[0]));
  const ys = p.series.flatMap((s) => s.points.map((q) => q[1]));
  const xMax = niceMax(Math.max(1e-9, ...xs));
  const yMax = niceMax(Math.max(1e-9, ...ys));
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const X = (x: number) => M.left + (x / xMax) * pw;
  const Y = (y: number) => top + M.top + ph - (y / yMax) * ph;
  const out: string[] = [];
  out.push(
    `<text x="${W / 2}" y="${top + 20}" text-anchor="middle" font-size="14" font-weight="bold">${esc(p.title)}</text>`,
  );
  for (let i = 0; i <= 5; i++) {
    const yv = (yMax * i) / 5;
    const xv = (xMax * i) / 5;
    out.push(`<line x1="${M.left}" y1="${Y(yv)}" x2="${M.left + pw}" y2="${Y(yv)}" stroke="#ddd"/>`);
    out.push(`<text x="${M.left - 6}" y="${Y(yv) + 4}" text-anchor="end" font-size="11">${fmt(yv)}</text>`);
    out.push(`<text x="${X(xv)}" y="${top + M.top + ph + 16}" text-anchor="middle" font-size="11">${fmt(xv)}</text>`);
  }
  out.push(`<rect x="${M.left}" y="${top + M.top}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`);
  out.push(
    `<text x="${M.left + pw / 2}" y="${top + H - 6}" text-anchor="middle" font-size="12">${esc(p.xLabel)}</text>`,
  );
  out.push(
    `<text x="16" y="${top + M.top + ph / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 16 ${top + M.top + ph / 2})">${esc(p.yLabel)}</text>`,
  );
  p.series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    if (s.points.length > 0) {
      const d = s.points.map((q, j) => `${j === 0 ? 'M' : 'L'}${X(q[0]).toFixed(1)},${Y(q[1]).toFixed(1)}`).join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6"/>`);
    }
    const ly = top + M.top + 14 + i * 18;
    out.push(
      `<line x1="${M.left + pw + 12}" y1="${ly - 4}" x2="${M.left + pw + 32}" y2="${ly - 4}" stroke="${color}" stroke-width="3"/>`,
    );
    out.push(`<text x="${M.left + pw + 38}" y="${ly}" font-size="12">${esc(s.name)}</text>`);
  });
  return out.join('\n');
}

export function lineChartSvg(title: string, panels: readonly ChartPanel[], footnote = ''): string {
  const height = panels.length * H + 40 + (footnote ? 20 : 0);
  const body = panels.map((p, i) => panel(p, 30 + i * H)).join('\n');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${height}" viewBox="0 0 ${W} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="16" font-weight="bold">${esc(title)}</text>`,
    body,
    footnote ? `<text x="10" y="${height - 8}" font-size="11" fill="#555">${esc(footnote)}</text>` : '',
    '</svg>',
    '',
  ].join('\n');
}

/** Least-squares slope of y over x. */
export function slope(points: readonly (readonly [number, number])[]): number {
  const n = points.length;
  if (n < 2) return 0;
  let sx = 0;
  let sy = 0;
  for (const [x, y] of points) {
    sx += x;
    sy += y;
  }
  const mx = sx / n;
  const my = sy / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}
