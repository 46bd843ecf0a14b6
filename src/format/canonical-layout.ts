import type { StateOutputStream } from '../backend/contract.js';
import type { KeyedStateMetaInfo, KeyGroupsStateHandle } from '../backend/handles.js';
import { FormatError, SnapshotError, StreamStateError } from '../errors.js';
import {
  CANONICAL_LAYOUT,
  entryKindOf,
  KeyGroupsStreamWriter,
  MAX_STATE_ID,
  SectionWriter,
  writeCanonicalEntries,
  type EntryKind,
  type KeyGroupsStreamHeader,
} from './key-groups-stream.js';
import { ByteWriter } from './bytes.js';
import type { SerializerConfig, SerializerSnapshot } from '../serializers/serializer.js';

/**
 * Canonical savepoints (docs/FORMAT.md, "Canonical savepoints"): the key-groups stream with layout
 * `canonical-v1`, a pure function of (key serializer, state meta infos, logical contents):
 *
 * - states ordered by the UTF-8 bytes of their names (a keyed state before a timer queue of the
 *   same name), state ids 0..n-1 in that order;
 * - every meta info and serializer snapshot written with a fixed field order;
 * - value/list/map entries sorted by (key bytes, namespace bytes); map elements by user-key
 *   bytes; list elements keep their order; timers sorted by (key bytes, namespace bytes, timestamp);
 * - empty lists and empty maps are left out.
 *
 * CanonicalKeyGroupsWriter takes sections in any backend's order and id numbering and writes
 * them canonically, so every backend (and the converter) produces byte-identical data.
 */

