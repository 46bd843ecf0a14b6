import { BACKEND_ERROR_CLASSES } from 'streamstate/conformance';
import { describe, expect, it } from 'vitest';
import { readDocumentedCodes } from './parity/error-classes.js';

// The published suite carries the class of each backend error code as data (a third party has no
// docs/ERRORS.md to read); this keeps that table and the documentation one rule.
describe('BACKEND_ERROR_CLASSES (streamstate/conformance)', () => {
  it.each(Object.entries(BACKEND_ERROR_CLASSES))('%s is raised as the class docs/ERRORS.md gives it', (code, cls) => {
    expect(readDocumentedCodes().classOf.get(code)).toBe(cls.name);
  });
});
