import { cp, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import type { KeyedStateHandle } from '../../src/backend/handles.js';
import { decodeMetadata, encodeMetadata } from '../../src/checkpoint/metadata-codec.js';
import type { CheckpointMetadata } from '../../src/checkpoint/metadata.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { keyGroupCoverageProblems } from '../../src/savepoint/coverage.js';
import { writeJob } from '../savepoint/support/job.js';
import { cli, errorLine, tempDir } from './support.js';

/** verify, dump and convert on snapshots whose keyed handles overlap or leave key groups unclaimed. */

let root: string;
let cleanup: () => Promise<void>;
let single: string;

async function rewriteMetadata(
  src: string,
  dst: string,
  edit: (m: CheckpointMetadata) => CheckpointMetadata,
): Promise<string> {
  await cp(src, dst, { recursive: true });
  const md = decodeMetadata(await readFile(join(src, '_metadata')));
  await writeFile(join(dst, '_metadata'), encodeMetadata(edit(md)));
  return dst;
}

beforeAll(async () => {
  ({ dir: root, cleanup } = await tempDir('ss-cli-cov-'));
  single = await writeJob(new HeapStateBackend({ name: 'memory' }), { root, parallelism: 1, format: 'canonical' });
});
afterAll(async () => cleanup());

describe('key-group coverage', () => {
  it('four subtasks of a parallelism-4 operator all claiming every key group: verify exit 4, dump and convert refuse', async () => {
    // The same full-range handle acknowledged by subtasks 0-3 (the scenario).
    const dir = await rewriteMetadata(single, join(root, 'fourfold'), (m) => ({
      ...m,
      operators: m.operators.map((op) => ({
        ...op,
        parallelism: 4,
        subtasks: [0, 1, 2, 3].map((i) => ({
          ...op.subtasks[0],
          subtaskIndex: i,
          operator: i === 0 ? op.subtasks[0].operator : [],
        })),
      })),
    }));
    const v = await cli(['verify', dir]);
    expect(v.code).toBe(4);
    expect(v.stdout).toMatch(/^FAILED /);
    expect(v.stderr).toContain(
      'subtask 1: a key-groups handle claims key groups 0-15, but subtask 1 of parallelism 4 owns 4-7',
    );

    const d = await cli(['dump', dir, '--operator', 'op-1']);
    expect(d.code).toBe(4);
    expect(d.stdout).toBe('');
    expect(errorLine(d.stderr)).toContain('error CORRUPT');

    const c = await cli(['convert', dir, join(root, 'fourfold-out'), '--to', 'memory']);
    expect(c.code).toBe(4);
    expect(errorLine(c.stderr)).toContain('does not cover its key groups exactly once');
    expect((await readdir(root)).filter((n) => n.includes('fourfold-out'))).toEqual([]);
  });

  it('a subtask whose handle leaves part of its range unclaimed: missing key groups, exit 4', async () => {
    const dir = await rewriteMetadata(single, join(root, 'narrow'), (m) => ({
      ...m,
      operators: m.operators.map((op) => ({
        ...op,
        subtasks: op.subtasks.map((s) => ({
          ...s,
          keyed: s.keyed.map(
            (h) =>
              ({
                ...h,
                keyGroupRange: { start: 0, end: 11 },
                blocks: (h as unknown as { blocks: { keyGroup: number }[] }).blocks.filter((b) => b.keyGroup <= 11),
              }) as unknown as KeyedStateHandle,
          ),
        })),
      })),
    }));
    const v = await cli(['verify', dir]);
    expect(v.code).toBe(4);
    expect(v.stderr).toContain('no handle claims key groups 12-15 of its range 0-15');
  });
});

/** A keyed handle claiming `start..end` (only the fields coverage looks at). */
const handle = (start: number, end: number): KeyedStateHandle =>
  ({ type: 'key-groups', keyGroupRange: { start, end } }) as unknown as KeyedStateHandle;

function metadataOf(
  maxP: number,
  p: number,
  subtasks: { index: number; ranges: [number, number][] }[],
): CheckpointMetadata {
  return {
    checkpointId: 1,
    jobId: 'j',
    kind: 'checkpoint',
    format: 'native',
    backend: 'memory',
    timestamp: 0,
    operators: [
      {
        operatorId: 'op',
        parallelism: p,
        maxParallelism: maxP,
        subtasks: subtasks.map((s) => ({
          subtaskIndex: s.index,
          keyed: s.ranges.map(([a, b]) => handle(a, b)),
          operator: [],
        })),
      },
    ],
  };
}

describe('keyGroupCoverageProblems against a per-key-group count model', () => {
  it('exact ranges (any subset of subtasks, any split of a range into adjacent handles) are fine', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 64 }),
        fc.integer({ min: 1, max: 64 }),
        fc.array(fc.boolean(), { minLength: 64, maxLength: 64 }),
        fc.integer({ min: 0, max: 63 }),
        (maxP, pRaw, present, splitAt) => {
          const p = Math.min(pRaw, maxP);
          const subtasks = [];
          for (let i = 0; i < p; i++) {
            if (!present[i]) continue;
            const r = keyGroupRangeForSubtask(maxP, p, i);
            const cut = r.start + (splitAt % (r.end - r.start + 1));
            subtasks.push({
              index: i,
              ranges: (cut > r.start
                ? [
                    [r.start, cut - 1],
                    [cut, r.end],
                  ]
                : [[r.start, r.end]]) as [number, number][],
            });
          }
          expect(keyGroupCoverageProblems(metadataOf(maxP, p, subtasks))).toEqual([]);
        },
      ),
    );
  });

  it('arbitrary ranges: problems exactly when some key group is claimed outside its subtask, twice, or not at all', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 32 }),
        fc.integer({ min: 1, max: 32 }),
        fc.array(
          fc.tuple(
            fc.integer({ min: 0, max: 31 }),
            fc.array(fc.tuple(fc.integer({ min: 0, max: 31 }), fc.integer({ min: 0, max: 31 })), {
              minLength: 1,
              maxLength: 3,
            }),
          ),
          { maxLength: 6 },
        ),
        (maxP, pRaw, raw) => {
          const p = Math.min(pRaw, maxP);
          const seen = new Set<number>();
          const subtasks = raw
            .map(([i, rs]) => ({
              index: i % p,
              ranges: rs
                .map(([a, b]) => [Math.min(a, b) % maxP, Math.max(a, b) % maxP] as [number, number])
                .filter(([a, b]) => a <= b),
            }))
            .filter((s) => s.ranges.length > 0 && !seen.has(s.index) && (seen.add(s.index), true));
          // Model: per key group, which subtask claims it how often.
          let ok = true;
          for (const s of subtasks) {
            const own = keyGroupRangeForSubtask(maxP, p, s.index);
            const counts = new Map<number, number>();
            for (const [a, b] of s.ranges) for (let kg = a; kg <= b; kg++) counts.set(kg, (counts.get(kg) ?? 0) + 1);
            for (const [kg, n] of counts) if (n !== 1 || kg < own.start || kg > own.end) ok = false;
            for (let kg = own.start; kg <= own.end; kg++) if (!counts.has(kg)) ok = false;
          }
          expect(keyGroupCoverageProblems(metadataOf(maxP, p, subtasks)).length === 0).toBe(ok);
        },
      ),
    );
  });
});
