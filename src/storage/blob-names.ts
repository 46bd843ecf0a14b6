import { randomBytes } from 'node:crypto';
import { FormatError, StreamStateError } from '../errors.js';
import type { DownloadOptions } from './blob-store.js';

/**
 * Blob names are posix-style relative paths ("job/chk-3/_metadata"). Every store validates them
 * the same way so a name that works in memory works on disk and on S3.
 */

/** Throws INVALID_ARGUMENT unless `name` is a non-empty relative path without "." / ".." / empty segments. */
export function checkBlobName(name: string, what = 'blob name'): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new StreamStateError('INVALID_ARGUMENT', `${what} must be a non-empty string; got ${JSON.stringify(name)}.`);
  }
  checkSegments(name, what, false);
  return name;
}

/**
 * A list prefix: "" (everything) or a relative path that may end with "/". Same rules as names
 * otherwise; the last segment may be partial ("job/chk-" matches "job/chk-1/...").
 */
export function checkBlobPrefix(prefix: string): string {
  if (typeof prefix !== 'string') {
    throw new StreamStateError('INVALID_ARGUMENT', `list prefix must be a string; got ${typeof prefix}.`);
  }
  if (prefix.length === 0) return prefix;
  checkSegments(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix, 'list prefix', true);
  return prefix;
}

function checkSegments(name: string, what: string, allowEmptyAll: boolean): void {
  if (name.length === 0 && allowEmptyAll) return;
  if (name.startsWith('/') || /^[a-zA-Z]:/.test(name) || name.includes('\\') || name.includes('\0')) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `${what} ${JSON.stringify(name)} must be a relative posix path (no leading "/", drive letter, backslash or NUL). ` +
        'Pass paths relative to the store root.',
    );
  }
  for (const segment of name.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `${what} ${JSON.stringify(name)} has an empty, "." or ".." segment; names may not escape or alias the store root.`,
      );
    }
  }
}

/** Random lowercase hex of `chars` characters (names of state files, savepoint suffixes). */
export function randomHex(chars: number): string {
  return randomBytes(Math.ceil(chars / 2))
    .toString('hex')
    .slice(0, chars);
}

/** Checks a ranged read's arguments; shared by every store. */
export function checkRange(name: string, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `ranged read of ${name}: offset and length must be non-negative integers; got offset=${offset}, length=${length}.`,
    );
  }
}

/** A download's `maxBytes`, checked (undefined: no bound). Shared by every store's download. */
export function downloadLimit(name: string, opts: DownloadOptions | undefined): number {
  const max = opts?.maxBytes;
  if (max === undefined) return Number.POSITIVE_INFINITY;
  if (!Number.isSafeInteger(max) || max < 0) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `download of ${name}: maxBytes must be a non-negative integer (bytes); got ${String(max)}.`,
    );
  }
  return max;
}

/** The error of a download whose object holds more than the caller's maxBytes. */
export function downloadTooLarge(where: string, maxBytes: number, size?: number): FormatError {
  const holds = size === undefined ? `more than ${maxBytes}` : `${size}`;
  return new FormatError(
    'CORRUPT',
    `${where} holds ${holds} bytes, more than the ${maxBytes} expected (maxBytes); it was modified or replaced, so nothing was downloaded. Restore from another checkpoint.`,
  );
}
