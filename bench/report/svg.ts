/**
 * Hand-written SVG charts for the benchmark report: a line chart (linear or log axes) and a
 * horizontal grouped bar chart. Self-contained files with a white background and a legend, so
 * they read the same in a browser and on GitHub (light or dark theme). No dependencies.
 */

export interface LineSeries {
  readonly name: string;
  readonly color: string;
  readonly dashed?: boolean;
  /** [x, y] pairs; points with a non-positive coordinate on a log axis are dropped. */
  readonly points: ReadonlyArray<readonly [number, number]>;
}

export interface LineChartOptions {
  readonly title: string;
  readonly subtitle?: string;
  readonly xLabel: string;
  readonly yLabel: string;
  readonly xLog?: boolean;
  readonly yLog?: boolean;
  readonly series: readonly LineSeries[];
  readonly formatX?: (v: number) => string;
  readonly formatY?: (v: number) => string;
  readonly width?: number;
  readonly height?: number;
}

export interface BarGroup {
  readonly label: string;
  /** One value per series (NaN: no bar). */
  readonly values: readonly number[];
}

export interface BarChartOptions {
  readonly title: string;
  readonly subtitle?: string;
  readonly xLabel: string;
  readonly series: ReadonlyArray<{ readonly name: string; readonly color: string }>;
  readonly groups: readonly BarGroup[];
  readonly formatValue?: (v: number) => string;
  readonly width?: number;
}

/** Colour-blind-safe palette (Okabe-Ito). */
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000'] as const;

const FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"';

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Compact number: 1.2k, 3.4M, 0.05. */
export function compact(v: number): string {
  const a = Math.abs(v);
  if (a >= 1e9) return `${trim(v / 1e9)}G`;
  if (a >= 1e6) return `${trim(v / 1e6)}M`;
  if (a >= 1e3) return `${trim(v / 1e3)}k`;
  if (a === 0) return '0';
  if (a < 0.01) return v.toExponential(0);
  return trim(v);
}

function trim(v: number): string {
  const s = Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

interface Axis {
  readonly toPx: (v: number) => number;
  readonly ticks: number[];
  readonly minor: number[];
}

/** Log axis over whole decades; labels at 1-2-5 when the range spans few decades. */
function logAxis(min: number, max: number, from: number, to: number): Axis {
  let lo = Math.floor(Math.log10(min));
  let hi = Math.ceil(Math.log10(max));
  if (hi === lo) {
    lo -= 0.5;
    hi += 0.5;
  }
  const toPx = (v: number): number => from + ((Math.log10(v) - lo) / (hi - lo)) * (to - from);
  const decades = hi - lo;
  const ticks: number[] = [];
  const minor: number[] = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
    for (let m = 1; m < 10; m++) {
      const v = m * 10 ** e;
      if (Math.log10(v) < lo - 1e-9 || Math.log10(v) > hi + 1e-9) continue;
      if (m === 1 || (decades <= 3 && (m === 2 || m === 5))) ticks.push(v);
      else minor.push(v);
    }
  }
  return { toPx, ticks, minor };
}

/** Linear axis from 0 (or the data minimum when negative) to a round maximum. */
function linearAxis(min: number, max: number, from: number, to: number): Axis {
  const lo = Math.min(0, min);
  const span = max - lo || 1;
  const raw = span / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const top = Math.ceil(max / step) * step || step;
  const toPx = (v: number): number => from + ((v - lo) / (top - lo)) * (to - from);
  const ticks: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= top + step / 1e6; v += step) ticks.push(+v.toPrecision(12));
  return { toPx, ticks, minor: [] };
}

