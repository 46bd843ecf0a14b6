/** Reading the loosely typed records of latest.json, and rendering Markdown tables (shared by the report's sections). */

export type Rec = Record<string, unknown>;

export const num = (v: unknown): number =>
  typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : Number.NaN;
export const rec = (v: unknown): Rec | undefined =>
  v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Rec) : undefined;
export const arr = (v: unknown): Rec[] => (Array.isArray(v) ? v.filter((x): x is Rec => rec(x) !== undefined) : []);

export function mdTable(rows: ReadonlyArray<Record<string, unknown>>): string {
  if (rows.length === 0) return '_no rows_\n';
  const cols = Object.keys(rows[0]);
  const cell = (v: unknown): string => String(v ?? '').replace(/\|/g, '\\|');
  return (
    [
      `| ${cols.join(' | ')} |`,
      `|${cols.map(() => '---').join('|')}|`,
      ...rows.map((r) => `| ${cols.map((c) => cell(r[c])).join(' | ')} |`),
    ].join('\n') + '\n'
  );
}

/** A section's rows under a title and an intro, or "not run". */
export function rowsSection(title: string, section: Rec | undefined, key: string, intro: string): string[] {
  if (section === undefined) return [`### ${title}`, '', '_not run_', ''];
  return [`### ${title}`, '', intro, '', mdTable(arr(section[key]))];
}
