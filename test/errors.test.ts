import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CheckpointDeclinedError } from '../src/checkpoint/acknowledgement.js';
import * as errors from '../src/errors.js';
import { ErrorCodes, StreamStateError } from '../src/errors.js';
import { readDocumentedCodes } from './conformance/parity/error-classes.js';
import { ERROR_CLASS_GAPS } from './conformance/parity/known-gaps.js';

/**
 * docs/ERRORS.md is the contract for error codes and classes: every code in ErrorCodes is listed
 * exactly once with the class it is raised as, and every place in src/ and backends/ that raises
 * a code on purpose uses that class (sites not fixed yet are listed in known-gaps.ts).
 */

const ROOT = fileURLToPath(new URL('..', import.meta.url));

const CLASSES: ReadonlyMap<string, unknown> = new Map<string, unknown>([
  ...Object.entries(errors).filter(([, v]) => typeof v === 'function'),
  ['CheckpointDeclinedError', CheckpointDeclinedError],
]);

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...sourceFiles(path));
    else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) out.push(path);
  }
  return out;
}

interface Site {
  readonly file: string;
  readonly cls: string;
  readonly code: string;
}

/** Every `new SomeError('CODE'` in the library's sources. */
function constructionSites(): Site[] {
  const sites: Site[] = [];
  for (const file of [...sourceFiles(join(ROOT, 'src')), ...sourceFiles(join(ROOT, 'backends'))]) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/new\s+([A-Z]\w*Error)\(\s*'([A-Z_]+)'/g))
      sites.push({ file: relative(ROOT, file), cls: m[1], code: m[2] });
  }
  return sites;
}

describe('error codes and classes (docs/ERRORS.md)', () => {
  const documented = readDocumentedCodes();

  it('every code is documented exactly once, and the table names no unknown code', () => {
    expect(documented.duplicates).toEqual([]);
    expect([...documented.classOf.keys()].sort()).toEqual([...ErrorCodes].sort());
  });

  it.each([...ErrorCodes])('%s: its documented class exists and is a StreamStateError', (code) => {
    const cls = documented.classOf.get(code)!;
    const ctor = CLASSES.get(cls) as (new (c: typeof code, m: string) => StreamStateError) | undefined;
    expect(ctor, `class ${cls} is not exported`).toBeTypeOf('function');
    const err = new ctor!(code, 'probe');
    expect(err).toBeInstanceOf(StreamStateError);
    expect(err.code).toBe(code);
  });

  it('every construction site in src/ and backends/ uses the documented class (or is a listed gap)', () => {
    const isGap = (s: Site): boolean =>
      ERROR_CLASS_GAPS.some((g) => g.file === s.file && g.cls === s.cls && g.code === s.code);
    const wrong = constructionSites().filter((s) => documented.classOf.get(s.code) !== s.cls && !isGap(s));
    expect(
      wrong.map(
        (s) =>
          `${s.file}: new ${s.cls}('${s.code}') — docs/ERRORS.md says ${documented.classOf.get(s.code) ?? 'nothing'}`,
      ),
    ).toEqual([]);
  });

  it('the sample sites this test is built on are found (the scan can fail)', () => {
    const sites = constructionSites();
    expect(sites.length).toBeGreaterThan(100);
    expect(sites).toContainEqual({
      file: join('src', 'backend', 'keyed-rules.ts'),
      cls: 'StateAccessError',
      code: 'NO_CURRENT_KEY',
    });
  });
});
