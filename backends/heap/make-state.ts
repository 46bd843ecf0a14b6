import type { StateDescriptor } from '../../src/state/descriptors.js';
import type { KeyedState } from '../../src/state/types.js';
import type { KeyContext } from './key-context.js';
import type { StateTable } from './state-table.js';
import { HeapAggregatingState, HeapListState, HeapMapState, HeapReducingState, HeapValueState } from './states.js';

/** The heap handle for a (non-TTL or TTL-inner) descriptor over its table. */
export function makeHeapState(
  ctx: KeyContext<unknown>,
  table: StateTable,
  d: StateDescriptor<unknown>,
): KeyedState<unknown> {
  switch (d.kind) {
    case 'value':
      // With TTL the inner descriptor carries no default (defaults are ignored with TTL).
      return new HeapValueState(ctx, table, d.defaultValue ?? undefined);
    case 'list':
      return new HeapListState(ctx, table);
    case 'map':
      return new HeapMapState(ctx, table);
    case 'reducing':
      return new HeapReducingState(ctx, table, d.reduce);
    case 'aggregating':
      return new HeapAggregatingState(ctx, table, d.aggregate);
  }
}
