import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memory } from '../../backends/memory/index.js';
import type { KeyedStateBackend, StateBackend } from '../../src/backend/contract.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { decodeMetadata } from '../../src/checkpoint/metadata-codec.js';
import type { CheckpointMetadata } from '../../src/checkpoint/metadata.js';
import { fileKeys } from '../../src/checkpoint/snapshot-files.js';
import { SnapshotError } from '../../src/errors.js';
import { valueState } from '../../src/state/descriptors.js';
import { findGarbage } from '../../src/savepoint/checkpoint-dir.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import {
  SeededRandom,
  checkCounts,
  countingInput,
  countingJob,
  runPipeline,
  type CheckpointingModeOptions,
  type PipelineEvent,
  type PipelineJob,
} from '../../src/testing/index.js';

/**
 * The four checkpointing modes through the reference runtime (docs/RUNTIME.md, "Checkpointing
 * modes"), with seeded random crash points: exactly-once modes commit every key's counts exactly
 * once; at-least-once commits every record at least once (duplicates counted); unaligned
 * checkpoints restore at another parallelism; channel state goes with its checkpoint.
 */

const EXACTLY_ONCE: Record<string, CheckpointingModeOptions> = {
  aligned: {},
  unaligned: { unaligned: true },
  'aligned with timeout': { unaligned: true, alignedTimeout: 12 },
};

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'ss-unaligned-'));
});
afterAll(async () => rm(root, { recursive: true, force: true }));

/** Seeded crash points: `n` distinct record numbers in [lo, hi). */
function crashPoints(seed: number, n: number, lo: number, hi: number): number[] {
  const rng = new SeededRandom(seed);
  const out = new Set<number>();
  while (out.size < n) out.add(lo + rng.int(hi - lo));
  return [...out].sort((a, b) => a - b);
}

async function metadataOf(dir: string, pointer: string): Promise<CheckpointMetadata> {
  return decodeMetadata(await readFile(join(dir, pointer, '_metadata')));
}

const hasChannelState = (md: CheckpointMetadata) => md.operators.some((o) => o.subtasks.some((s) => s.channel));

describe('exactly-once modes: random crashes, every key counted exactly once', () => {
  const input = countingInput({ records: 2400, keys: 60, partitions: 4, seed: 12 });
  for (const [name, mode] of Object.entries(EXACTLY_ONCE)) {
    for (const seed of [1, 2, 3]) {
      it(`${name}, seed ${seed}`, async () => {
        const dir = join(root, `eo-${name.replaceAll(' ', '-')}-${seed}`);
        const crashes = crashPoints(seed * 31, 2, 300, 2200);
        let inFlightRestored = 0;
        const channelStateSeen: number[] = [];
        const result = await runPipeline(countingJob(input, { parallelism: 3, sourceParallelism: 2, jobId: 'job' }), {
          backend: memory(),
          checkpointStorage: localCheckpointStorage(dir),
          checkpointEvery: 150,
          channelCapacity: 12,
          seed,
          crashAt: crashes,
          numRetainedCheckpoints: 100,
          checkpointingMode: mode,
          onEvent: (e: PipelineEvent) => {
            if (e.type === 'in-flight-restored') inFlightRestored += e.records;
          },
        });
        const context = `crashes at ${crashes.join(', ')}`;
        expect(result.crashes, context).toBe(2);
        const check = checkCounts(result.committed, input);
        expect(check.problems, context).toEqual([]);
        expect(check.ok, context).toBe(true);
        for (const c of result.checkpointsCompleted) {
          const md = await metadataOf(dir, c.pointer).catch(() => null);
          if (md && hasChannelState(md)) channelStateSeen.push(c.checkpointId);
        }
        if (name === 'aligned') {
          expect(channelStateSeen).toEqual([]);
          expect(inFlightRestored).toBe(0);
        } else {
          // The difference is real: unaligned checkpoints stored in-flight records.
          expect(channelStateSeen.length, context).toBeGreaterThan(0);
        }
      });
    }
  }

  it('the mode changes what is stored, not what is committed: every mode commits the same output', async () => {
    const outputs: string[][] = [];
    for (const mode of Object.values(EXACTLY_ONCE)) {
      const r = await runPipeline(countingJob(input, { parallelism: 2 }), {
        backend: memory(),
        checkpointEvery: 200,
        seed: 4,
        crashAt: [700, 1600],
        recoverWithParallelism: 3,
        checkpointingMode: mode,
      });
      outputs.push(r.committed.map((o) => `${o.key}:${o.count}:${o.sum}`).sort());
    }
    expect(outputs[1]).toEqual(outputs[0]);
    expect(outputs[2]).toEqual(outputs[0]);
  });
});