function compareNames(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** A keyed state and a timer queue may share a name: they are told apart by kind. */
export function stateIdentity(m: Pick<KeyedStateMetaInfo, 'name' | 'kind'>): string {
  return `${m.kind === 'timers' ? 't' : 's'}:${m.name}`;
}

function compareStates(a: KeyedStateMetaInfo, b: KeyedStateMetaInfo): number {
  return compareNames(a.name, b.name) || (a.kind === 'timers' ? 1 : 0) - (b.kind === 'timers' ? 1 : 0);
}

function normalizeConfig(c: SerializerConfig): SerializerConfig {
  if (Array.isArray(c)) return c.map(normalizeConfig);
  if (c !== null && typeof c === 'object') {
    const out: { [k: string]: SerializerConfig } = {};
    for (const k of Object.keys(c).sort()) out[k] = normalizeConfig(c[k]);
    return out;
  }
  return c;
}

/** A serializer snapshot with a fixed field order (id, version, config) and sorted config keys. */
export function normalizeSerializerSnapshot(s: SerializerSnapshot): SerializerSnapshot {
  return s.config === undefined
    ? { id: s.id, version: s.version }
    : { id: s.id, version: s.version, config: normalizeConfig(s.config) };
}

function sameSnapshot(a: SerializerSnapshot | undefined, b: SerializerSnapshot | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return JSON.stringify(normalizeSerializerSnapshot(a)) === JSON.stringify(normalizeSerializerSnapshot(b));
}

/** Fixed field order: name, kind, stateId, namespaceSerializer, valueSerializer?, userKeySerializer?, ttl. */
function normalizeMeta(m: KeyedStateMetaInfo, stateId: number): KeyedStateMetaInfo {
  return {
    name: m.name,
    kind: m.kind,
    stateId,
    namespaceSerializer: normalizeSerializerSnapshot(m.namespaceSerializer),
    ...(m.valueSerializer === undefined ? {} : { valueSerializer: normalizeSerializerSnapshot(m.valueSerializer) }),
    ...(m.userKeySerializer === undefined
      ? {}
      : { userKeySerializer: normalizeSerializerSnapshot(m.userKeySerializer) }),
    ttl: m.ttl === true,
  };
}

/**
 * The canonical state list for meta infos gathered from one or more handles: one entry per name
 * (the same name must mean the same kind and serializers everywhere), sorted by name, ids 0..n-1.
 */
export function canonicalStates(metas: Iterable<KeyedStateMetaInfo>): KeyedStateMetaInfo[] {
  const byName = new Map<string, KeyedStateMetaInfo>();
  for (const m of metas) {
    const seen = byName.get(stateIdentity(m));
    if (seen === undefined) {
      byName.set(stateIdentity(m), m);
      continue;
    }
    if (
      seen.kind !== m.kind ||
      seen.ttl !== m.ttl ||
      !sameSnapshot(seen.namespaceSerializer, m.namespaceSerializer) ||
      !sameSnapshot(seen.valueSerializer, m.valueSerializer) ||
      !sameSnapshot(seen.userKeySerializer, m.userKeySerializer)
    ) {
      throw new FormatError(
        'CORRUPT',
        `state "${m.name}" is recorded differently by two subtasks of one snapshot (kind or serializers differ); the snapshot is inconsistent. Use another checkpoint or savepoint.`,
      );
    }
  }
  const sorted = [...byName.values()].sort(compareStates);
  if (sorted.length > MAX_STATE_ID + 1) {
    throw new SnapshotError(
      'SNAPSHOT_FAILED',
      `too many keyed states (${sorted.length}); at most ${MAX_STATE_ID + 1} fit in one snapshot.`,
    );
  }
  return sorted.map((m, i) => normalizeMeta(m, i));
}

/** The canonical header for a backend's (or converter's) header: same key serializer, range and states, canonical order. */
export function canonicalHeader(
  header: Pick<KeyGroupsStreamHeader, 'keySerializer' | 'maxParallelism' | 'keyGroupRange'>,
  states: Iterable<KeyedStateMetaInfo>,
): KeyGroupsStreamHeader {
  return {
    layout: CANONICAL_LAYOUT,
    keySerializer: normalizeSerializerSnapshot(header.keySerializer),
    maxParallelism: header.maxParallelism,
    keyGroupRange: { start: header.keyGroupRange.start, end: header.keyGroupRange.end },
    states: canonicalStates(states),
  };
}

// ------------------------------------------------------------------------------ entries

interface KeyedEntry {
  readonly key: Buffer;
  readonly namespace: Buffer;
}
interface ValueE extends KeyedEntry {
  readonly value: Buffer;
}
interface ListE extends KeyedEntry {
  readonly elements: Buffer[];
}
interface MapE extends KeyedEntry {
  readonly entries: Array<[Buffer, Buffer | null]>;
}
interface TimerE extends KeyedEntry {
  readonly timestamp: number;
}
type AnyEntry = ValueE | ListE | MapE | TimerE;

function compareKeyed(a: KeyedEntry, b: KeyedEntry): number {
  return Buffer.compare(a.key, b.key) || Buffer.compare(a.namespace, b.namespace);
}

function compareTimers(a: TimerE, b: TimerE): number {
  return compareKeyed(a, b) || a.timestamp - b.timestamp;
}

/** Sorts the entries of one state in one key group canonically and encodes them into `section`. */
export function writeCanonicalSection(kind: EntryKind, entries: AnyEntry[], section: SectionWriter): void {
  if (kind === 'timers') {
    (entries as TimerE[]).sort(compareTimers);
    for (const t of entries as TimerE[]) section.timerEntry(t.timestamp, t.key, t.namespace);
    return;
  }
  entries.sort(compareKeyed);
  for (const e of entries) {
    if (kind === 'value') section.valueEntry(e.key, e.namespace, (e as ValueE).value);
    else if (kind === 'list') {
      const l = e as ListE;
      section.listEntry(l.key, l.namespace, l.elements.length);
      for (const el of l.elements) section.listElement(el);
    } else {
      const m = e as MapE;
      m.entries.sort((x, y) => Buffer.compare(x[0], y[0]));
      section.mapEntry(m.key, m.namespace, m.entries.length);
      for (const [uk, v] of m.entries) section.mapElement(uk, v);
    }
  }
}

/** Maps a source's state ids to canonical ids. */
export type SourceIds = ReadonlyMap<number, number>;

/**
 * Writes a canonical key-groups stream from sections given in any order and numbering. The
 * interface mirrors KeyGroupsStreamWriter (beginKeyGroup / addSection / addRawSection /
 * endKeyGroup / finish), so a backend swaps one for the other. Sections of one key group are
 * buffered (copied) until endKeyGroup, then sorted and written; memory use is one key group.
 */
export class CanonicalKeyGroupsWriter {
  readonly header: KeyGroupsStreamHeader;
  private readonly inner: KeyGroupsStreamWriter;
  private readonly kinds: EntryKind[];
  private readonly defaultIds: SourceIds;
  /** Per canonical state id: the encoded entries added in the current key group (copied), and their count. */
  private readonly pending: ByteWriter[];
  private readonly pendingCount: number[];
  private readonly touched = new Set<number>();
  private readonly section = new SectionWriter();
  private keyGroup = -1;

  /**
   * `sourceHeader` describes the sections that will be added (its state ids); `extraStates`
   * adds states of further sources (see `idsFor`) to the canonical header.
   */
  constructor(
    stream: StateOutputStream,
    sourceHeader: KeyGroupsStreamHeader,
    opts: { extraStates?: Iterable<KeyedStateMetaInfo>; flushBytes?: number } = {},
  ) {
    this.header = canonicalHeader(sourceHeader, [...sourceHeader.states, ...(opts.extraStates ?? [])]);
    this.inner = new KeyGroupsStreamWriter(stream, this.header, {
      canonical: true,
      ...(opts.flushBytes === undefined ? {} : { flushBytes: opts.flushBytes }),
    });
    this.kinds = this.header.states.map((s) => entryKindOf(s.kind));
    this.pending = this.header.states.map(() => new ByteWriter(1024));
    this.pendingCount = this.header.states.map(() => 0);
    this.defaultIds = this.idsFor(sourceHeader.states);
  }

  /** The id mapping for sections of a source whose header lists `states` (each must be in the canonical header). */
  idsFor(states: readonly KeyedStateMetaInfo[]): SourceIds {
    const byName = new Map(this.header.states.map((s) => [stateIdentity(s), s.stateId]));
    const ids = new Map<number, number>();
    for (const s of states) {
      const id = byName.get(stateIdentity(s));
      if (id === undefined)
        throw new StreamStateError(
          'INVALID_ARGUMENT',
          `state "${s.name}" is not in the canonical header; pass it in extraStates.`,
        );
      ids.set(s.stateId, id);
    }
    return ids;
  }

  beginKeyGroup(keyGroup: number): void {
    this.inner.beginKeyGroup(keyGroup);
    this.keyGroup = keyGroup;
  }

  /** Adds a section built with a SectionWriter (source state id) and resets it. */
  addSection(stateId: number, section: SectionWriter): void {
    if (section.count > 0) this.addRawSection(stateId, section.count, section.out.view());
    section.reset();
  }

  /** Adds encoded entries of a state (source state id). The bytes are copied. */
  addRawSection(stateId: number, entryCount: number, entries: Uint8Array, ids: SourceIds = this.defaultIds): void {
    if (this.keyGroup < 0)
      throw new StreamStateError('INVALID_ARGUMENT', 'addSection outside a key group; call beginKeyGroup first');
    if (entryCount === 0) return;
    const id = ids.get(stateId);
    if (id === undefined)
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `section of state id ${stateId}, which the source header does not list`,
      );
    // Entries are self-delimiting: several sections of one state concatenate into one.
    this.pending[id].raw(entries);
    this.pendingCount[id] += entryCount;
    this.touched.add(id);
  }

  /**
   * Adds `entryCount` encoded entries of a state that lie in `bytes[start, end)` (canonical
   * state id: no mapping), copied without creating a view (re-hashing adds entries one by one).
   */
  addRawRange(stateId: number, entryCount: number, bytes: Uint8Array, start: number, end: number): void {
    if (this.keyGroup < 0)
      throw new StreamStateError('INVALID_ARGUMENT', 'addRawRange outside a key group; call beginKeyGroup first');
    if (entryCount === 0) return;
    if (this.pending[stateId] === undefined)
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `entries of state id ${stateId}, which the canonical header does not list`,
      );
    this.pending[stateId].rawRange(bytes, start, end);
    this.pendingCount[stateId] += entryCount;
    this.touched.add(stateId);
  }

  async endKeyGroup(): Promise<void> {
    for (const id of [...this.touched].sort((a, b) => a - b)) {
      const what = `key group ${this.keyGroup}, state "${this.header.states[id].name}"`;
      this.section.count += writeCanonicalEntries(
        this.kinds[id],
        this.pending[id].view(),
        this.pendingCount[id],
        this.section.out,
        true,
        what,
      );
      this.inner.addSection(id, this.section);
      this.pending[id].reset();
      this.pendingCount[id] = 0;
    }
    this.touched.clear();
    this.keyGroup = -1;
    await this.inner.endKeyGroup();
  }

  get blockCount(): number {
    return this.inner.blockCount;
  }

  finish(): Promise<KeyGroupsStateHandle | null> {
    return this.inner.finish();
  }
}
