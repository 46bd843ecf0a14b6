import type { SnapshotOptions } from '../../src/backend/contract.js';
import type { KeyedStateHandle, KeyedStateMetaInfo } from '../../src/backend/handles.js';
import { SnapshotError, StreamStateError } from '../../src/errors.js';
import { ByteWriter } from '../../src/format/bytes.js';
import { CANONICAL_LAYOUT, KeyGroupsStreamWriter, SectionWriter } from '../../src/format/key-groups-stream.js';
import { CanonicalKeyGroupsWriter } from '../../src/format/canonical-layout.js';
import { snapshotOf, type Serializer } from '../../src/serializers/serializer.js';
import type { CancellableTask } from './incremental-snapshot.js';
import type { LevelStateMetaInfo } from './meta.js';
import { isCountRowStateId, keyGroupPrefix, ROW_HEADER_BYTES } from './row-keys.js';
import type { LevelDbSnapshotSource } from './snapshot-source.js';
import type { RawTimer } from './timer-queue.js';
import { ValueCodec } from './value-codec.js';

/**
 * Full snapshots (option `incremental: false`, and canonical savepoints): the key-groups stream of
 * src/format/key-groups-stream.ts, read from an explicit LevelDB snapshot taken in the synchronous
 * part, so the asynchronous part sees exactly the state at the checkpoint while processing goes on.
 * Values are written in the current serializer (rows of older generations are converted) without
 * the row header; expired TTL values are dropped unless the state's TTL config sets
 * cleanupInFullSnapshot: false. A list's base row and chunk rows (states.ts) become one entry. Canonical savepoints are written through
 * CanonicalKeyGroupsWriter (docs/FORMAT.md, "Canonical savepoints").
 */
export const LEVELDB_FULL_LAYOUT = 'leveldb-full-v1';

/** Rows read per nextv() call, and the bytes one call may hold (classic-level stops at 16 KiB unless told). */
const PAGE_ROWS = 4096;
const PAGE_BYTES = 1024 * 1024;

interface StatePlan {
  readonly meta: LevelStateMetaInfo;
  readonly isMap: boolean;
  readonly isList: boolean;
  /**
   * Writes bytes(current-serializer value) of a stored row value (with header) to `out`; false
   * (nothing written) when it is expired. Rows of the current generation are copied as they are.
   */
  readonly writeValue: (row: Buffer, out: ByteWriter) => boolean;
  /** Writes the list row's unexpired elements as bytes(element)* to `out`; returns how many. */
  readonly writeElements: (row: Buffer, out: ByteWriter) => number;
}

function readLength(row: Buffer, at: { pos: number }): number {
  let len = 0;
  let mul = 1;
  for (;;) {
    const b = row[at.pos++];
    len += (b & 0x7f) * mul;
    if ((b & 0x80) === 0 || at.pos >= row.length) return len;
    mul *= 0x80;
  }
}

function plan(
  meta: LevelStateMetaInfo,
  info: { codec: ValueCodec<unknown> | null; ttlMs: number | null; cleanupInFullSnapshot: boolean } | undefined,
  now: number,
): StatePlan {
  const current = meta.generation ?? 0;
  const codec = info?.codec ?? null;
  // Expired values are dropped only where the TTL config asks for it (cleanupInFullSnapshot, default true).
  const ttlMs = meta.ttl && info?.cleanupInFullSnapshot !== false ? (info?.ttlMs ?? null) : null;
  /** Whether the payload `bytes[start, end)` (f64 last-access timestamp first) has expired. */
  const expired = (bytes: Buffer, start: number, end: number): boolean =>
    ttlMs !== null && end - start >= 8 && bytes.readDoubleBE(start) + ttlMs <= now;
  const older = (): ValueCodec<unknown> => {
    if (codec === null) {
      throw new SnapshotError(
        'SNAPSHOT_FAILED',
        `state "${meta.name}" holds rows of an older serializer generation and was not registered since the restore, so they cannot be converted ` +
          'for a full snapshot. Register the state (getState) before taking full snapshots or savepoints.',
      );
    }
    return codec;
  };
  const at = { pos: 0 };
  return {
    meta,
    isMap: meta.kind === 'map',
    isList: meta.kind === 'list',
    writeValue: (row, out) => {
      if (row[0] >>> 1 === current) {
        if (expired(row, 1, row.length)) return false;
        out.varint(row.length - 1).rawRange(row, 1, row.length);
        return true;
      }
      const c = older();
      const payload = Buffer.from(c.serializer.serialize(c.decode(row)));
      if (expired(payload, 0, payload.length)) return false;
      out.bytes(payload);
      return true;
    },
    writeElements: (row, out) => {
      let n = 0;
      if (row[0] >>> 1 === current) {
        // The row is header + (varint len + element)*: copy the elements, re-encoding each length.
        at.pos = 1;
        while (at.pos < row.length) {
          const len = readLength(row, at);
          const start = at.pos;
          const end = Math.min(start + len, row.length);
          at.pos = start + len;
          if (expired(row, start, end)) continue;
          out.varint(end - start).rawRange(row, start, end);
          n++;
        }
        return n;
      }
      if (codec === null)
        throw new SnapshotError(
          'SNAPSHOT_FAILED',
          `state "${meta.name}" holds rows of an older serializer generation; register it before a full snapshot.`,
        );
      for (const v of codec.decodeList(row)) {
        const el = Buffer.from(codec.serializer.serialize(v));
        if (expired(el, 0, el.length)) continue;
        out.bytes(el);
        n++;
      }
      return n;
    },
  };
}

