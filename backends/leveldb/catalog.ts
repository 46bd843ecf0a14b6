import type { KeyedStateMetaInfo } from '../../src/backend/handles.js';
import { requireCompatibleAsIs, serializerIncompatible, stateKindMismatch } from '../../src/backend/keyed-rules.js';
import { RestoreError, StateMigrationError, StreamStateError } from '../../src/errors.js';
import {
  describeSerializer,
  resolveCompatibility,
  snapshotOf,
  type Serializer,
  type SerializerSnapshot,
} from '../../src/serializers/serializer.js';
import type { LevelStateMetaInfo } from './meta.js';
import { MAX_STATE_ID } from './row-keys.js';
import { MAX_GENERATION, ValueCodec } from './value-codec.js';

/**
 * The states of one LevelDB backend: name → meta info with its small state id, for registered
 * states and for restored ones that were not registered again (their rows are kept and
 * snapshotted as they are). Also decides serializer compatibility at registration.
 */
export type MutableMeta = { -readonly [P in keyof LevelStateMetaInfo]: LevelStateMetaInfo[P] };

function sameSnapshot(a: SerializerSnapshot | undefined | null, b: SerializerSnapshot | undefined | null): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/** How rows of an imported state must be rewritten: new state id, generation map (theirs → ours). */
export interface ImportMapping {
  readonly stateId: number;
  readonly generations: readonly number[];
  readonly meta: LevelStateMetaInfo;
}

export class StateCatalog {
  private readonly byName = new Map<string, MutableMeta>();
  private readonly byId = new Map<number, MutableMeta>();
  private nextId = 1;

  constructor(private readonly describe: string) {}

  all(): LevelStateMetaInfo[] {
    return [...this.byName.values()].map((m) => ({ ...m }));
  }

  get(name: string): LevelStateMetaInfo | undefined {
    return this.byName.get(name);
  }

