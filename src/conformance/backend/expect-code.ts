import { expect } from 'vitest';
import { StreamStateError, type ErrorCode } from '../../errors.js';

/** Asserts that `fn` throws a StreamStateError with `code` (and returns it for further checks). */
export function expectThrowsCode(fn: () => unknown, code: ErrorCode): StreamStateError {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  return checkCode(thrown, code);
}

/** Asserts that `promise` (or the promise `fn` returns, or `fn` itself synchronously) fails with `code`. */
export async function expectRejectsCode(
  work: Promise<unknown> | (() => unknown),
  code: ErrorCode,
): Promise<StreamStateError> {
  let thrown: unknown;
  try {
    await (typeof work === 'function' ? work() : work);
  } catch (err) {
    thrown = err;
  }
  return checkCode(thrown, code);
}

function checkCode(thrown: unknown, code: ErrorCode): StreamStateError {
  expect(thrown, `expected a StreamStateError ${code}, but nothing was thrown`).toBeDefined();
  expect(thrown, `expected a StreamStateError ${code}, got ${String(thrown)}`).toBeInstanceOf(StreamStateError);
  const err = thrown as StreamStateError;
  expect(err.code, `wrong code; message: ${err.message}`).toBe(code);
  // Every deliberate error must tell the user something actionable, not just a code.
  expect(err.message.length).toBeGreaterThan(15);
  return err;
}

/** Resolves with `promise`, or fails the test with `what` when it takes longer than `ms`. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
