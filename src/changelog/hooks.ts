import type {
  AggregateFunction,
  AggregatingStateDescriptor,
  ReducingStateDescriptor,
  StateDescriptor,
} from '../state/descriptors.js';

const NONE: unique symbol = Symbol('none');
type Slot = unknown | typeof NONE;

/**
 * Reducing and aggregating states are registered with the wrapped backend through a descriptor
 * whose functions are hooked: live writes capture the resulting value/accumulator (so the log
 * records the result, not the input — aggregating inputs have no serializer), and replay forces a
 * logged result back in (clear + add with an override), since the public API cannot set an
 * accumulator directly. Without an override the hooked functions behave exactly like the user's.
 */
export class FunctionHooks {
  private override: Slot = NONE;
  private captured: Slot = NONE;

  /** Runs `fn` (an add) and returns what the reduce/aggregate function produced, or `fallback` when it was not called. */
  capture<T>(fn: () => void, fallback: T): T {
    this.captured = NONE;
    fn();
    const r = this.captured;
    this.captured = NONE;
    return (r === NONE ? fallback : r) as T;
  }

  /** Runs `fn` (a clear + add) with every reduce/aggregate call returning `value`. */
  forcing(value: unknown, fn: () => void): void {
    this.override = value;
    try {
      fn();
    } finally {
      this.override = NONE;
    }
  }

  reduce<T>(user: (a: T, b: T) => T): (a: T, b: T) => T {
    return (a, b) => {
      if (this.override !== NONE) return this.override as T;
      const r = user(a, b);
      this.captured = r;
      return r;
    };
  }

  aggregate<IN, ACC, OUT>(user: AggregateFunction<IN, ACC, OUT>): AggregateFunction<IN, ACC, OUT> {
    return {
      createAccumulator: () => user.createAccumulator(),
      add: (value, acc) => {
        if (this.override !== NONE) return this.override as ACC;
        const r = user.add(value, acc);
        this.captured = r;
        return r;
      },
      getResult: (acc) => user.getResult(acc),
      merge: (a, b) => user.merge(a, b),
    };
  }

  /** The descriptor to register with the wrapped backend (the same object for other kinds). */
  descriptorFor(d: StateDescriptor<unknown>): StateDescriptor<unknown> {
    if (d.kind === 'reducing') {
      return { ...d, reduce: this.reduce(d.reduce) } as ReducingStateDescriptor<unknown, unknown>;
    }
    if (d.kind === 'aggregating') {
      return { ...d, aggregate: this.aggregate(d.aggregate) } as AggregatingStateDescriptor<
        unknown,
        unknown,
        unknown,
        unknown
      >;
    }
    return d;
  }
}
