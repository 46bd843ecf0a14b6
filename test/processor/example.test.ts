import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../examples/processor.js';
import { tempDir } from '../cli/support.js';

/** examples/processor.ts runs as written and prints what the README shows. */
describe('examples/processor.ts', () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => ({ dir, cleanup } = await tempDir('ss-processor-example-')));
  afterAll(async () => cleanup());

  it('bootstraps, reads, transforms and reads again', async () => {
    const lines: string[] = [];
    await main(dir, (l) => lines.push(l));
    expect(lines.map((l) => l.replace(/key group \d+/, 'key group N')).sort()).toEqual(
      [
        'count user-1 = 3',
        'count user-2 = 5',
        'seen user-1 = page-1, page-7',
        'offset partition-0:100',
        'offset partition-1:250',
        'user-1 (key group N): count, seen',
        'visits.count user-1 = 30',
        'visits.count user-2 = 50',
        'states of visits: count',
      ].sort(),
    );
  });
});
