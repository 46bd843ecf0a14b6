import type { KeyedStateBackend, OperatorStateBackend } from '../backend/contract.js';
import type { Serializer } from '../serializers/serializer.js';
import type { StateDescriptor } from '../state/descriptors.js';
import type { StateFor, TimerQueue } from '../state/types.js';
import type { Channel, InputGate, RecordElement } from './channels.js';
import { SubtaskBase } from './tasks.js';

/** What user code sees while processing one record of a keyed stream. */
export interface KeyedContext<K, OUT> {
  /** The key of the record being processed; state handles are bound to it. */
  readonly key: K;
  readonly subtaskIndex: number;
  readonly parallelism: number;
  /** A keyed state, bound to the current key. Registering the same descriptor again returns the same handle. */
  state<D extends StateDescriptor<unknown>>(descriptor: D): StateFor<D>;
  /** A timer queue of the keyed backend (stored and rescaled with the state; the harness does not fire timers). */
  timers<N = string>(name: string, namespaceSerializer?: Serializer<N>): TimerQueue<K, N>;
  /** Sends a record to the sink. */
  emit(out: OUT): void;
}

export type ProcessFunction<IN, K, OUT> = (record: IN, ctx: KeyedContext<K, OUT>) => void;

/** A subtask of the keyed stateful operator: reads its input gate, runs user code with keyed state, emits to the sink. */
export class KeyedOperatorSubtask<IN, K, OUT> extends SubtaskBase implements KeyedContext<K, OUT> {
  private readonly handles = new Map<StateDescriptor<unknown>, unknown>();
  private nextOutput = 0;
  private currentOrigin: RecordElement<IN>['origin'] = { partition: -1, offset: -1 };
  key!: K;

  constructor(
    operatorId: string,
    subtaskIndex: number,
    readonly parallelism: number,
    operatorBackend: OperatorStateBackend,
    private readonly keyed: KeyedStateBackend<K>,
    readonly gate: InputGate<IN>,
    /** One channel per sink subtask; forward when there is one, else round-robin. */
    readonly outputs: readonly Channel<OUT>[],
    private readonly keyOf: (record: IN) => K,
    private readonly fn: ProcessFunction<IN, K, OUT>,
  ) {
    super(operatorId, subtaskIndex, operatorBackend, keyed as KeyedStateBackend<unknown>);
  }

  get outputsHaveRoom(): boolean {
    for (const c of this.outputs) if (!c.hasRoom) return false;
    return true;
  }

  process(element: RecordElement<IN>): void {
    const key = this.keyOf(element.value);
    this.keyed.setCurrentKey(key);
    this.key = key;
    this.currentOrigin = element.origin;
    this.fn(element.value, this);
  }

  state<D extends StateDescriptor<unknown>>(descriptor: D): StateFor<D> {
    let h = this.handles.get(descriptor);
    if (h === undefined) {
      h = this.keyed.getState(descriptor);
      this.handles.set(descriptor, h);
    }
    return h as StateFor<D>;
  }

  timers<N = string>(name: string, namespaceSerializer?: Serializer<N>): TimerQueue<K, N> {
    return this.keyed.getTimerQueue<N>(name, namespaceSerializer);
  }

  emit(out: OUT): void {
    const channel = this.outputs.length === 1 ? this.outputs[0] : this.outputs[this.nextOutput++ % this.outputs.length];
    channel.pushRecord(out, this.currentOrigin, undefined);
  }

  protected prepareSnapshot(): void {
    // All of this operator's state lives in its backends already.
  }
}
