import type { TtlConfig } from '../../src/state/descriptors.js';
import { isExpired, type TtlValue } from '../../src/state/ttl.js';
import type { StateTable, UserMap } from './state-table.js';

type Position = readonly [kgIdx: number, nsId: unknown, keyId: unknown];

const copyMap = (v: unknown): unknown => new Map(v as UserMap);

/**
 * Incremental TTL cleanup of one heap state (Flink's cleanupIncrementally): a cursor walks every
 * stored (key group, namespace, key) slot in turn, wrapping around at the end, and each step
 * checks `perStep` slots, removing expired values, list elements and map entries. The cursor
 * iterates the live JS Maps, which tolerate deletion while iterated; entries added behind it are
 * found on the next round. Writes go through the table, so pending snapshots keep their view.
 */
export class IncrementalTtlCleanup {
  private cursor: Iterator<Position> | undefined;

  constructor(
    private readonly table: StateTable,
    private readonly ttl: TtlConfig,
    private readonly perStep: number,
    private readonly clock: () => number,
  ) {}

  /** Checks up to `perStep` slots. */
  step(): void {
    const now = this.clock();
    for (let n = 0; n < this.perStep; n++) {
      const at = this.next();
      if (at === undefined) return;
      this.clean(at[0], at[1], at[2], now);
    }
  }

  private next(): Position | undefined {
    let r = (this.cursor ??= this.walk()).next();
    if (r.done) {
      // One fresh round; an empty table ends the step.
      this.cursor = this.walk();
      r = this.cursor.next();
      if (r.done) {
        this.cursor = undefined;
        return undefined;
      }
    }
    return r.value;
  }

  private *walk(): Generator<Position> {
    const t = this.table;
    for (let i = 0; i < t.rangeSize; i++) {
      const slot = t.slots[i];
      if (slot === undefined) continue;
      for (const [nsId, inner] of slot) for (const keyId of inner.keys()) yield [i, nsId, keyId];
    }
  }

  private clean(i: number, nsId: unknown, keyId: unknown, now: number): void {
    const t = this.table;
    const v = t.get(i, nsId, keyId);
    if (v === undefined) return;
    const expired = (w: unknown): boolean => isExpired(w as TtlValue<unknown>, this.ttl, now);
    if (t.kind === 'list') {
      const els = v as readonly unknown[];
      if (!els.some(expired)) return;
      const live = els.filter((e) => !expired(e));
      if (live.length === 0) t.delete(i, nsId, keyId);
      else t.set(i, nsId, keyId, live);
    } else if (t.kind === 'map') {
      const dead: unknown[] = [];
      for (const [ukId, e] of v as UserMap) if (expired(e[1])) dead.push(ukId);
      if (dead.length === 0) return;
      if (dead.length === (v as UserMap).size) {
        t.delete(i, nsId, keyId);
        return;
      }
      const m = t.mutable(i, nsId, keyId, copyMap) as UserMap;
      for (const ukId of dead) m.delete(ukId);
    } else if (expired(v)) {
      t.delete(i, nsId, keyId);
    }
  }
}
