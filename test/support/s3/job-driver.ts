import type { KeyedStateBackend, OperatorStateBackend, StateBackend } from '../../../src/backend/contract.js';
import { CheckpointCoordinator, type RestorePlan } from '../../../src/checkpoint/coordinator.js';
import type { CompletedCheckpointInfo } from '../../../src/checkpoint/metadata.js';
import type { CheckpointStorage } from '../../../src/checkpoint/storage.js';
import { keyGroupForKey, keyGroupRangeForSubtask } from '../../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../../src/serializers/builtins.js';
import { listState, mapState, valueState } from '../../../src/state/descriptors.js';

/**
 * A small job driven the way a runtime drives one: a CheckpointCoordinator on the given storage,
 * one keyed operator (value, list, map state and timers) plus split operator list state, at any
 * parallelism. `update(round)` changes a deterministic part of the state, `checkpoint()` and
 * `savepoint()` go through the coordinator, `contents()` reads everything back normalized, so a
 * restored job (at another parallelism, from another backend) can be compared with toEqual.
 */

export const OPERATOR = 'op-1';
export const MAX_PARALLELISM = 32;
const value = valueState<string>('value', { serializer: stringSerializer });
const events = listState<string>('events', { serializer: stringSerializer });
const attrs = mapState<string, string>('attrs', { keySerializer: stringSerializer, valueSerializer: stringSerializer });

export interface JobContents {
  readonly keyed: string[];
  readonly timers: string[];
  readonly offsets: string[];
}

interface Subtask {
  readonly keyed: KeyedStateBackend<string>;
  readonly operator: OperatorStateBackend;
}

export interface StartOptions {
  readonly jobId: string;
  readonly backend: StateBackend;
  readonly storage: CheckpointStorage;
  readonly parallelism: number;
  readonly keys?: number;
  /** What to restore: a pointer, `latest` (the job's own latest checkpoint), or nothing. */
  readonly restore?: string | 'latest';
  readonly numRetained?: number;
}

export class DrivenJob {
  private constructor(
    readonly coordinator: CheckpointCoordinator,
    private readonly subtasks: Subtask[],
    readonly keys: number,
    readonly plan: RestorePlan | null,
  ) {}

  static async start(opts: StartOptions): Promise<DrivenJob> {
    const { jobId, backend, parallelism } = opts;
    const coordinator = new CheckpointCoordinator({
      jobId,
      storage: opts.storage,
      backendName: backend.name,
      numRetained: opts.numRetained ?? 1,
      operators: [{ operatorId: OPERATOR, parallelism, maxParallelism: MAX_PARALLELISM }],
    });
    const plan = await coordinator.restore(
      opts.restore === undefined || opts.restore === 'latest' ? undefined : opts.restore,
    );
    if (opts.restore !== undefined && plan === null) throw new Error(`job ${jobId}: nothing to restore`);
    const subtasks: Subtask[] = [];
    for (let i = 0; i < parallelism; i++) {
      const info = { jobId, operatorId: OPERATOR, subtaskIndex: i, parallelism };
      const restore = plan?.subtask(OPERATOR, i);
      const keyed = await backend.createKeyedStateBackend({
        ...info,
        maxParallelism: MAX_PARALLELISM,
        keyGroupRange: keyGroupRangeForSubtask(MAX_PARALLELISM, parallelism, i),
        keySerializer: stringSerializer,
        ...(restore ? { restore: restore.keyed } : {}),
      });
      const operator = await backend.createOperatorStateBackend({
        ...info,
        ...(restore ? { restore: restore.operator } : {}),
      });
      subtasks.push({ keyed, operator });
    }
    return new DrivenJob(coordinator, subtasks, opts.keys ?? 200, plan);
  }

  private owner(key: string): KeyedStateBackend<string> {
    const kg = keyGroupForKey(key, stringSerializer, MAX_PARALLELISM);
    const s = this.subtasks.find((x) => x.keyed.keyGroupRange.contains(kg));
    if (s === undefined) throw new Error(`no subtask owns ${key}`);
    return s.keyed;
  }

  /** Round 1 writes every key; later rounds change about a tenth of them (a small change). */
  update(round: number): void {
    for (let i = 0; i < this.keys; i++) {
      if (round > 1 && i % 10 !== round % 10) continue;
      const key = `key-${i}`;
      const b = this.owner(key);
      b.setCurrentKey(key);
      b.getState(value).update(`v${i}-r${round}-`.padEnd(40 + (i % 30), 'x'));
      b.getState(events).add(`e${round}`);
      const m = b.getState(attrs);
      m.put(`m${round}`, `${i * round}`);
      if (round > 1 && i % 3 === 0) m.remove('m1');
      b.getTimerQueue<string>('timers').add({ timestamp: 1000 * round + (i % 7), key, namespace: '' });
    }
    for (const [idx, s] of this.subtasks.entries())
      s.operator.getListState<string>('offsets', stringSerializer).add(`r${round}-s${idx}`);
  }

  private async snapshotAll(
    pending: ReturnType<CheckpointCoordinator['triggerCheckpoint']>,
  ): Promise<CompletedCheckpointInfo> {
    for (const [i, s] of this.subtasks.entries()) {
      const options = pending.snapshotOptions(OPERATOR, i);
      const k = await s.keyed.snapshot(pending.checkpointId, options);
      const o = await s.operator.snapshot(pending.checkpointId, options);
      await this.coordinator.acknowledge(pending.checkpointId, OPERATOR, i, {
        keyed: [await k.done],
        operator: [await o.done],
      });
    }
    return pending.completion;
  }

  async checkpoint(): Promise<CompletedCheckpointInfo> {
    const pending = this.coordinator.triggerCheckpoint();
    const info = await this.snapshotAll(pending);
    for (const s of this.subtasks) await s.keyed.notifyCheckpointComplete(pending.checkpointId);
    return info;
  }

  async savepoint(format: 'canonical' | 'native', targetDir?: string): Promise<CompletedCheckpointInfo> {
    return this.snapshotAll(
      this.coordinator.triggerSavepoint({ format, ...(targetDir === undefined ? {} : { targetDir }) }),
    );
  }

  async contents(): Promise<JobContents> {
    const keyed: string[] = [];
    for (let i = 0; i < this.keys; i++) {
      const key = `key-${i}`;
      const b = this.owner(key);
      b.setCurrentKey(key);
      const entries: [string, string][] = [];
      for await (const e of b.getState(attrs).entries()) entries.push(e);
      entries.sort(([a], [c]) => (a < c ? -1 : 1));
      keyed.push(JSON.stringify([key, b.getState(value).value(), b.getState(events).get(), entries]));
    }
    const timers: string[] = [];
    const offsets: string[] = [];
    for (const s of this.subtasks) {
      for (const t of s.keyed.getTimerQueue<string>('timers')) timers.push(`${t.timestamp}/${t.key}`);
      offsets.push(...s.operator.getListState<string>('offsets', stringSerializer).get());
    }
    return { keyed, timers: timers.sort(), offsets: offsets.sort() };
  }

  async stop(): Promise<void> {
    for (const s of this.subtasks) {
      await s.keyed.close();
      await s.operator.close();
    }
    await this.coordinator.shutdown('finish');
  }
}
