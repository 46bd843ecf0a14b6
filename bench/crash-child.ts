import { dirname } from 'node:path';
import { mkdirSync } from 'node:fs';
import { LocalBlobStore } from '../src/storage/local-blob-store.js';
import { countingInput, countingJob, runPipeline, type CountOutput } from '../src/testing/index.js';
import { makeProofBackend, proofStorage } from './proof/backends.js';
import { CHILD_FAILED_EXIT, type ChildMessage, type CrashChildConfig } from './proof/crash-protocol.js';
import { DurableCommittedOutput } from './proof/durable-output.js';
import { KillSwitch } from './proof/kill-switch.js';

/**
 * A crash-suite child (bench/proof/crash-driver.ts starts it as dist/bench/crash-child.js): runs the
 * counting job from the job's latest completed checkpoint to the end of its input, committing to a
 * durable transaction log, and kills itself with SIGKILL where its plan says (or is killed by the
 * parent at a random moment). Prints ChildMessage lines on stdout.
 */
function send(msg: ChildMessage): void {
  process.stdout.write(`${JSON.stringify(msg)}\n`);
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2] ?? '') as CrashChildConfig;
  const kill = new KillSwitch(cfg.kill, process.env.STREAMSTATE_CRASH_TRACE ?? null, `[child ${cfg.processNo}]`);
  kill.install();
  mkdirSync(dirname(cfg.outputFile), { recursive: true });
  const storage = proofStorage(kill.wrap(new LocalBlobStore(cfg.checkpointDir)), cfg.job.inlineThreshold);
  const backend = makeProofBackend(cfg.backend, { checkpointStorage: storage, workingDir: cfg.workingDir });
  const output = DurableCommittedOutput.open<CountOutput>(cfg.outputFile, cfg.processNo, () => kill.committed());
  const { job } = cfg;
  const input = countingInput({
    records: job.records,
    keys: job.keys,
    partitions: job.partitions,
    seed: job.inputSeed,
  });
  const started = Date.now();
  send({ type: 'started' });
  const result = await runPipeline(countingJob(input, { parallelism: job.parallelism, jobId: cfg.jobId }), {
    backend,
    checkpointStorage: storage,
    checkpointEvery: job.checkpointEvery,
    numRetainedCheckpoints: job.numRetained,
    seed: cfg.seed,
    output,
    resume: true,
    onEvent: (e) => {
      if (e.type === 'checkpoint-completed' || e.type === 'checkpoint-aborted' || e.type === 'restored')
        kill.trace(`event ${JSON.stringify(e)}`);
      if (e.type === 'restored') send({ type: 'restored', checkpointId: e.checkpointId });
    },
  });
  output.close();
  send({
    type: 'finished',
    counts: kill.counts,
    checkpointsCompleted: result.checkpointsCompleted.length,
    checkpointsAborted: result.checkpointsAborted.length,
    millis: Date.now() - started,
  });
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    const e = err instanceof Error ? err : new Error(String(err));
    send({
      type: 'error',
      name: e.name,
      code: (e as { code?: string }).code ?? null,
      message: e.message,
      stack: e.stack ?? '',
    });
    process.exit(CHILD_FAILED_EXIT);
  },
);
