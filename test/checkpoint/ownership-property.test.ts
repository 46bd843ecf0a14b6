import { posix } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FileStreamHandle, KeyedStateHandle } from '../../src/backend/handles.js';
import { referencedFiles } from '../../src/backend/handles.js';
import type { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator, type PendingCheckpoint } from '../../src/checkpoint/coordinator.js';
import { keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { tempStorage, writeFile } from './coordinator-fixture.js';

/**
 * Random interleavings of trigger, snapshot, acknowledge, abort, completion and abort notices
 * (late, repeated, out of order, lost), late acknowledgements and gc, against a coordinator with
 * incremental subtasks faked after RocksDB's rule (reference §15.2: a snapshot references the
 * uploads of the last checkpoint it was told completed). After every step every retained
 * checkpoint has its _metadata and every file it references. Subtasks that ask mayReuse are never
 * declined; subtasks that reuse blindly may be declined, never completed broken.
 */
const PARALLELISM = 2;

type Op =
  | { readonly kind: 'trigger' }
  /** trigger, and every subtask snapshots */
  | { readonly kind: 'take' }
  /** every subtask acknowledges a pending checkpoint */
  | { readonly kind: 'ackAll'; readonly pick: number }
  /** take and acknowledge at once */
  | { readonly kind: 'checkpoint' }
  | { readonly kind: 'notifyCompleteAll'; readonly pick: number }
  | { readonly kind: 'snapshot'; readonly pick: number; readonly subtask: number }
  | { readonly kind: 'ack'; readonly pick: number; readonly subtask: number }
  | { readonly kind: 'abort'; readonly pick: number }
  | { readonly kind: 'notifyComplete'; readonly pick: number; readonly subtask: number }
  | { readonly kind: 'notifyAborted'; readonly pick: number; readonly subtask: number }
  | { readonly kind: 'lateAck'; readonly pick: number; readonly subtask: number }
  | { readonly kind: 'gc' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 1, arbitrary: fc.constant<Op>({ kind: 'trigger' }) },
  { weight: 3, arbitrary: fc.constant<Op>({ kind: 'take' }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('ackAll' as const), pick: fc.nat() }) },
  { weight: 3, arbitrary: fc.constant<Op>({ kind: 'checkpoint' }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('notifyCompleteAll' as const), pick: fc.nat() }) },
  {
    weight: 5,
    arbitrary: fc.record({ kind: fc.constant('snapshot' as const), pick: fc.nat(), subtask: fc.nat(PARALLELISM - 1) }),
  },
  {
    weight: 5,
    arbitrary: fc.record({ kind: fc.constant('ack' as const), pick: fc.nat(), subtask: fc.nat(PARALLELISM - 1) }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('abort' as const), pick: fc.nat() }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('notifyComplete' as const),
      pick: fc.nat(),
      subtask: fc.nat(PARALLELISM - 1),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('notifyAborted' as const),
      pick: fc.nat(),
      subtask: fc.nat(PARALLELISM - 1),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('lateAck' as const), pick: fc.nat(), subtask: fc.nat(PARALLELISM - 1) }),
  },
  { weight: 1, arbitrary: fc.constant<Op>({ kind: 'gc' }) },
);

/** One incremental subtask: uploads one new shared file per snapshot and references its base's. */
class Subtask {
  /** Shared files each of its snapshots referenced (RocksDB's uploadedSstFiles). */
  private readonly uploaded = new Map<number, FileStreamHandle[]>();
  private base: FileStreamHandle[] = [];
  readonly snapshots = new Map<number, KeyedStateHandle>();

  constructor(
    readonly index: number,
    readonly asks: boolean,
  ) {}