describe('under backpressure (a slow sink)', () => {
  const input = countingInput({ records: 1800, keys: 40, partitions: 4, seed: 21 });
  for (const [name, mode] of Object.entries(EXACTLY_ONCE)) {
    it(`${name}: full channels, crashes, exactly once`, async () => {
      const r = await runPipeline(countingJob(input, { parallelism: 2, sourceParallelism: 2 }), {
        backend: memory(),
        checkpointEvery: 150,
        channelCapacity: 24,
        slowSink: 6,
        seed: 8,
        crashAt: crashPoints(77, 2, 300, 1600),
        recoverWithParallelism: (n) => n + 1,
        checkpointingMode: mode,
      });
      expect(r.crashes).toBe(2);
      const check = checkCounts(r.committed, input);
      expect(check.problems).toEqual([]);
      expect(check.ok).toBe(true);
    });
  }
});

describe('unaligned restore at another parallelism', () => {
  const input = countingInput({ records: 2400, keys: 80, partitions: 6, seed: 5 });
  for (const [from, to] of [
    [2, 4],
    [4, 1],
    [3, 2],
  ] as const) {
    it(`${from} -> ${to}: in-flight records placed by key group (keyed) and round-robin (sink)`, async () => {
      let inFlight = 0;
      const restored: PipelineEvent[] = [];
      const result = await runPipeline(countingJob(input, { parallelism: from, sourceParallelism: from }), {
        backend: memory(),
        checkpointEvery: 120,
        channelCapacity: 10,
        seed: from * 7 + to,
        // Crash right after a snapshot of an unaligned checkpoint that stored in-flight records completed.
        crashAt: (e) => e.type === 'checkpoint-completed' && e.attempt === 0 && e.checkpointId >= 5,
        recoverWithParallelism: to,
        recoverWithSourceParallelism: to,
        checkpointingMode: { unaligned: true },
        onEvent: (e) => {
          if (e.type === 'in-flight-restored') {
            inFlight += e.records;
            restored.push(e);
          }
        },
      });
      expect(result.crashes).toBe(1);
      expect(result.restoredFrom[0].parallelism).toBe(to);
      expect(inFlight).toBeGreaterThan(0);
      const check = checkCounts(result.committed, input);
      expect(check.problems).toEqual([]);
      expect(check.ok).toBe(true);
    });
  }
});

describe('aligned checkpoints with a timeout (scheduler steps, deterministic)', () => {
  const input = countingInput({ records: 1500, keys: 30, partitions: 3, seed: 8 });
  const run = async (alignedTimeout: number, dir: string) => {
    const r = await runPipeline(countingJob(input, { parallelism: 2, jobId: 'job' }), {
      backend: memory(),
      checkpointStorage: localCheckpointStorage(dir),
      checkpointEvery: 100,
      channelCapacity: 16,
      seed: 9,
      numRetainedCheckpoints: 100,
      checkpointingMode: { unaligned: true, alignedTimeout },
    });
    expect(checkCounts(r.committed, input).ok).toBe(true);
    let unaligned = 0;
    for (const c of r.checkpointsCompleted) if (hasChannelState(await metadataOf(dir, c.pointer))) unaligned++;
    return unaligned;
  };

  it('a timeout longer than any alignment never switches; a short one switches some checkpoints to unaligned', async () => {
    expect(await run(1_000_000, join(root, 'timeout-long'))).toBe(0);
    expect(await run(1, join(root, 'timeout-short'))).toBeGreaterThan(0);
  });

  // Not asserted: that two runs with one seed switch the same checkpoints. Snapshots write to a real disk,
  // and when their acknowledgements arrive (in scheduler steps) depends on the machine's load.
});