function header(width: number, height: number, title: string, subtitle?: string): string[] {
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT} font-size="12">`,
    `<title>${escapeXml(title)}</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="16" y="24" font-size="16" font-weight="600" fill="#111">${escapeXml(title)}</text>`,
    ...(subtitle !== undefined
      ? [`<text x="16" y="42" font-size="11.5" fill="#555">${escapeXml(subtitle)}</text>`]
      : []),
  ];
}

export function lineChart(o: LineChartOptions): string {
  const width = o.width ?? 760;
  const height = o.height ?? 440;
  const legendWidth = 230;
  const m = { left: 70, right: legendWidth + 16, top: o.subtitle !== undefined ? 58 : 44, bottom: 52 };
  const px0 = m.left;
  const px1 = width - m.right;
  const py0 = height - m.bottom;
  const py1 = m.top;
  const ok = (v: number, log?: boolean): boolean => Number.isFinite(v) && (!log || v > 0);
  const series = o.series.map((s) => ({ ...s, points: s.points.filter(([x, y]) => ok(x, o.xLog) && ok(y, o.yLog)) }));
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const out = header(width, height, o.title, o.subtitle);
  if (xs.length === 0) {
    out.push(
      `<text x="${(px0 + px1) / 2}" y="${(py0 + py1) / 2}" text-anchor="middle" fill="#777">no data in this run</text>`,
      '</svg>',
    );
    return out.join('\n');
  }
  const fx = o.formatX ?? compact;
  const fy = o.formatY ?? compact;
  const X = o.xLog
    ? logAxis(Math.min(...xs), Math.max(...xs), px0, px1)
    : linearAxis(Math.min(...xs), Math.max(...xs), px0, px1);
  const Y = o.yLog
    ? logAxis(Math.min(...ys), Math.max(...ys), py0, py1)
    : linearAxis(Math.min(...ys), Math.max(...ys), py0, py1);
  out.push(`<g stroke="#eee" stroke-width="1">`);
  for (const v of X.minor)
    out.push(`<line x1="${X.toPx(v).toFixed(1)}" y1="${py1}" x2="${X.toPx(v).toFixed(1)}" y2="${py0}"/>`);
  for (const v of Y.minor)
    out.push(`<line x1="${px0}" y1="${Y.toPx(v).toFixed(1)}" x2="${px1}" y2="${Y.toPx(v).toFixed(1)}"/>`);
  out.push(`</g><g stroke="#d0d0d0" stroke-width="1">`);
  for (const v of X.ticks)
    out.push(`<line x1="${X.toPx(v).toFixed(1)}" y1="${py1}" x2="${X.toPx(v).toFixed(1)}" y2="${py0}"/>`);
  for (const v of Y.ticks)
    out.push(`<line x1="${px0}" y1="${Y.toPx(v).toFixed(1)}" x2="${px1}" y2="${Y.toPx(v).toFixed(1)}"/>`);
  out.push(`</g>`);
  out.push(`<rect x="${px0}" y="${py1}" width="${px1 - px0}" height="${py0 - py1}" fill="none" stroke="#444"/>`);
  out.push(`<g fill="#333" font-size="11">`);
  for (const v of X.ticks)
    out.push(`<text x="${X.toPx(v).toFixed(1)}" y="${py0 + 16}" text-anchor="middle">${escapeXml(fx(v))}</text>`);
  for (const v of Y.ticks)
    out.push(`<text x="${px0 - 6}" y="${(Y.toPx(v) + 4).toFixed(1)}" text-anchor="end">${escapeXml(fy(v))}</text>`);
  out.push(`</g>`);
  const xl = `${o.xLabel}${o.xLog ? ' (log scale)' : ''}`;
  const yl = `${o.yLabel}${o.yLog ? ' (log scale)' : ''}`;
  out.push(`<text x="${(px0 + px1) / 2}" y="${height - 12}" text-anchor="middle" fill="#222">${escapeXml(xl)}</text>`);
  out.push(
    `<text transform="translate(16 ${(py0 + py1) / 2}) rotate(-90)" text-anchor="middle" fill="#222">${escapeXml(yl)}</text>`,
  );
  for (const s of series) {
    if (s.points.length === 0) continue;
    const pts = [...s.points]
      .sort((a, b) => a[0] - b[0])
      .map(([x, y]) => `${X.toPx(x).toFixed(1)},${Y.toPx(y).toFixed(1)}`);
    out.push(
      `<polyline points="${pts.join(' ')}" fill="none" stroke="${s.color}" stroke-width="2.2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`,
    );
    for (const p of pts) {
      const [cx, cy] = p.split(',');
      out.push(
        `<circle cx="${cx}" cy="${cy}" r="3.5" fill="${s.dashed ? '#fff' : s.color}" stroke="${s.color}" stroke-width="1.6"/>`,
      );
    }
  }
  // Legend to the right of the plot.
  const lx = px1 + 16;
  let ly = py1 + 6;
  for (const s of series) {
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 26}" y2="${ly}" stroke="${s.color}" stroke-width="2.2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`,
    );
    out.push(
      `<circle cx="${lx + 13}" cy="${ly}" r="3.5" fill="${s.dashed ? '#fff' : s.color}" stroke="${s.color}" stroke-width="1.6"/>`,
    );
    for (const [i, line] of wrap(s.name, 30).entries())
      out.push(`<text x="${lx + 34}" y="${ly + 4 + i * 14}" fill="#222">${escapeXml(line)}</text>`);
    ly += 14 * wrap(s.name, 30).length + 8;
  }
  out.push('</svg>');
  return out.join('\n');
}

export function barChart(o: BarChartOptions): string {
  const width = o.width ?? 760;
  const labelWidth = 190;
  const barH = 13;
  const groupGap = 12;
  const top = (o.subtitle !== undefined ? 58 : 44) + 18 * Math.ceil(o.series.length / 3);
  const groupH = o.series.length * barH + groupGap;
  const plotH = o.groups.length * groupH;
  const height = top + plotH + 50;
  const px0 = 16 + labelWidth;
  const px1 = width - 70;
  const fv = o.formatValue ?? compact;
  const values = o.groups.flatMap((g) => g.values).filter((v) => Number.isFinite(v));
  const out = header(width, height, o.title, o.subtitle);
  // Legend in rows of three under the title.
  o.series.forEach((s, i) => {
    const x = 16 + (i % 3) * 240;
    const y = (o.subtitle !== undefined ? 58 : 44) + 14 * Math.floor(i / 3) + 4;
    out.push(
      `<rect x="${x}" y="${y - 9}" width="14" height="10" fill="${s.color}"/>`,
      `<text x="${x + 20}" y="${y}" fill="#222">${escapeXml(s.name)}</text>`,
    );
  });
  if (values.length === 0) {
    out.push(
      `<text x="${width / 2}" y="${top + 30}" text-anchor="middle" fill="#777">no data in this run</text>`,
      '</svg>',
    );
    return out.join('\n');
  }
  const X = linearAxis(0, Math.max(...values), px0, px1);
  const py0 = top + plotH;
  out.push(`<g stroke="#e2e2e2">`);
  for (const v of X.ticks)
    out.push(`<line x1="${X.toPx(v).toFixed(1)}" y1="${top - 4}" x2="${X.toPx(v).toFixed(1)}" y2="${py0}"/>`);
  out.push(`</g><g fill="#333" font-size="11">`);
  for (const v of X.ticks)
    out.push(`<text x="${X.toPx(v).toFixed(1)}" y="${py0 + 16}" text-anchor="middle">${escapeXml(fv(v))}</text>`);
  out.push(`</g>`);
  o.groups.forEach((g, gi) => {
    const gy = top + gi * groupH;
    const lines = wrap(g.label, 30);
    const mid = gy + (o.series.length * barH) / 2;
    lines.forEach((line, li) =>
      out.push(
        `<text x="${px0 - 8}" y="${(mid + 4 + (li - (lines.length - 1) / 2) * 13).toFixed(1)}" text-anchor="end" fill="#222">${escapeXml(line)}</text>`,
      ),
    );
    g.values.forEach((v, si) => {
      if (!Number.isFinite(v)) return;
      const y = gy + si * barH;
      const w = Math.max(1, X.toPx(v) - px0);
      out.push(`<rect x="${px0}" y="${y}" width="${w.toFixed(1)}" height="${barH - 2}" fill="${o.series[si].color}"/>`);
      out.push(
        `<text x="${(px0 + w + 4).toFixed(1)}" y="${y + barH - 3}" font-size="10.5" fill="#333">${escapeXml(fv(v))}</text>`,
      );
    });
  });
  out.push(`<line x1="${px0}" y1="${top - 4}" x2="${px0}" y2="${py0}" stroke="#444"/>`);
  out.push(
    `<text x="${(px0 + px1) / 2}" y="${height - 12}" text-anchor="middle" fill="#222">${escapeXml(o.xLabel)}</text>`,
  );
  out.push('</svg>');
  return out.join('\n');
}

function wrap(text: string, max: number): string[] {
  const words = text.split(' ');
  const lines: string[] = [];
  let cur = '';
  for (const w of words) {
    if (cur !== '' && cur.length + 1 + w.length > max) {
      lines.push(cur);
      cur = w;
    } else cur = cur === '' ? w : `${cur} ${w}`;
  }
  if (cur !== '') lines.push(cur);
  return lines;
}