  byStateId(id: number): LevelStateMetaInfo | undefined {
    return this.byId.get(id);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  private add(meta: MutableMeta): void {
    this.byName.set(meta.name, meta);
    this.byId.set(meta.stateId, meta);
    this.nextId = Math.max(this.nextId, meta.stateId + 1);
  }

  private allocateId(): number {
    while (this.byId.has(this.nextId)) this.nextId++;
    if (this.nextId > MAX_STATE_ID) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `${this.describe}: more than ${MAX_STATE_ID} states; use fewer states per operator.`,
      );
    }
    return this.nextId++;
  }

  /** Adopts the states of the base snapshot with their ids. */
  adopt(states: readonly LevelStateMetaInfo[]): void {
    for (const s of states) this.add({ ...normalize(s) });
  }

  /**
   * Merges a state of another snapshot (rescaling): same name must mean same kind and key-part
   * serializers; its value serializer generations are mapped onto ours (added when new).
   */
  importState(theirs: KeyedStateMetaInfo | LevelStateMetaInfo): ImportMapping {
    const t = normalize(theirs);
    const ours = this.byName.get(t.name);
    if (ours === undefined) {
      const meta: MutableMeta = { ...t, stateId: this.allocateId() };
      this.add(meta);
      return { stateId: meta.stateId, generations: (t.valueGenerations ?? []).map((_, i) => i), meta };
    }
    if (
      ours.kind !== t.kind ||
      !sameSnapshot(ours.namespaceSerializer, t.namespaceSerializer) ||
      !sameSnapshot(ours.userKeySerializer, t.userKeySerializer)
    ) {
      throw new RestoreError(
        'RESTORE_FAILED',
        `${this.describe}: state "${t.name}" is a ${t.kind} state with namespace ${describeSerializer(t.namespaceSerializer)} in one restored snapshot ` +
          `and a ${ours.kind} state with namespace ${describeSerializer(ours.namespaceSerializer)} in another. The snapshots do not belong together.`,
      );
    }
    const gens = [...(ours.valueGenerations ?? [])];
    const mapping = (t.valueGenerations ?? []).map((snap) => {
      if (snap === null) return 0;
      const found = gens.findIndex((g) => sameSnapshot(g, snap));
      if (found >= 0) return found;
      gens.push(snap);
      return gens.length - 1;
    });
    if (gens.length - 1 > MAX_GENERATION)
      throw new RestoreError(
        'RESTORE_FAILED',
        `${this.describe}: state "${t.name}" has too many serializer generations.`,
      );
    ours.valueGenerations = gens;
    return { stateId: ours.stateId, generations: mapping, meta: ours };
  }

  /** Registers a timer queue (or checks the restored one). */
  registerTimers(name: string, namespaceSerializer: Serializer<unknown>): LevelStateMetaInfo {
    const existing = this.byName.get(name);
    if (existing !== undefined) {
      if (existing.kind !== 'timers') throw kindMismatch(name, existing.kind, 'timers');
      checkAsIs(existing.namespaceSerializer, namespaceSerializer, name, 'namespace');
      existing.namespaceSerializer = snapshotOf(namespaceSerializer);
      return existing;
    }
    const meta: MutableMeta = {
      name,
      kind: 'timers',
      stateId: this.allocateId(),
      namespaceSerializer: snapshotOf(namespaceSerializer),
      ttl: false,
    };
    this.add(meta);
    return meta;
  }

  /**
   * Registers a keyed state (or checks a restored one) and returns the codec its rows are read and
   * written with: old generations read through their migration readers, new rows in the current one.
   */
  registerState<T>(
    name: string,
    kind: Exclude<KeyedStateMetaInfo['kind'], 'timers'>,
    namespaceSerializer: Serializer<unknown>,
    valueSerializer: Serializer<T>,
    userKeySerializer: Serializer<unknown> | undefined,
    ttl: boolean,
  ): { meta: LevelStateMetaInfo; codec: ValueCodec<T> } {
    const current = snapshotOf(valueSerializer as Serializer<unknown>);
    const existing = this.byName.get(name);
    const describe = `state "${name}" of ${this.describe}`;
    if (existing === undefined) {
      const meta: MutableMeta = {
        name,
        kind,
        stateId: this.allocateId(),
        namespaceSerializer: snapshotOf(namespaceSerializer),
        valueSerializer: current,
        ...(userKeySerializer ? { userKeySerializer: snapshotOf(userKeySerializer) } : {}),
        ttl,
        valueGenerations: [current],
        generation: 0,
      };
      this.add(meta);
      return { meta, codec: new ValueCodec(valueSerializer, 0, [], describe) };
    }
    if (existing.kind !== kind) throw kindMismatch(name, existing.kind, kind);
    checkAsIs(existing.namespaceSerializer, namespaceSerializer, name, 'namespace');
    if (userKeySerializer) checkAsIs(existing.userKeySerializer, userKeySerializer, name, 'map key');
    const gens = [...(existing.valueGenerations ?? [])];
    const readers: (Serializer<T> | undefined)[] = [];
    let writeGen = -1;
    for (let g = 0; g < gens.length; g++) {
      const snap = gens[g];
      if (snap === null) continue;
      const c = resolveCompatibility(snap, valueSerializer as Serializer<unknown>);
      if (c.kind === 'incompatible') {
        throw serializerIncompatible(
          describe,
          'value',
          `${c.reason}, and the new serializer cannot read the old bytes`,
        );
      }
      readers[g] = c.kind === 'compatible-as-is' ? valueSerializer : (c.reader as Serializer<T>);
      if (c.kind === 'compatible-as-is' && sameSnapshot(snap, current)) writeGen = g;
    }
    if (writeGen < 0) {
      gens.push(current);
      writeGen = gens.length - 1;
      if (writeGen > MAX_GENERATION) {
        throw new StateMigrationError(
          'SERIALIZER_INCOMPATIBLE',
          `${describe}: more than ${MAX_GENERATION} serializer migrations without a full snapshot in between.`,
        );
      }
    }
    existing.valueGenerations = gens;
    existing.generation = writeGen;
    existing.valueSerializer = current;
    existing.ttl = ttl;
    return { meta: existing, codec: new ValueCodec(valueSerializer, writeGen, readers, describe) };
  }
}

function normalize(s: KeyedStateMetaInfo | LevelStateMetaInfo): MutableMeta {
  const l = s as LevelStateMetaInfo;
  if (s.kind === 'timers') return { ...s };
  const gens = l.valueGenerations ?? [s.valueSerializer ?? null];
  return { ...s, valueGenerations: gens, generation: l.generation ?? 0 };
}

const kindMismatch = stateKindMismatch;

function checkAsIs(
  previous: SerializerSnapshot | undefined,
  current: Serializer<unknown>,
  name: string,
  what: string,
): void {
  requireCompatibleAsIs(
    `state "${name}"`,
    what,
    previous,
    current,
    `${what} bytes are part of LevelDB row keys and cannot be migrated`,
  );
}
