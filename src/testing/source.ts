import { RestoreError } from '../errors.js';
import type { OperatorStateBackend } from '../backend/contract.js';
import type { OperatorListState } from '../state/types.js';
import type { RecordOrigin } from './channels.js';
import { SubtaskBase } from './tasks.js';

/** One element of a source's split-list offset state: the next offset to read in a partition. */
export interface PartitionOffset {
  readonly partition: number;
  readonly offset: number;
}

export const SOURCE_OFFSETS_STATE = 'source-offsets';

/**
 * A replayable source subtask. It reads some of the input partitions, round-robin, and keeps the next
 * offset of each in split-list operator state — so after a rescaled restore the partitions (with
 * their offsets) are spread over the new source subtasks.
 */
export class SourceSubtask<T> extends SubtaskBase {
  private readonly offsets: { partition: number; offset: number }[];
  private readonly state: OperatorListState<PartitionOffset>;
  private cursor = 0;
  private remaining: number;
  /** Barriers to inject before the next record, oldest first. */
  readonly pendingBarriers: number[] = [];

  /**
   * `assigned`: the partitions of a fresh start (null when restoring: the restored offset state
   * says which partitions this subtask owns).
   */
  constructor(
    operatorId: string,
    subtaskIndex: number,
    operatorBackend: OperatorStateBackend,
    private readonly input: readonly (readonly T[])[],
    assigned: readonly number[] | null,
  ) {
    super(operatorId, subtaskIndex, operatorBackend, null);
    this.state = operatorBackend.getListState<PartitionOffset>(SOURCE_OFFSETS_STATE);
    const restored = assigned === null ? this.state.get() : assigned.map((partition) => ({ partition, offset: 0 }));
    this.offsets = restored.map((p) => ({ partition: p.partition, offset: p.offset }));
    for (const p of this.offsets) {
      if (!Number.isInteger(p.partition) || p.partition < 0 || p.partition >= input.length || !(p.offset >= 0)) {
        throw new RestoreError(
          'RESTORE_FAILED',
          `source ${operatorId}[${subtaskIndex}] restored offset ${JSON.stringify(p)}, but the input has ${input.length} partitions; ` +
            'a replayable source must be restored with the same input it was checkpointed with.',
        );
      }
    }
    this.remaining = 0;
    for (const p of this.offsets) this.remaining += Math.max(0, input[p.partition].length - p.offset);
  }

  /** Partitions this subtask reads, with the next offset of each. */
  get partitions(): readonly PartitionOffset[] {
    return this.offsets;
  }

  get exhausted(): boolean {
    return this.remaining === 0;
  }

  /** The next record (round-robin over partitions that have more), or null when all are read. */
  next(): { value: T; origin: RecordOrigin } | null {
    const n = this.offsets.length;
    for (let i = 0; i < n; i++) {
      const p = this.offsets[(this.cursor + i) % n];
      const records = this.input[p.partition];
      if (p.offset < records.length) {
        this.cursor = (this.cursor + i + 1) % n;
        this.remaining--;
        const origin = { partition: p.partition, offset: p.offset };
        return { value: records[p.offset++], origin };
      }
    }
    // Every partition is at its end: also when a live input ended earlier than its length first said (the soak's timed input).
    this.remaining = 0;
    return null;
  }

  protected prepareSnapshot(): void {
    this.state.update(this.offsets.map((p) => ({ partition: p.partition, offset: p.offset })));
  }
}
