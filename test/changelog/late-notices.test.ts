import { join } from 'node:path';
import { afterEach, describe, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import { memory } from '../../backends/memory/index.js';
import { changelogNoticeCases, NoticeJob, noticeScenarios } from './notices.js';

/**
 * Issue 12, "Late completion notices", on changelog(memory) and changelog(filesystem) (leveldb:
 * late-notices-leveldb.test.ts): segment copies and materializations are reused only where the
 * coordinator's mayReuse says yes; without mayReuse only what the newest completion notice
 * confirmed, and an abort notice after a decline withdraws it. Every retained checkpoint restores
 * after every step.
 */
const cases = [
  ...changelogNoticeCases('memory', () => memory()),
  ...changelogNoticeCases('filesystem', (root) => filesystem({ checkpointDir: join(root, 'cp'), inlineThreshold: 0 })),
];

const open: NoticeJob[] = [];
afterEach(async () => {
  for (const j of open.splice(0)) await j.close();
});

describe.each(cases)('$name, numRetained 1', (kase) => {
  it.each(noticeScenarios)('$name', async (scenario) => {
    const job = await NoticeJob.start(kase, { numRetained: 1, askMayReuse: kase.askMayReuse });
    open.push(job);
    await scenario.run(job);
  });
});