  async snapshot(p: PendingCheckpoint): Promise<void> {
    const options = p.snapshotOptions('op', this.index);
    const reused = p.full ? [] : this.base.filter((f) => !this.asks || options.mayReuse!(f.path));
    const fresh = await writeFile(options.streams, 'shared', `shared ${p.checkpointId}/${this.index}`);
    const exclusive = await writeFile(options.streams, 'exclusive', `exclusive ${p.checkpointId}/${this.index}`);
    const shared = [...reused, fresh];
    this.uploaded.set(p.checkpointId, shared);
    this.snapshots.set(p.checkpointId, {
      type: 'fake-incremental',
      keyGroupRange: keyGroupRangeForSubtask(128, PARALLELISM, this.index).toJSON(),
      maxParallelism: 128,
      exclusive,
      shared,
    });
  }

  notifyComplete(id: number): void {
    const files = this.uploaded.get(id);
    if (files !== undefined) this.base = files; // a notice for an id it did not upload is ignored
  }

  notifyAborted(id: number): void {
    this.uploaded.delete(id);
  }
}

let storage: BlobCheckpointStorage;
let cleanup: () => Promise<void>;
beforeAll(async () => {
  ({ storage, cleanup } = await tempStorage());
});
afterAll(async () => {
  await cleanup();
});

let runs = 0;

/** Runs `ops`; returns how many checkpoints were declined. */
async function run(ops: readonly Op[], numRetained: number, asks: boolean): Promise<number> {
  let declines = 0;
  const jobId = `job-prop-${++runs}`;
  const coord = new CheckpointCoordinator({
    jobId,
    storage,
    backendName: 'fake',
    numRetained,
    operators: [{ operatorId: 'op', parallelism: PARALLELISM, maxParallelism: 128 }],
  });
  await coord.restore();
  const subtasks = Array.from({ length: PARALLELISM }, (_, i) => new Subtask(i, asks));
  const triggered: PendingCheckpoint[] = [];
  const acked = new Set<string>();
  const completed: number[] = [];
  const pick = <T>(xs: readonly T[], n: number): T | undefined => (xs.length === 0 ? undefined : xs[n % xs.length]);
  const trigger = (maxPending = 3): PendingCheckpoint | undefined => {
    // At most three left in flight: more only hold retention back (their reuse floors), hiding the orderings that matter.
    if (triggered.length >= 24 || coord.pendingCheckpoints().length >= maxPending) return undefined;
    const p = coord.triggerCheckpoint();
    triggered.push(p);
    return p;
  };
  const ackOne = async (p: PendingCheckpoint, s: Subtask): Promise<void> => {
    acked.add(`${p.checkpointId}/${s.index}`);
    const result = await coord.acknowledge(p.checkpointId, 'op', s.index, {
      keyed: [s.snapshots.get(p.checkpointId)!],
      operator: [],
    });
    if (result.status === 'completed') completed.push(p.checkpointId);
    if (result.status === 'rejected' && result.reason === 'SHARED_STATE_NOT_LIVE') {
      declines++;
      expect(asks, `checkpoint ${p.checkpointId} declined although the subtasks ask mayReuse: ${result.message}`).toBe(
        false,
      );
      for (const t of subtasks) t.notifyAborted(p.checkpointId);
    }
  };
  const take = async (maxPending = 3): Promise<PendingCheckpoint | undefined> => {
    const p = trigger(maxPending);
    if (p) for (const s of subtasks) await s.snapshot(p);
    return p;
  };
  const ackAll = async (p: PendingCheckpoint): Promise<void> => {
    for (const s of subtasks)
      if (s.snapshots.has(p.checkpointId) && !acked.has(`${p.checkpointId}/${s.index}`)) await ackOne(p, s);
  };

  for (const op of ops) {
    switch (op.kind) {
      case 'trigger':
        trigger();
        break;
      case 'take':
        await take();
        break;
      case 'checkpoint': {
        const p = await take(4); // completes at once: it never stays in flight
        if (p) await ackAll(p);
        break;
      }
      case 'ackAll': {
        const p = pick(coord.pendingCheckpoints(), op.pick);
        if (p) await ackAll(triggered.find((t) => t.checkpointId === p.checkpointId)!);
        break;
      }
      case 'notifyCompleteAll': {
        const id = pick(completed, op.pick);
        if (id !== undefined) for (const s of subtasks) s.notifyComplete(id);
        break;
      }
      case 'snapshot': {
        const pending = coord
          .pendingCheckpoints()
          .map((p) => triggered.find((t) => t.checkpointId === p.checkpointId)!);
        const p = pick(
          pending.filter((x) => !subtasks[op.subtask].snapshots.has(x.checkpointId)),
          op.pick,
        );
        if (p) await subtasks[op.subtask].snapshot(p);
        break;
      }
      case 'ack': {
        const s = subtasks[op.subtask];
        const p = pick(
          triggered.filter((t) => s.snapshots.has(t.checkpointId) && !acked.has(`${t.checkpointId}/${s.index}`)),
          op.pick,
        );
        if (p) await ackOne(p, s);
        break;
      }
      case 'abort': {
        const p = pick(coord.pendingCheckpoints(), op.pick);
        if (p) {
          await coord.abort(p.checkpointId, 'random abort');
          for (const t of subtasks) t.notifyAborted(p.checkpointId);
        }
        break;
      }
      case 'notifyComplete': {
        const id = pick(completed, op.pick);
        if (id !== undefined) subtasks[op.subtask].notifyComplete(id);
        break;
      }
      case 'notifyAborted': {
        const p = pick(triggered, op.pick);
        if (p) subtasks[op.subtask].notifyAborted(p.checkpointId);
        break;
      }
      case 'lateAck': {
        const s = subtasks[op.subtask];
        const p = pick(
          triggered.filter(
            (t) =>
              s.snapshots.has(t.checkpointId) &&
              !coord.pendingCheckpoints().some((x) => x.checkpointId === t.checkpointId),
          ),
          op.pick,
        );
        if (p)
          expect(
            (
              await coord.acknowledge(p.checkpointId, 'op', s.index, {
                keyed: [s.snapshots.get(p.checkpointId)!],
                operator: [],
              })
            ).status,
          ).toBe('rejected');
        break;
      }
      case 'gc':
        await coord.collectGarbage();
        break;
    }
    // Every retained checkpoint is intact: _metadata and every file it references.
    for (const info of coord.completedCheckpoints()) {
      const { metadata } = await storage.resolve(info.pointer);
      for (const op2 of metadata.operators) {
        for (const sub of op2.subtasks) {
          for (const f of referencedFiles([sub.keyed, sub.operator])) {
            const name = posix.normalize(posix.join(info.pointer, f.path));
            expect((await storage.store.stat(name))?.size, `${name} of retained checkpoint ${info.checkpointId}`).toBe(
              f.size,
            );
          }
        }
      }
    }
  }
  await coord.shutdown('cancel');
  return declines;
}