describe('at-least-once', () => {
  interface Rec {
    readonly key: string;
    readonly id: string;
  }
  const partitions: Rec[][] = Array.from({ length: 4 }, (_, p) =>
    Array.from({ length: 500 }, (_, i) => ({ key: `k${(i * 7 + p) % 37}`, id: `${p}:${i}` })),
  );
  const seen = valueState<number>('seen');
  const job: PipelineJob<Rec, string, string> = {
    input: partitions,
    keyBy: (r) => r.key,
    keySerializer: stringSerializer,
    parallelism: 3,
    sourceParallelism: 2,
    process(r, ctx) {
      const s = ctx.state(seen);
      s.update((s.value() ?? 0) + 1);
      ctx.emit(r.id);
    },
  };
  const ids = partitions.flat().map((r) => r.id);

  function duplicatesOf(committed: readonly string[]): { missing: string[]; duplicates: number } {
    const counts = new Map<string, number>();
    for (const id of committed) counts.set(id, (counts.get(id) ?? 0) + 1);
    return {
      missing: ids.filter((id) => !counts.has(id)),
      duplicates: [...counts.values()].reduce((n, c) => n + c - 1, 0),
    };
  }

  it('without a crash: every record exactly once (barriers do not block, nothing is replayed)', async () => {
    const r = await runPipeline(job, {
      backend: memory(),
      checkpointEvery: 100,
      seed: 2,
      checkpointingMode: { guarantee: 'at-least-once' },
    });
    expect(duplicatesOf(r.committed)).toEqual({ missing: [], duplicates: 0 });
  });

  it('random crashes: every record committed at least once, never lost; the duplicates are counted', async () => {
    let total = 0;
    for (const seed of [1, 2, 3, 4]) {
      const crashes = crashPoints(seed * 13, 2, 200, 1900);
      const r = await runPipeline(job, {
        backend: memory(),
        checkpointEvery: 90,
        channelCapacity: 8,
        seed,
        crashAt: crashes,
        checkpointingMode: { guarantee: 'at-least-once' },
      });
      const d = duplicatesOf(r.committed);
      expect(d.missing, `seed ${seed}, crashes at ${crashes.join(', ')}`).toEqual([]);
      expect(r.committed.length).toBe(ids.length + d.duplicates);
      total += d.duplicates;
    }
    // At-least-once differs from exactly-once for real: records after a barrier on an early channel were replayed.
    expect(total).toBeGreaterThan(0);
  });

  it('the same crashes under exactly-once: no duplicates (the contrast)', async () => {
    for (const seed of [1, 2]) {
      const r = await runPipeline(job, {
        backend: memory(),
        checkpointEvery: 90,
        channelCapacity: 8,
        seed,
        crashAt: crashPoints(seed * 13, 2, 200, 1900),
      });
      expect(duplicatesOf(r.committed)).toEqual({ missing: [], duplicates: 0 });
    }
  });
});

describe('options', () => {
  const input = countingInput({ records: 10, keys: 2, partitions: 1 });
  it.each([
    [{ guarantee: 'at-least-once', unaligned: true }, /need exactly-once/],
    [{ alignedTimeout: 5 }, /needs `unaligned: true`/],
    [{ unaligned: true, alignedTimeout: -1 }, /non-negative integer/],
  ] as const)('%j is refused', async (mode, message) => {
    await expect(
      runPipeline(countingJob(input, { parallelism: 1 }), {
        backend: memory(),
        checkpointEvery: 5,
        checkpointingMode: mode,
      }),
    ).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(message) });
  });
});

