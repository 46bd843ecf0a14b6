import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { rejectionOf, thrownBy } from '../../../src/conformance/backend/parity/error-classes.js';
import { ErrorCodes, StreamStateError, type ErrorCode } from '../../../src/errors.js';

/**
 * The class every error code must be raised with, read from the table in docs/ERRORS.md (the
 * first column names the class, the second its codes; a "`CODE` is raised as `Class`" note in the
 * last column overrides the row's class for that code).
 */
export interface DocumentedCodes {
  /** code → class name */
  readonly classOf: ReadonlyMap<string, string>;
  /** codes listed in more than one row */
  readonly duplicates: readonly string[];
}

const ERRORS_MD = fileURLToPath(new URL('../../../docs/ERRORS.md', import.meta.url));

export function readDocumentedCodes(text = readFileSync(ERRORS_MD, 'utf8')): DocumentedCodes {
  const classOf = new Map<string, string>();
  const duplicates: string[] = [];
  for (const line of text.split('\n')) {
    const row = /^\| `(\w+)` \| ([^|]*) \| (.*) \|\s*$/.exec(line);
    if (row === null) continue;
    const [, cls, codes, when] = row;
    for (const m of codes.matchAll(/`([A-Z_]+)`/g)) {
      if (classOf.has(m[1])) duplicates.push(m[1]);
      classOf.set(m[1], cls);
    }
    for (const m of when.matchAll(/`([A-Z_]+)` is raised as `(\w+)`/g)) classOf.set(m[1], m[2]);
  }
  return { classOf, duplicates };
}

let cached: DocumentedCodes | undefined;

/** The class docs/ERRORS.md assigns to `code`. */
export function documentedClassOf(code: ErrorCode): string {
  cached ??= readDocumentedCodes();
  const cls = cached.classOf.get(code);
  if (cls === undefined) throw new Error(`docs/ERRORS.md does not list ${code}`);
  return cls;
}

/** Asserts `err` is a StreamStateError with `code`, raised as the class docs/ERRORS.md names for it. */
export function expectDocumentedError(err: unknown, code: ErrorCode): StreamStateError {
  expect(err).toBeInstanceOf(StreamStateError);
  const e = err as StreamStateError;
  expect({ code: e.code, class: e.constructor.name }).toEqual({ code, class: documentedClassOf(code) });
  return e;
}

/** Runs `fn`, which must throw synchronously with `code` (and its documented class). */
export function expectThrowsDocumented(fn: () => unknown, code: ErrorCode): StreamStateError {
  return expectDocumentedError(thrownBy(fn, code), code);
}

/** Awaits `work` (a promise, or a function returning one or throwing), which must fail with `code`. */
export async function expectRejectsDocumented(
  work: Promise<unknown> | (() => unknown),
  code: ErrorCode,
): Promise<StreamStateError> {
  return expectDocumentedError(await rejectionOf(work, code), code);
}

export const ALL_CODES: readonly ErrorCode[] = ErrorCodes;
