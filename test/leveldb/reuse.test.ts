import { join } from 'node:path';
import { afterEach, describe, it } from 'vitest';
import { leveldb } from '../../backends/leveldb/index.js';
import { NoticeJob, noticeScenarios, type NoticeBackendCase } from '../changelog/notices.js';

/**
 * Issue 12, "Late completion notices", on leveldb: native incremental checkpoints reference earlier
 * table uploads only where the coordinator's mayReuse says yes; without mayReuse (hand-built
 * options) only the base the newest completion notice confirmed, and an abort notice after a
 * decline drops it. Every retained checkpoint restores after every step.
 */
let n = 0;
const kase: NoticeBackendCase = {
  name: 'leveldb',
  make: (root) =>
    leveldb({ workingDir: join(root, `work-${++n}`), writeBufferBytes: 64 * 1024, memtableBytes: 32 * 1024 }),
};

const open: NoticeJob[] = [];
afterEach(async () => {
  for (const j of open.splice(0)) await j.close();
});

describe.each([true, false])('leveldb, mayReuse given: %s, numRetained 1', (askMayReuse) => {
  it.each(noticeScenarios)('$name', async (scenario) => {
    const job = await NoticeJob.start(kase, { numRetained: 1, askMayReuse });
    open.push(job);
    await scenario.run(job);
  });
});