/** A memory backend whose keyed snapshots of the listed checkpoints fail in their asynchronous part. */
function failingKeyedSnapshots(failIds: readonly number[]): StateBackend {
  const inner = memory();
  return {
    name: inner.name,
    supportsSavepointFormat: (f) => inner.supportsSavepointFormat(f),
    createOperatorStateBackend: (p) => inner.createOperatorStateBackend(p),
    async createKeyedStateBackend<K>(params: Parameters<StateBackend['createKeyedStateBackend']>[0]) {
      const kb = (await inner.createKeyedStateBackend(params)) as KeyedStateBackend<K>;
      return new Proxy(kb, {
        get(target, prop, receiver) {
          if (prop === 'snapshot') {
            return async (...args: Parameters<KeyedStateBackend<K>['snapshot']>) => {
              const task = await target.snapshot(...args);
              if (!failIds.includes(args[0])) return task;
              task.done.catch(() => undefined);
              const done = Promise.reject(
                new SnapshotError('SNAPSHOT_FAILED', `injected failure of checkpoint ${args[0]}`),
              );
              done.catch(() => undefined);
              return { checkpointId: task.checkpointId, done };
            };
          }
          const v = Reflect.get(target, prop, receiver) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      });
    },
  };
}

describe('channel state is owned by its checkpoint', () => {
  const input = countingInput({ records: 2000, keys: 50, partitions: 4, seed: 3 });
  const options = (dir: string, numRetainedCheckpoints: number, failIds: number[] = []) => ({
    backend: failingKeyedSnapshots(failIds),
    // Every stream a file (no inline state), so that every channel-state stream is a file to account for.
    checkpointStorage: localCheckpointStorage(dir, { inlineThreshold: 0 }),
    checkpointEvery: 150,
    channelCapacity: 12,
    seed: 6,
    crashAt: [900],
    numRetainedCheckpoints,
    checkpointingMode: { unaligned: true } as const,
  });
  const job = () => countingJob(input, { parallelism: 3, sourceParallelism: 2, jobId: 'job' });

  async function listFiles(dir: string): Promise<string[]> {
    const out: string[] = [];
    for (const e of await readdir(dir, { withFileTypes: true, recursive: true }))
      if (e.isFile()) out.push(join(e.parentPath, e.name).slice(dir.length + 1));
    return out.sort();
  }

  it('retention, abort and gc leave nothing of it behind', async () => {
    // Everything retained: channel-state files were written (as files in their checkpoints' directories).
    const keepAll = join(root, 'own-all');
    const all = await runPipeline(job(), options(keepAll, 100));
    let channelFiles = 0;
    for (const c of all.checkpointsCompleted) {
      const md = await metadataOf(keepAll, c.pointer).catch(() => null);
      for (const op of md?.operators ?? [])
        for (const s of op.subtasks) if (s.channel?.stream.type === 'file') channelFiles++;
    }
    expect(channelFiles).toBeGreaterThan(0);

    // The same run retaining one checkpoint, with two checkpoints aborted (their keyed snapshots fail after the
    // sources and sinks wrote their channel state): only the retained checkpoint's files are left.
    const keepOne = join(root, 'own-one');
    const aborted = [3, 6];
    const one = await runPipeline(job(), options(keepOne, 1, aborted));
    expect(one.checkpointsAborted).toEqual(expect.arrayContaining(aborted));
    expect(checkCounts(one.committed, input).ok).toBe(true);
    const storage = localCheckpointStorage(keepOne);
    const retained = (await storage.listCompletedCheckpoints('job')).map((c) => c.pointer);
    expect(retained).toHaveLength(1);
    const referenced = new Set<string>([`${retained[0]}/_metadata`]);
    for (const k of fileKeys(retained[0], await metadataOf(keepOne, retained[0]))) referenced.add(k);
    const left = (await listFiles(keepOne)).filter((f) => !f.startsWith('job/_lease') && !f.includes('/_lease'));
    expect(left.filter((f) => !referenced.has(f))).toEqual([]);
    const gc = await findGarbage(storage, 'job', { minAgeMs: 0 });
    expect(gc.files).toEqual([]);
  });
});
