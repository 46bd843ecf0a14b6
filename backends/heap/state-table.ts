import type { KeyedStateMetaInfo } from '../../src/backend/handles.js';
import { ByteReader, fieldWriter, type ByteWriter, type FieldWriter } from '../../src/format/bytes.js';
import type { RawSection, SectionWriter } from '../../src/format/key-groups-stream.js';
import { bytesSerializer } from '../../src/serializers/builtins.js';
import { snapshotOf, type Serializer } from '../../src/serializers/serializer.js';
import type { StateKind, TtlConfig } from '../../src/state/descriptors.js';
import { isExpired, type TtlValue } from '../../src/state/ttl.js';
import { MAX_SLABBED, slabCopy } from './bytes-slab.js';
import { CowTable, type CowFrame } from './cow.js';
import { IdCodec } from './ids.js';
import { cachedIdRangeDecoder, idRangeDecoder, rangeDecoder } from './range-decoders.js';
import type { SectionCursor } from './section-cursor.js';
import { SnapshotEntries, type EntrySink } from './snapshot-entries.js';

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
  /** Writes bytes(valueSerializer.serialize(v)) straight into a section (snapshots). */
  valueWriter: FieldWriter<unknown>;
  /**
   * valueSerializer.copy, made once (a read of a pending key group copies through it). Small
   * `bytes` Buffers are copied into a shared slab (bytes-slab.ts): the serializer's copy allocates
   * an ArrayBuffer per value, which made copy-on-write the largest cost of records processed
   * during a snapshot.
   */
  readonly copyValue = (v: unknown): unknown =>
    this.valueSerializer === (bytesSerializer as Serializer<unknown>) &&
    v instanceof Buffer &&
    v.length > 0 &&
    v.length <= MAX_SLABBED
      ? slabCopy(v, 0, v.length)
      : this.valueSerializer.copy(v);

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
    this.valueWriter = fieldWriter(serializers.value);
    this.userKeyCodec = serializers.userKey ? new IdCodec(serializers.userKey) : undefined;
  }

  /** Switches to newer (compatible) serializers: heap values are live objects, so nothing is rewritten. */
  updateSerializers(serializers: StateSerializers): void {
    this.nsCodec = new IdCodec(serializers.namespace);
    this.valueSerializer = serializers.value;
    this.valueWriter = fieldWriter(serializers.value);
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
   * Writes key group `i` as the snapshot of `frame` saw it, in one go (see openSection).
   */
  writeSection(frame: CowFrame<unknown>, i: number, out: SectionWriter, now: number): void {
    this.openSection(frame, i, now, []).writeSome(out, NEVER_DUE);
  }

  /**
   * A cursor over key group `i` as the snapshot of `frame` saw it, for writing in slices: the
   * entries are collected and written in bounded steps while writes interleave
   * (snapshot-entries.ts; `refs` is scratch space, reused across key groups). With TTL and
   * full-snapshot cleanup, expired values, elements and map entries are left out. Keys, values
   * and elements are serialized straight into the section's buffer (FieldWriter); a namespace's
   * bytes are computed once per run of entries sharing it (the table iterates namespace by namespace).
   */
  openSection(frame: CowFrame<unknown>, i: number, now: number, refs: unknown[]): SectionCursor {
    return new TableSectionCursor(new SnapshotEntries(this, frame, i, refs), this.entryWriter(now));
  }

  /** Writes one entry; returns 1 if written, 0 if left out (expired or empty). */
  private entryWriter(now: number): EntryWrite {
    const keyW = this.keyCodec.write;
    const nsC = this.nsCodec;
    const valW = this.valueWriter;
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
      return (w, a, b, v) => {
        let els = v as readonly unknown[];
        if (ttl !== undefined) els = els.filter((e) => !isExpired(e as TtlValue<unknown>, ttl, now));
        if (els.length === 0) return 0;
        keyW(w, b);
        w.bytes(nsOf(a)).varint(els.length);
        for (let j = 0; j < els.length; j++) valW(w, els[j]);
        return 1;
      };
    }
    if (this.kind === 'map') {
      const ukW = this.userKeyCodec!.write;
      return (w, a, b, v) => {
        const m = v as UserMap;
        const kept =
          ttl === undefined ? undefined : [...m].filter(([, e]) => !isExpired(e[1] as TtlValue<unknown>, ttl, now));
        const n = kept === undefined ? m.size : kept.length;
        if (n === 0) return 0;
        keyW(w, b);
        w.bytes(nsOf(a)).varint(n);
        for (const [ukId, e] of kept ?? m) {
          ukW(w, ukId);
          if (e[1] === null || e[1] === undefined) w.u8(1);
          else {
            w.u8(0);
            valW(w, e[1]);
          }
        }
        return 1;
      };
    }
    return (w, a, b, v) => {
      if (ttl !== undefined && isExpired(v as TtlValue<unknown>, ttl, now)) return 0;
      keyW(w, b);
      w.bytes(nsOf(a));
      valW(w, v);
      return 1;
    };
  }

  /**
   * Loads a restored section of key group `i`, decoding with the serializers it was written with.
   * Fields are decoded straight from their byte ranges (range-decoders.ts); the framing is checked
   * as the ByteReader reads it (typed TRUNCATED / CORRUPT errors).
   */
  loadSection(section: RawSection, i: number, readers: StateSerializers, what: string): void {
    const buf = section.bytes;
    const r = new ByteReader(buf, what);
    const keyOf = idRangeDecoder(this.keyCodec, this.keyCodec.serializer);
    const nsOf = cachedIdRangeDecoder(idRangeDecoder(this.nsCodec, readers.namespace));
    const decodeValue = rangeDecoder(readers.value);
    const field = (): number => {
      const n = r.varint();
      r.skip(n);
      return r.pos - n;
    };
    for (let e = 0; e < section.entryCount; e++) {
      const ks = field();
      const keyId = keyOf(buf, ks, r.pos);
      const ns = field();
      const nsId = nsOf(buf, ns, r.pos);
      if (this.kind === 'list') {
        const n = r.count(1, 'list elements');
        const els: unknown[] = new Array(n);
        for (let j = 0; j < n; j++) {
          const vs = field();
          els[j] = decodeValue(buf, vs, r.pos);
        }
        const existing = this.get(i, nsId, keyId) as unknown[] | undefined;
        if (existing) for (const el of els) existing.push(el);
        else if (n > 0) this.load(i, nsId, keyId, els);
      } else if (this.kind === 'map') {
        const ukC = this.userKeyCodec!;
        const ukOf = rangeDecoder(readers.userKey ?? ukC.serializer);
        const n = r.count(2, 'map elements');
        let m = this.get(i, nsId, keyId) as UserMap | undefined;
        if (m === undefined) this.load(i, nsId, keyId, (m = new Map()));
        for (let j = 0; j < n; j++) {
          const us = field();
          const uk = ukOf(buf, us, r.pos);
          let v: unknown = null;
          if (r.u8() === 0) {
            const vs = field();
            v = decodeValue(buf, vs, r.pos);
          }
          m.set(ukC.id(uk), [uk, v]);
        }
        if (m.size === 0) this.delete(i, nsId, keyId);
      } else {
        const vs = field();
        this.load(i, nsId, keyId, decodeValue(buf, vs, r.pos));
      }
    }
  }
}

const NO_ID = Symbol('no-id');
const EMPTY = new Uint8Array(0);
const NEVER_DUE = (): boolean => false;

type EntryWrite = (w: ByteWriter, a: unknown, b: unknown, v: unknown) => number;

/** Serializes the entries of one key group into a section, in slices. */
class TableSectionCursor implements SectionCursor {
  private out: ByteWriter | undefined;
  private readonly sink: EntrySink;

  constructor(
    private readonly entries: SnapshotEntries<unknown>,
    write: EntryWrite,
  ) {
    this.sink = (a, b, v) => write(this.out!, a, b, v);
  }

  writeSome(section: SectionWriter, due: () => boolean): boolean {
    this.out = section.out;
    const r = this.entries.writeSome(this.sink, due);
    section.count += r.count;
    return r.done;
  }
}
