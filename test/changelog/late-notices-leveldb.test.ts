import { join } from 'node:path';
import { afterEach, describe, it } from 'vitest';
import { leveldb } from '../../backends/leveldb/index.js';
import { changelogNoticeCases, NoticeJob, noticeScenarios } from './notices.js';

/** Issue 12, "Late completion notices", on changelog(leveldb): see late-notices.test.ts. */
let n = 0;
const cases = changelogNoticeCases('leveldb', (root) =>
  leveldb({ workingDir: join(root, `work-${++n}`), writeBufferBytes: 64 * 1024, memtableBytes: 32 * 1024 }),
);

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
