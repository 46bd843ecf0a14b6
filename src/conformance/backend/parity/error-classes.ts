import { expect } from 'vitest';
import {
  type ErrorCode,
  RestoreError,
  SnapshotError,
  StateAccessError,
  StateMigrationError,
  StateRegistrationError,
  StreamStateError,
} from '../../../errors.js';

/**
 * The class a backend must raise each of its error codes with (the table in docs/ERRORS.md, for
 * the codes a state backend raises; test/conformance/error-classes.test.ts keeps the two equal).
 * The exact class, not a subclass: callers catch by class as well as by code.
 */
export const BACKEND_ERROR_CLASSES = {
  NO_CURRENT_KEY: StateAccessError,
  KEY_OUT_OF_RANGE: StateAccessError,
  NULL_NOT_ALLOWED: StateAccessError,
  STATE_KIND_MISMATCH: StateRegistrationError,
  STATE_NOT_REGISTERED: StateRegistrationError,
  SERIALIZER_INCOMPATIBLE: StateMigrationError,
  KEY_SERIALIZER_MISMATCH: StateMigrationError,
  SNAPSHOT_CANCELLED: SnapshotError,
  MAX_PARALLELISM_MISMATCH: RestoreError,
  INVALID_ARGUMENT: StreamStateError,
  BACKEND_CLOSED: StreamStateError,
} as const satisfies Partial<Record<ErrorCode, typeof StreamStateError>>;

export type BackendErrorCode = keyof typeof BACKEND_ERROR_CLASSES;

/** Asserts `err` is a StreamStateError with `code`, raised as exactly the class the table gives it. */
export function expectDocumentedError(err: unknown, code: BackendErrorCode): StreamStateError {
  expect(err).toBeInstanceOf(StreamStateError);
  const e = err as StreamStateError;
  expect({ code: e.code, class: e.constructor.name }).toEqual({ code, class: BACKEND_ERROR_CLASSES[code].name });
  return e;
}

/** The error `fn` throws synchronously (fails the test when nothing is thrown). */
export function thrownBy(fn: () => unknown, expected: string): unknown {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  if (caught === undefined) throw new Error(`expected ${expected}, but nothing was thrown`);
  return caught;
}

/** The error `work` (a promise, or a function returning one or throwing) fails with (fails the test when it succeeds). */
export async function rejectionOf(work: Promise<unknown> | (() => unknown), expected: string): Promise<unknown> {
  let caught: unknown;
  try {
    await (typeof work === 'function' ? work() : work);
  } catch (err) {
    caught = err ?? new Error('rejected with nothing');
  }
  if (caught === undefined) throw new Error(`expected ${expected}, but it succeeded`);
  return caught;
}

/** Runs `fn`, which must throw synchronously with `code` (and its documented class). */
export function expectThrowsDocumented(fn: () => unknown, code: BackendErrorCode): StreamStateError {
  return expectDocumentedError(thrownBy(fn, code), code);
}

/** Awaits `work` (a promise, or a function returning one or throwing), which must fail with `code`. */
export async function expectRejectsDocumented(
  work: Promise<unknown> | (() => unknown),
  code: BackendErrorCode,
): Promise<StreamStateError> {
  return expectDocumentedError(await rejectionOf(work, code), code);
}
