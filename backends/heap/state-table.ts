import type { KeyedStateMetaInfo } from '../../src/backend/handles.js';
import { listEntries, mapEntries, valueEntries, type RawSection, type SectionWriter } from '../../src/format/key-groups-stream.js';
import { snapshotOf, type Serializer } from '../../src/serializers/serializer.js';
import type { StateKind, TtlConfig } from '../../src/state/descriptors.js';
import { isExpired, type TtlValue } from '../../src/state/ttl.js';
import { CowTable, type CowFrame } from './cow.js';
import { IdCodec } from './ids.js';

/** A map state's value for one (key, namespace): user-key id → [user key, user value]. */
export type UserMap = Map<unknown, readonly [unknown, unknown]>;

export interface StateSerializers {
  readonly namespace: Serializer<unknown>;
  /** value/reducing: value; list: element; aggregating: accumulator; map: user value */
  readonly value: Serializer<unknown>;
  /** map only */
  readonly userKey?: Serializer<unknown>;
}

/**
 * One registered keyed state: per key group, namespace id → key id → live value (lists are
 * arrays, maps are UserMaps, everything else the value object itself). Knows how to write its
 * entries of one key group into a section and how to load a restored section.
 */
export class StateTable extends CowTable<unknown> {
  nsCodec: IdCodec<unknown>;
  userKeyCodec: IdCodec<unknown> | undefined;
  valueSerializer: Serializer<unknown>;

  constructor(
    rangeSize: number,
    readonly name: string,
    readonly kind: StateKind,
    readonly keyCodec: IdCodec<unknown>,
    serializers: StateSerializers,
    /** Set when values are TTL-wrapped. */
    readonly ttl: TtlConfig | undefined,
  ) {
    super(rangeSize);
    this.nsCodec = new IdCodec(serializers.namespace);
    this.valueSerializer = serializers.value;
    this.userKeyCodec = serializers.userKey ? new IdCodec(serializers.userKey) : undefined;
  }

  /** Switches to newer (compatible) serializers: heap values are live objects, so nothing is rewritten. */
  updateSerializers(serializers: StateSerializers): void {
    this.nsCodec = new IdCodec(serializers.namespace);
    this.valueSerializer = serializers.value;
    if (serializers.userKey) this.userKeyCodec = new IdCodec(serializers.userKey);
  }

  metaInfo(stateId: number): KeyedStateMetaInfo {
    return {
      name: this.name,
      kind: this.kind,
      stateId,
      namespaceSerializer: snapshotOf(this.nsCodec.serializer),
      valueSerializer: snapshotOf(this.valueSerializer),
      ...(this.userKeyCodec ? { userKeySerializer: snapshotOf(this.userKeyCodec.serializer) } : {}),
      ttl: this.ttl !== undefined,
    };
  }

  /** Entries stored (one per value or list, one per map entry). */
  countEntries(): number {
    let n = 0;
    for (let i = 0; i < this.rangeSize; i++) {
      const slot = this.slots[i];
      if (slot === undefined) continue;
      for (const inner of slot.values()) {
        if (this.kind === 'map') for (const m of inner.values()) n += (m as UserMap).size;
        else n += inner.size;
      }
    }
    return n;
  }

  /**
   * Writes key group `i` as the snapshot of `frame` saw it. With TTL and full-snapshot cleanup,
   * expired values, elements and map entries are left out.
   */
  writeSection(frame: CowFrame<unknown>, i: number, out: SectionWriter, now: number): void {
    const keyC = this.keyCodec;
    const nsC = this.nsCodec;
    const ser = this.valueSerializer;
    const ttl = this.ttl !== undefined && this.ttl.cleanupInFullSnapshot !== false ? this.ttl : undefined;
    let lastNs: unknown = NO_ID;
    let nsBytes: Uint8Array = EMPTY;
    const nsOf = (a: unknown): Uint8Array => {
      if (a !== lastNs) {
        lastNs = a;
        nsBytes = nsC.bytes(a);
      }
      return nsBytes;
    };
    if (this.kind === 'list') {
      this.forEachInSnapshot(frame, i, (a, b, v) => {
        let els = v as readonly unknown[];
        if (ttl !== undefined) els = els.filter((w) => !isExpired(w as TtlValue<unknown>, ttl, now));
        if (els.length === 0) return;
        out.listEntry(keyC.bytes(b), nsOf(a), els.length);
        for (const el of els) out.listElement(ser.serialize(el));
      });
    } else if (this.kind === 'map') {
      const ukC = this.userKeyCodec!;
      this.forEachInSnapshot(frame, i, (a, b, v) => {
        let entries: Iterable<[unknown, readonly [unknown, unknown]]> = (v as UserMap).entries();
        let n = (v as UserMap).size;
        if (ttl !== undefined) {
          const kept = [...(v as UserMap).entries()].filter(([, e]) => !isExpired(e[1] as TtlValue<unknown>, ttl, now));
          entries = kept;
          n = kept.length;
        }
        if (n === 0) return;
        out.mapEntry(keyC.bytes(b), nsOf(a), n);
        for (const [ukId, e] of entries) out.mapElement(ukC.bytes(ukId), e[1] === null || e[1] === undefined ? null : ser.serialize(e[1]));
      });
    } else {
      this.forEachInSnapshot(frame, i, (a, b, v) => {
        if (ttl !== undefined && isExpired(v as TtlValue<unknown>, ttl, now)) return;
        out.valueEntry(keyC.bytes(b), nsOf(a), ser.serialize(v));
      });
    }
  }

  /** Loads a restored section of key group `i`, decoding with the serializers it was written with. */
  loadSection(section: RawSection, i: number, readers: StateSerializers, what: string): void {
    const keyC = this.keyCodec;
    const nsC = this.nsCodec;
    const keyReader = keyC.serializer;
    if (this.kind === 'list') {
      for (const e of listEntries(section, what)) {
        const keyId = keyC.idFromBytes(e.key, keyReader);
        const nsId = nsC.idFromBytes(e.namespace, readers.namespace);
        const els = e.elements.map((b) => readers.value.deserialize(b));
        const existing = this.get(i, nsId, keyId) as unknown[] | undefined;
        if (existing) existing.push(...els);
        else if (els.length > 0) this.load(i, nsId, keyId, els);
      }
    } else if (this.kind === 'map') {
      const ukC = this.userKeyCodec!;
      const ukReader = readers.userKey ?? ukC.serializer;
      for (const e of mapEntries(section, what)) {
        const keyId = keyC.idFromBytes(e.key, keyReader);
        const nsId = nsC.idFromBytes(e.namespace, readers.namespace);
        let m = this.get(i, nsId, keyId) as UserMap | undefined;
        if (m === undefined) this.load(i, nsId, keyId, (m = new Map()));
        for (const [ukBytes, vBytes] of e.entries) {
          const uk = ukReader.deserialize(ukBytes);
          m.set(ukC.id(uk), [uk, vBytes === null ? null : readers.value.deserialize(vBytes)]);
        }
        if (m.size === 0) this.delete(i, nsId, keyId);
      }
    } else {
      for (const e of valueEntries(section, what)) {
        this.load(i, nsC.idFromBytes(e.namespace, readers.namespace), keyC.idFromBytes(e.key, keyReader), readers.value.deserialize(e.value));
      }
    }
  }
}

const NO_ID = Symbol('no-id');
const EMPTY = new Uint8Array(0);
