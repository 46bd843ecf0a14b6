import { mkdtemp, rm } from 'node:fs/promises';
import { presetStorage } from '../../src/backend/preset.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { StateBackend } from '../../src/backend/contract.js';
import type { CheckpointStorage } from '../../src/checkpoint/storage.js';
import {
  SeededRandom,
  checkCounts,
  countingInput,
  countingJob,
  runPipeline,
  type CountInput,
  type CountOutput,
  type PipelineEvent,
  type PipelineResult,
  type RunOptions,
} from '../../src/testing/index.js';

/** What a backend under test provides. `scratchDir` is a fresh temp directory, removed after the test. */
export interface ExactlyOnceFixture {
  readonly backend: StateBackend;
  /** Default: the backend's own checkpoint storage. */
  readonly checkpointStorage?: CheckpointStorage;
  readonly cleanup?: () => Promise<void>;
}

export type MakeBackend = (scratchDir: string) => ExactlyOnceFixture | Promise<ExactlyOnceFixture>;

type Input = CountInput[][];

/**
 * End-to-end exactly-once through the pipeline harness (src/testing): random crash points, rescaling
 * on recovery, a crash while a snapshot is in flight, a crash between checkpoint completion and the
 * sink commit, and barrier alignment. Backends add themselves with one call:
 *
 *   describeExactlyOnce('leveldb', (dir) => ({ backend: leveldb({ checkpointDir: join(dir, 'chk'), localDir: join(dir, 'db') }) }));
 */
