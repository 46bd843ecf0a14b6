import fc from 'fast-check';
import { NUM_KEYS } from './model.js';
import type { LifecycleWorld } from './world.js';

/**
 * The lifecycle commands for fast-check's model-based runner. Every command applies at any time:
 * its parameters pick among what exists when it runs (the n-th pending checkpoint, modulo how many
 * there are) and it does nothing when nothing fits, so shrinking never makes a sequence invalid.
 * After each command the world checks every retained checkpoint against the model.
 */
export type LifecycleCommand = fc.AsyncCommand<LifecycleWorld, LifecycleWorld>;

/** Which command kinds a property draws (all by default); the test narrows them while a finding is open. */
export type CommandKind =
  | 'write'
  | 'trigger'
  | 'checkpoint'
  | 'snapshot'
  | 'ack'
  | 'notifyComplete'
  | 'notifyAborted'
  | 'abort'
  | 'gc'
  | 'cliGc'
  | 'crash'
  | 'stop'
  | 'secondInstance'
  | 'zombieStep'
  | 'zombieGc';

export const ALL_COMMAND_KINDS: readonly CommandKind[] = [
  'write',
  'trigger',
  'checkpoint',
  'snapshot',
  'ack',
  'notifyComplete',
  'notifyAborted',
  'abort',
  'gc',
  'cliGc',
  'crash',
  'stop',
  'secondInstance',
  'zombieStep',
  'zombieGc',
];

abstract class Base implements LifecycleCommand {
  check(): boolean {
    return true;
  }

  async run(_m: LifecycleWorld, w: LifecycleWorld): Promise<void> {
    w.begin(this.toString());
    await this.apply(w);
    await w.check(this.toString());
  }

  protected abstract apply(w: LifecycleWorld): Promise<void> | void;
  abstract toString(): string;
}

class Write extends Base {
  constructor(
    readonly first: number,
    readonly count: number,
    readonly pad: number,
    readonly del: boolean,
    readonly mapMode: number,
  ) {
    super();
  }
  protected apply(w: LifecycleWorld): void {
    w.write(this.first, this.count, this.pad, this.del, this.mapMode);
  }
  toString(): string {
    return `write(${this.first},${this.count},${this.pad},${this.del},${this.mapMode})`;
  }
}

class Trigger extends Base {
  protected apply(w: LifecycleWorld): void {
    w.trigger();
  }
  toString(): string {
    return 'trigger';
  }
}

class FullCheckpoint extends Base {
  protected apply(w: LifecycleWorld): Promise<void> {
    return w.fullCheckpoint();
  }
  toString(): string {
    return 'checkpoint';
  }
}

class Snapshot extends Base {
  constructor(
    readonly pick: number,
    readonly subtask: number,
    readonly all: boolean,
    readonly hold: boolean,
  ) {
    super();
  }
  protected apply(w: LifecycleWorld): Promise<void> {
    return w.snapshot(this.pick, this.subtask, this.all, this.hold);
  }
  toString(): string {
    return `snapshot(${this.pick},${this.all ? 'all' : this.subtask}${this.hold ? ',held' : ''})`;
  }
}

class Ack extends Base {
  constructor(
    readonly pick: number,
    readonly all: boolean,
  ) {
    super();
  }
  protected apply(w: LifecycleWorld): Promise<void> {
    return w.acknowledge(this.pick, this.all);
  }
  toString(): string {
    return `ack(${this.pick}${this.all ? ',all' : ''})`;
  }
}

class NotifyComplete extends Base {
  constructor(
    readonly pick: number,
    readonly target: number,
  ) {
    super();
  }
  protected apply(w: LifecycleWorld): Promise<void> {
    return w.notifyComplete(this.pick, this.target);
  }
  toString(): string {
    return `notifyComplete(${this.pick},${this.target})`;
  }
}

class NotifyAborted extends Base {
  constructor(
    readonly pick: number,
    readonly target: number,
  ) {
    super();
  }
  protected apply(w: LifecycleWorld): Promise<void> {
    return w.notifyAborted(this.pick, this.target);
  }
  toString(): string {
    return `notifyAborted(${this.pick},${this.target})`;
  }
}

class Abort extends Base {
  constructor(readonly pick: number) {
    super();
  }
  protected apply(w: LifecycleWorld): Promise<void> {
    return w.abort(this.pick);
  }
  toString(): string {
    return `abort(${this.pick})`;
  }
}

