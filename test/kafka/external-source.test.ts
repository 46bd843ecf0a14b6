import { describe, expect, it } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import type { OperatorListState } from '../../src/state/types.js';
import {
  ExternalSourceSubtask,
  type PipelineSource,
  type PipelineSourceSubtaskContext,
} from '../../src/testing/external-source.js';
import {
  checkCounts,
  countingInput,
  countingJob,
  runPipeline,
  type CountInput,
  type RecordOrigin,
} from '../../src/testing/index.js';

/**
 * The runner's hook for sources fed from outside (what streamstate/kafka plugs into), without a broker:
 * records are handed over asynchronously, a few at a time, so the runner often finds every buffer empty
 * while the input has not ended.
 */
class TrickleSubtask extends ExternalSourceSubtask<CountInput> {
  private readonly positions: { partition: number; offset: number }[];
  private readonly state: OperatorListState<{ partition: number; offset: number }>;
  private buffered: { value: CountInput; origin: RecordOrigin }[] = [];
  private fetched: number[];
  private waiting: Promise<void> | null = null;

  constructor(
    ctx: PipelineSourceSubtaskContext,
    private readonly input: readonly (readonly CountInput[])[],
  ) {
    super(ctx.operatorId, ctx.subtaskIndex, ctx.operatorBackend);
    this.state = ctx.operatorBackend.getListState('trickle-offsets');
    this.positions = ctx.restoring
      ? this.state.get().map((p) => ({ ...p }))
      : input
          .map((_, partition) => ({ partition, offset: 0 }))
          .filter((p) => p.partition % ctx.parallelism === ctx.subtaskIndex);
    this.fetched = this.positions.map((p) => p.offset);
  }

  get exhausted(): boolean {
    return this.buffered.length === 0;
  }

  next(): { value: CountInput; origin: RecordOrigin } | null {
    const r = this.buffered.shift();
    if (!r) return null;
    this.positions.find((p) => p.partition === r.origin.partition)!.offset = r.origin.offset + 1;
    return r;
  }

  waitForInput(): Promise<void> | null {
    if (this.buffered.length > 0) return Promise.resolve();
    if (this.positions.every((p, i) => this.fetched[i] >= this.input[p.partition].length)) return null;
    // A "fetch" of up to 3 records per partition, one macrotask later.
    this.waiting ??= new Promise<void>((resolve) =>
      setImmediate(() => {
        this.positions.forEach((p, i) => {
          const records = this.input[p.partition];
          for (let n = 0; n < 3 && this.fetched[i] < records.length; n++, this.fetched[i]++) {
            this.buffered.push({
              value: records[this.fetched[i]],
              origin: { partition: p.partition, offset: this.fetched[i] },
            });
          }
        });
        this.waiting = null;
        resolve();
      }),
    );
    return this.waiting;
  }

  protected prepareSnapshot(): void {
    this.state.update(this.positions.map((p) => ({ ...p })));
  }
}

function trickle(input: readonly (readonly CountInput[])[], opened: number[]): PipelineSource<CountInput> {
  return {
    async openAttempt(ctx) {
      opened.push(ctx.parallelism);
    },
    async createSubtask(ctx) {
      return new TrickleSubtask(ctx, input);
    },
  };
}

describe('runPipeline with an external source (job.source)', () => {
  const input = countingInput({ records: 600, keys: 20, partitions: 5, seed: 3 });

  it('waits for asynchronous input instead of ending, and is exactly once across a crash and a rescale', async () => {
    const opened: number[] = [];
    const { input: _unused, ...job } = countingJob(input, { parallelism: 2 });
    const result = await runPipeline(
      { ...job, source: trickle(input, opened) },
      {
        backend: memory(),
        checkpointEvery: 50,
        crashAt: 333,
        recoverWithParallelism: 3,
        recoverWithSourceParallelism: 3,
      },
    );
    expect(result.crashes).toBe(1);
    expect(opened).toEqual([2, 3]);
    expect(checkCounts(result.committed, input)).toMatchObject({ ok: true, committedRecords: 600 });
  });

  it('refuses a job with both input and source', async () => {
    const job = countingJob(input, { parallelism: 1 });
    await expect(
      runPipeline({ ...job, source: trickle(input, []) }, { backend: memory(), checkpointEvery: 10 }),
    ).rejects.toMatchObject({
      code: 'INVALID_ARGUMENT',
    });
  });
});