/** End of the namespace in a row key (key group, state id, bytes(key), bytes(ns), user key): where a map's user key starts. */
function namespaceEnd(k: Buffer): number {
  const at = { pos: ROW_HEADER_BYTES };
  const kl = readLength(k, at);
  at.pos += kl;
  const complete = at.pos < k.length;
  if (complete) {
    const nl = readLength(k, at);
    at.pos += nl;
  }
  if (!complete || at.pos > k.length) {
    throw new SnapshotError(
      'SNAPSHOT_FAILED',
      `a row key of key group ${k.readUInt16BE(0)} is shorter than its length prefixes say; the working directory is damaged.`,
    );
  }
  return at.pos;
}

/** Writes bytes(key) bytes(ns) of a row key (lengths re-encoded as minimal varints). */
function writeKeyAndNamespace(k: Buffer, out: ByteWriter): void {
  namespaceEnd(k); // bounds
  const at = { pos: ROW_HEADER_BYTES };
  const kl = readLength(k, at);
  out.varint(kl).rawRange(k, at.pos, at.pos + kl);
  at.pos += kl;
  const nl = readLength(k, at);
  out.varint(nl).rawRange(k, at.pos, at.pos + nl);
}

export async function takeFullSnapshot(
  b: LevelDbSnapshotSource,
  checkpointId: number,
  options: SnapshotOptions,
  canonical: boolean,
): Promise<CancellableTask> {
  // ---- synchronous part: flush, pin a LevelDB snapshot, copy meta and timers.
  await b.store.flush();
  const snapshot = b.db.snapshot();
  const states = b.catalog.all();
  const timers = b.timersSnapshot();
  const now = b.clock();
  const plans = new Map<number, StatePlan>();
  for (const s of states) {
    if (s.kind === 'timers') continue;
    plans.set(s.stateId, plan(s, b.registeredInfo(s.name), now));
  }
  // Timer state id -> key group -> its timers (in queue order), so each key group finds its own at once.
  const timerIds = new Map<number, Map<number, RawTimer[]>>();
  for (const s of states) {
    if (s.kind !== 'timers') continue;
    const byKg = new Map<number, RawTimer[]>();
    for (const t of timers.get(s.name) ?? []) {
      const list = byKg.get(t.keyGroup);
      if (list === undefined) byKg.set(t.keyGroup, [t]);
      else list.push(t);
    }
    timerIds.set(s.stateId, byKg);
  }
  const range = b.keyGroupRange;
  let cancelled = false;
  const stream = options.streams.createOutputStream('exclusive');

  const run = async (): Promise<KeyedStateHandle | null> => {
    const headerStates: KeyedStateMetaInfo[] = states.map((s) => {
      const { valueGenerations: _g, generation: _c, ...rest } = s;
      return rest;
    });
    try {
      const header = {
        layout: canonical ? CANONICAL_LAYOUT : LEVELDB_FULL_LAYOUT,
        keySerializer: snapshotOf(b.keySerializer as Serializer<unknown>),
        maxParallelism: b.maxParallelism,
        keyGroupRange: { start: range.start, end: range.end },
        states: headerStates,
      };
      // Canonical savepoints go through the shared canonical writer (states renumbered by name,
      // entries sorted), so they are byte-identical to every other backend's.
      const writer = canonical
        ? new CanonicalKeyGroupsWriter(stream, header)
        : new KeyGroupsStreamWriter(stream, header);
      const section = new SectionWriter();
      const out = section.out;
      /** Elements of the map entry (or list) being gathered: their count is written before them. */
      const elements = new ByteWriter(16 * 1024);
      const it = b.db.iterator({
        gte: keyGroupPrefix(range.start),
        lt: keyGroupPrefix(range.end + 1),
        snapshot,
        highWaterMarkBytes: PAGE_BYTES,
      });
      // One page is read ahead: LevelDB fills the next page on the thread pool while this one is written.
      let ahead = it.nextv(PAGE_ROWS);
      ahead.catch(() => undefined);
      let page: [Buffer, Buffer][] = [];
      let pi = 0;
      let ended = false;
      const nextPage = async (): Promise<void> => {
        page = await ahead;
        pi = 0;
        if (page.length === 0) ended = true;
        else {
          ahead = it.nextv(PAGE_ROWS);
          ahead.catch(() => undefined);
        }
      };
      await nextPage();
      try {
        for (let kg = range.start; kg <= range.end; kg++) {
          if (cancelled || b.isClosed())
            throw new SnapshotError(
              'SNAPSHOT_CANCELLED',
              `checkpoint ${checkpointId} was cancelled: the LevelDB backend was closed.`,
            );
          writer.beginKeyGroup(kg);
          // Timer sections first, then the rows' sections in state-id order (row keys sort by key group, then state id).
          for (const [sid, byKg] of timerIds) {
            const inKg = byKg.get(kg);
            if (inKg === undefined) continue;
            for (const t of inKg) section.timerEntry(t.timestamp, t.key, t.namespace);
            writer.addSection(sid, section);
          }
          // Rows are written straight into the section as they come; a map entry's elements (and a
          // list's, from its base row and chunk rows) are gathered until its (key, namespace)
          // changes, since their count precedes them.
          let sid = -1;
          let p: StatePlan | undefined;
          let entryKey: Buffer | null = null;
          let entryNsEnd = 0;
          let entryElements = 0;
          const endMapEntry = (): void => {
            if (entryKey !== null && entryElements > 0) {
              section.count++;
              writeKeyAndNamespace(entryKey, out);
              out.varint(entryElements).raw(elements.view());
            }
            entryKey = null;
            entryElements = 0;
            elements.reset();
          };
          for (;;) {
            if (pi >= page.length) {
              if (ended) break;
              await nextPage();
              if (ended) break;
            }
            const [k, v] = page[pi];
            if (k.readUInt16BE(0) !== kg) break;
            pi++;
            const rowSid = k.readUInt16BE(2);
            if (rowSid !== sid) {
              endMapEntry();
              if (sid >= 0) writer.addSection(sid, section);
              sid = rowSid;
              p = isCountRowStateId(rowSid) ? undefined : plans.get(rowSid);
              if (p === undefined && !isCountRowStateId(rowSid)) {
                throw new SnapshotError(
                  'SNAPSHOT_FAILED',
                  `row of unknown state id ${rowSid} in key group ${kg}; the working directory is damaged.`,
                );
              }
            }
            if (p === undefined) continue; // count rows are bookkeeping, not entries
            if (p.isMap || p.isList) {
              const nsEnd = namespaceEnd(k);
              if (
                entryKey === null ||
                entryNsEnd !== nsEnd ||
                k.compare(entryKey, ROW_HEADER_BYTES, entryNsEnd, ROW_HEADER_BYTES, nsEnd) !== 0
              ) {
                endMapEntry();
                entryKey = k;
                entryNsEnd = nsEnd;
              }
              if (p.isList) {
                entryElements += p.writeElements(v, elements);
                continue;
              }
              const mark = elements.length;
              elements.varint(k.length - nsEnd).rawRange(k, nsEnd, k.length);
              if (ValueCodec.isNull(v)) elements.u8(1);
              else if (!p.writeValue(v, elements.u8(0))) {
                elements.truncate(mark); // expired
                continue;
              }
              entryElements++;
            } else {
              const mark = out.length;
              writeKeyAndNamespace(k, out);
              if (p.writeValue(v, out)) section.count++;
              else out.truncate(mark); // expired
            }
          }
          endMapEntry();
          if (sid >= 0) writer.addSection(sid, section);
          await writer.endKeyGroup();
        }
      } finally {
        await ahead.catch(() => undefined);
        await it.close();
      }
      return await writer.finish();
    } catch (err) {
      await stream.discard().catch(() => undefined);
      if (err instanceof StreamStateError) throw err;
      throw new SnapshotError(
        'SNAPSHOT_FAILED',
        `LevelDB full snapshot ${checkpointId} failed: ${(err as Error).message}`,
        { cause: err },
      );
    } finally {
      await snapshot.close().catch(() => undefined);
    }
  };
  return {
    checkpointId,
    done: run(),
    cancel: () => {
      cancelled = true;
      void stream.discard().catch(() => undefined);
    },
  };
}
