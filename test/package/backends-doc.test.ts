import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

/**
 * docs/BACKENDS.md's example of running the backend conformance suite is the one that runs: its
 * code block equals the region between the markers in third-party-backend.test.ts, and its import
 * lines are that file's imports.
 */
const file = (path: string): Promise<string> => readFile(fileURLToPath(new URL(path, import.meta.url)), 'utf8');

it('the docs/BACKENDS.md conformance example is third-party-backend.test.ts, as written', async () => {
  const doc = await file('../../docs/BACKENDS.md');
  const example = await file('./third-party-backend.test.ts');
  const block = /```ts\n(import \{ describeBackendConformance \}[\s\S]*?)```/.exec(doc)?.[1];
  expect(block, 'docs/BACKENDS.md has no describeBackendConformance code block').toBeDefined();
  const lines = (block ?? '').trimEnd().split('\n');
  const imports = lines.filter((l) => l.startsWith('import '));
  const body = lines
    .filter((l) => !l.startsWith('import '))
    .join('\n')
    .trim();
  const region = /\/\/ docs\/BACKENDS\.md:begin\n([\s\S]*?)\/\/ docs\/BACKENDS\.md:end/.exec(example)?.[1];
  expect(region, 'third-party-backend.test.ts has no docs/BACKENDS.md markers').toBeDefined();
  expect(body).toBe((region ?? '').trim());
  const exampleLines = example.split('\n');
  for (const line of imports) expect(exampleLines).toContain(line);
});