class Gc extends Base {
  protected apply(w: LifecycleWorld): Promise<void> {
    return w.collectGarbage();
  }
  toString(): string {
    return 'gc';
  }
}

class CliGc extends Base {
  constructor(readonly minAgeZero: boolean) {
    super();
  }
  protected apply(w: LifecycleWorld): Promise<void> {
    return w.cliGc(this.minAgeZero);
  }
  toString(): string {
    return `cliGc(${this.minAgeZero ? '--min-age 0' : ''})`;
  }
}

class Crash extends Base {
  constructor(readonly parallelism: number) {
    super();
  }
  protected apply(w: LifecycleWorld): Promise<void> {
    return w.crash(this.parallelism);
  }
  toString(): string {
    return `crash(${this.parallelism})`;
  }
}

class Stop extends Base {
  constructor(readonly parallelism: number) {
    super();
  }
  protected apply(w: LifecycleWorld): Promise<void> {
    return w.stop(this.parallelism);
  }
  toString(): string {
    return `stop(${this.parallelism})`;
  }
}

class SecondInstance extends Base {
  constructor(readonly parallelism: number) {
    super();
  }
  protected apply(w: LifecycleWorld): Promise<void> {
    return w.secondInstance(this.parallelism);
  }
  toString(): string {
    return `secondInstance(${this.parallelism})`;
  }
}

class ZombieStep extends Base {
  constructor(
    readonly pick: number,
    readonly subtask: number,
  ) {
    super();
  }
  protected apply(w: LifecycleWorld): Promise<void> {
    return w.zombieStep(this.pick, this.subtask);
  }
  toString(): string {
    return `zombieStep(${this.pick},${this.subtask})`;
  }
}

class ZombieGc extends Base {
  protected apply(w: LifecycleWorld): Promise<void> {
    return w.zombieGc();
  }
  toString(): string {
    return 'zombieGc';
  }
}

const pick = fc.nat(7);
const target = fc.nat(3);
const parallelism = fc.integer({ min: 1, max: 3 });

/** Each kind with its weight (how many times it is listed for fc.commands). */
const ARBITRARIES: Record<CommandKind, readonly [fc.Arbitrary<LifecycleCommand>, number]> = {
  write: [
    fc
      .record({
        first: fc.nat(NUM_KEYS - 1),
        count: fc.integer({ min: 1, max: NUM_KEYS }),
        pad: fc.constantFrom(8, 400),
        del: fc.boolean(),
        mapMode: fc.nat(2),
      })
      .map((r) => new Write(r.first, r.count, r.pad, r.del && r.count < 6, r.mapMode)),
    3,
  ],
  trigger: [fc.constant(new Trigger()), 2],
  checkpoint: [fc.constant(new FullCheckpoint()), 2],
  // Mostly every subtask at once, so interleaved checkpoints complete often enough; some held in their I/O.
  snapshot: [
    fc.tuple(pick, fc.nat(2), fc.nat(3), fc.nat(2)).map(([p, s, all, hold]) => new Snapshot(p, s, all > 0, hold === 0)),
    3,
  ],
  ack: [fc.tuple(pick, fc.nat(3)).map(([p, all]) => new Ack(p, all > 0)), 3],
  notifyComplete: [fc.tuple(pick, target).map(([p, t]) => new NotifyComplete(p, t)), 3],
  notifyAborted: [fc.tuple(pick, target).map(([p, t]) => new NotifyAborted(p, t)), 1],
  abort: [pick.map((p) => new Abort(p)), 1],
  gc: [fc.constant(new Gc()), 1],
  cliGc: [fc.boolean().map((z) => new CliGc(z)), 1],
  crash: [parallelism.map((p) => new Crash(p)), 1],
  stop: [parallelism.map((p) => new Stop(p)), 1],
  secondInstance: [parallelism.map((p) => new SecondInstance(p)), 1],
  zombieStep: [fc.tuple(pick, fc.nat(2)).map(([p, s]) => new ZombieStep(p, s)), 2],
  zombieGc: [fc.constant(new ZombieGc()), 1],
};

export function commandArbitraries(
  kinds: readonly CommandKind[] = ALL_COMMAND_KINDS,
): fc.Arbitrary<LifecycleCommand>[] {
  return kinds.flatMap((k) => {
    const [arb, weight] = ARBITRARIES[k];
    return Array.from({ length: weight }, () => arb);
  });
}