export function describeExactlyOnce(name: string, makeBackend: MakeBackend): void {
  describe(`exactly-once end to end: ${name}`, () => {
    const cleanups: (() => Promise<void>)[] = [];
    afterEach(async () => {
      while (cleanups.length > 0) await cleanups.pop()!();
    });

    async function fixture(): Promise<ExactlyOnceFixture> {
      const dir = await mkdtemp(join(tmpdir(), 'streamstate-harness-'));
      cleanups.push(() => rm(dir, { recursive: true, force: true }));
      const f = await makeBackend(dir);
      if (f.cleanup) cleanups.push(f.cleanup);
      return f;
    }

    async function run(
      input: Input,
      job: { parallelism: number; sourceParallelism?: number },
      options: Omit<RunOptions<CountOutput>, 'backend'>,
      f?: ExactlyOnceFixture,
    ): Promise<PipelineResult<CountOutput>> {
      const fx = f ?? (await fixture());
      return runPipeline(countingJob(input, job), {
        ...options,
        backend: fx.backend,
        ...(fx.checkpointStorage ? { checkpointStorage: fx.checkpointStorage } : {}),
      });
    }

    function expectExactlyOnce(result: PipelineResult<CountOutput>, input: Input): void {
      const check = checkCounts(result.committed, input);
      expect(check.problems).toEqual([]);
      expect(check.ok).toBe(true);
      const ids = result.output.transactions().map((t) => t.transactionId);
      expect(new Set(ids).size).toBe(ids.length);
    }

    /** Committed output as a sorted canonical list, to compare runs. */
    const canonical = (out: readonly CountOutput[]) => out.map((o) => `${o.key}:${o.count}:${o.sum}`).sort();

    it('commits exactly once with random crash points and random recovery parallelism', async () => {
      const rng = new SeededRandom(2024);
      const runs = 12;
      for (let i = 0; i < runs; i++) {
        const records = 600 + rng.int(900);
        const input = countingInput({
          records,
          keys: 10 + rng.int(60),
          partitions: 1 + rng.int(6),
          seed: rng.int(1e9),
        });
        const parallelism = 1 + rng.int(4);
        const sourceParallelism = 1 + rng.int(3);
        const crashes = [1 + rng.int(records)];
        // A second crash during the replay: the run processes at least `records` + 1 records in all, so it fires.
        if (rng.next() < 0.4 && crashes[0] < records) crashes.push(crashes[0] + 1 + rng.int(records - crashes[0]));
        const recover = [1 + rng.int(4), 1 + rng.int(4)];
        const result = await run(
          input,
          { parallelism, sourceParallelism },
          {
            seed: rng.int(1e9),
            checkpointEvery: 40 + rng.int(300),
            crashAt: crashes,
            recoverWithParallelism: (n) => recover[(n - 1) % 2],
            recoverWithSourceParallelism: (n) => 1 + ((sourceParallelism + n) % 3),
          },
        );
        const context = `run ${i}: records ${records}, p ${parallelism}->${recover.join('/')}, crashes at ${crashes.join(',')}`;
        expect(result.crashes, context).toBe(crashes.length);
        expect(result.restoredFrom.length, context).toBe(crashes.length);
        expect(result.recordsProcessed, context).toBeGreaterThanOrEqual(records);
        const check = checkCounts(result.committed, input);
        expect(check.problems, context).toEqual([]);
        expect(check.ok, context).toBe(true);
      }
    });

    it('gives the same committed output as a run without failure', async () => {
      const input = countingInput({ records: 1500, keys: 40, partitions: 4, seed: 11 });
      const clean = await run(input, { parallelism: 3 }, { seed: 5, checkpointEvery: 100 });
      expect(clean.crashes).toBe(0);
      // About 15 are triggered; a trigger while the previous one still writes is skipped, so a busy machine completes fewer.
      expect(clean.checkpointsCompleted.length).toBeGreaterThanOrEqual(5);
      const crashed = await run(
        input,
        { parallelism: 3 },
        { seed: 6, checkpointEvery: 100, crashAt: [700, 1300], recoverWithParallelism: (n) => (n === 1 ? 2 : 4) },
      );
      expect(crashed.crashes).toBe(2);
      expect(crashed.recordsProcessed).toBeGreaterThan(1500);
      expect(canonical(crashed.committed)).toEqual(canonical(clean.committed));
      expectExactlyOnce(crashed, input);
    });

    for (const [from, to] of [
      [4, 2],
      [2, 4],
    ] as const) {
      it(`rescales on recovery ${from} -> ${to} (keyed state by key group, source offsets and sink transactions by split)`, async () => {
        const input = countingInput({ records: 2000, keys: 80, partitions: 6, seed: from * 10 + to });
        const result = await run(
          input,
          { parallelism: from, sourceParallelism: from },
          {
            seed: 3,
            checkpointEvery: 150,
            crashAt: 1200,
            recoverWithParallelism: to,
            recoverWithSourceParallelism: to,
          },
        );
        expect(result.crashes).toBe(1);
        const restored = result.restoredFrom[0];
        expect(restored.parallelism).toBe(to);
        expect(restored.sourceParallelism).toBe(to);
        expect(restored.checkpointId).not.toBeNull();
        expect(result.checkpointsCompleted.map((c) => c.checkpointId)).toContain(restored.checkpointId);
        // Recovery replayed from the restored offsets, not from the start and not from the crash point.
        expect(result.recordsProcessed).toBeGreaterThan(2000);
        expect(result.recordsProcessed).toBeLessThan(2000 + 1200);
        expectExactlyOnce(result, input);
      });
    }

    it('recovers from a crash while asynchronous snapshot parts are in flight', async () => {
      const f = await fixture();
      const storage = f.checkpointStorage ?? presetStorage(f.backend)!;
      const input = countingInput({ records: 1500, keys: 50, partitions: 4, seed: 21 });
      const events: PipelineEvent[] = [];
      const result = await run(
        input,
        { parallelism: 3 },
        {
          seed: 9,
          checkpointEvery: 200,
          onEvent: (e) => events.push(e),
          // Right after the keyed subtask 1's synchronous part of checkpoint 3: its asynchronous part is still running.
          crashAt: (e) =>
            e.type === 'snapshot' &&
            e.attempt === 0 &&
            e.operatorId === 'keyed' &&
            e.subtaskIndex === 1 &&
            e.checkpointId === 3,
          recoverWithParallelism: 2,
        },
        f,
      );
      expect(result.crashes).toBe(1);
      const completedInFirst = events
        .filter((e) => e.type === 'checkpoint-completed' && e.attempt === 0)
        .map((e) => (e as { checkpointId: number }).checkpointId);
      expect(completedInFirst).not.toContain(3);
      expect(result.restoredFrom[0].checkpointId).toBe(Math.max(...completedInFirst));
      expectExactlyOnce(result, input);
      // Nothing half-written is left: every checkpoint directory still present has its _metadata.
      const files = await storage.listJobFiles(result.jobId);
      const dirs = new Set(files.map((n) => /\/(chk-\d+)\//.exec(n)?.[1]).filter((d): d is string => d !== undefined));
      for (const d of dirs) expect(files).toContain(`${result.jobId}/${d}/_metadata`);
    });

    it('commits, after a restore, the transaction of a checkpoint that completed just before a crash (exactly once)', async () => {
      const input = countingInput({ records: 1200, keys: 30, partitions: 3, seed: 5 });
      // The first checkpoint from 3 on to complete: usually 3, but when a later one finishes first
      // (asynchronous parts take real time) it subsumes 3, which then never completes.
      let crashedAt = -1;
      const result = await run(
        input,
        { parallelism: 2 },
        {
          seed: 4,
          checkpointEvery: 150,
          crashAt: (e) => {
            if (crashedAt >= 0 || e.type !== 'checkpoint-completed' || e.attempt !== 0 || e.checkpointId < 3)
              return false;
            crashedAt = e.checkpointId;
            return true;
          },
          recoverWithParallelism: 3,
        },
      );
      expect(result.crashes).toBe(1);
      expect(crashedAt).toBeGreaterThanOrEqual(3);
      // That checkpoint, or a later one whose acknowledgements had all reached the coordinator before the crash (its
      // completions run one at a time); either way the restored sink state still holds its transactions.
      expect(result.restoredFrom[0].checkpointId).toBeGreaterThanOrEqual(crashedAt);
      const txs = result.output
        .transactions()
        .filter((t) => t.checkpointId === crashedAt && t.transactionId.startsWith('a0-'));
      expect(txs.length).toBeGreaterThan(0);
      // Committed by the restored sinks (attempt 1), not by the crashed attempt.
      for (const t of txs) expect(t.committedInAttempt).toBe(1);
      expectExactlyOnce(result, input);
    });

    it('aligns barriers: a record after a barrier on one channel is not in that checkpoint', async () => {
      const input = countingInput({ records: 1500, keys: 60, partitions: 6, seed: 8 });
      const events: PipelineEvent[] = [];
      const result = await run(
        input,
        { parallelism: 2, sourceParallelism: 3 },
        { seed: 13, checkpointEvery: 97, onEvent: (e) => events.push(e) },
      );
      expectExactlyOnce(result, input);

      // Per keyed subtask and checkpoint: what the sources sent it before their barrier must be exactly what it
      // processed before its snapshot. Without alignment, a post-barrier record of a fast channel gets in.
      const key = (o: { partition: number; offset: number }) => `${o.partition}/${o.offset}`;
      const sentBefore = new Map<string, Set<string>>(); // `${checkpoint}/${subtask}` -> origins
      const processedBefore = new Map<string, Set<string>>();
      const sent: Map<number, string[]>[] = [new Map(), new Map()]; // per subtask: source -> origins so far
      const processed = [new Set<string>(), new Set<string>()];
      let mismatches = 0;
      let compared = 0;
      for (const e of events) {
        if (e.type === 'emit') {
          const perSource = sent[e.target];
          const list = perSource.get(e.subtaskIndex) ?? [];
          list.push(key(e.origin));
          perSource.set(e.subtaskIndex, list);
        } else if (e.type === 'barrier') {
          for (let s = 0; s < 2; s++) {
            const id = `${e.checkpointId}/${s}`;
            const set = sentBefore.get(id) ?? new Set<string>();
            for (const o of sent[s].get(e.subtaskIndex) ?? []) set.add(o);
            sentBefore.set(id, set);
          }
        } else if (e.type === 'record') {
          processed[e.subtaskIndex].add(key(e.origin));
        } else if (e.type === 'snapshot' && e.operatorId === 'keyed') {
          processedBefore.set(`${e.checkpointId}/${e.subtaskIndex}`, new Set(processed[e.subtaskIndex]));
        }
      }
      for (const [id, expected] of sentBefore) {
        const got = processedBefore.get(id);
        expect(got, `checkpoint/subtask ${id} snapshotted`).toBeDefined();
        compared++;
        if (got!.size !== expected.size || [...expected].some((o) => !got!.has(o))) mismatches++;
      }
      expect(compared).toBeGreaterThanOrEqual(2 * 15);
      expect(mismatches).toBe(0);
    });

    it('is deterministic per seed: the same seed gives the same processing order', async () => {
      const input = countingInput({ records: 600, keys: 20, partitions: 3, seed: 1 });
      const order = async (seed: number) => {
        const seen: string[] = [];
        await run(
          input,
          { parallelism: 2 },
          {
            seed,
            checkpointEvery: 100,
            onEvent: (e) =>
              e.type === 'record' && seen.push(`${e.subtaskIndex}:${e.origin.partition}/${e.origin.offset}`),
          },
        );
        return seen;
      };
      const a = await order(77);
      expect(await order(77)).toEqual(a);
      expect(await order(78)).not.toEqual(a);
    });
  });
}