describe('ownership under random interleavings', () => {
  it("the issue's ordering, as a fixed sequence: blind reuse is declined, asking is not", async () => {
    const ops: Op[] = [
      { kind: 'take' },
      { kind: 'take' },
      { kind: 'ackAll', pick: 0 },
      { kind: 'ackAll', pick: 0 },
      { kind: 'notifyCompleteAll', pick: 0 },
      { kind: 'checkpoint' },
    ];
    expect(await run(ops, 1, false)).toBe(1);
    expect(await run(ops, 1, true)).toBe(0);
  });

  it.each([
    ['subtasks that ask mayReuse: retained checkpoints always restore, nothing is ever declined', true],
    ['subtasks that reuse blindly: retained checkpoints always restore (stale references are declined)', false],
  ])(
    '%s',
    async (_name, asks) => {
      let declines = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.array(opArb, { minLength: 20, maxLength: 40 }),
          fc.constantFrom(1, 1, 2, 3),
          async (ops, numRetained) => {
            declines += await run(ops, numRetained, asks);
          },
        ),
        { numRuns: 25, seed: 12012 },
      );
      // With a fixed seed the runs are the same every time: blind reuse must have met the hazard.
      if (!asks) expect(declines).toBeGreaterThan(0);
    },
    180_000,
  ); // a loaded machine; about 5 s idle
});
