import type { SnapshotOptions } from '../../src/backend/contract.js';
import type { KeyedStateHandle, KeyedStateMetaInfo } from '../../src/backend/handles.js';
import { SnapshotError, StreamStateError } from '../../src/errors.js';
import { CANONICAL_LAYOUT, KeyGroupsStreamWriter, SectionWriter } from '../../src/format/key-groups-stream.js';
import { CanonicalKeyGroupsWriter } from '../../src/savepoint/canonical.js';
import { snapshotOf, type Serializer } from '../../src/serializers/serializer.js';
import type { LevelDbKeyedStateBackend } from './backend.js';
import type { CancellableTask } from './incremental-snapshot.js';
import type { LevelStateMetaInfo } from './meta.js';
import { decodeRowKey, isCountRowStateId, keyGroupPrefix } from './row-keys.js';
import type { RawTimer } from './timer-queue.js';
import { ValueCodec } from './value-codec.js';

/**
 * Full snapshots (option `incremental: false`, and canonical savepoints): the key-groups stream of
 * src/format/key-groups-stream.ts, read from an explicit LevelDB snapshot taken in the synchronous
 * part, so the asynchronous part sees exactly the state at the checkpoint while processing goes on.
 * Values are written in the current serializer (rows of older generations are converted) without
 * the row header; expired TTL values are dropped. Canonical savepoints are written through
 * CanonicalKeyGroupsWriter (docs/FORMAT.md, "Canonical savepoints").
 */
export const LEVELDB_FULL_LAYOUT = 'leveldb-full-v1';

interface StatePlan {
  readonly meta: LevelStateMetaInfo;
  /** Converts a stored row value (with header) to current-serializer bytes; null = drop (expired). */
  readonly convert: (row: Buffer) => Buffer | null;
  readonly isMap: boolean;
  readonly isList: boolean;
  /** For list elements: drop expired ones. */
  readonly expired: (payload: Buffer) => boolean;
}

function plan(meta: LevelStateMetaInfo, info: { codec: ValueCodec<unknown> | null; ttlMs: number | null } | undefined, now: number): StatePlan {
  const current = meta.generation ?? 0;
  const codec = info?.codec ?? null;
  const ttlMs = meta.ttl ? info?.ttlMs ?? null : null;
  const expired = (payload: Buffer): boolean => ttlMs !== null && payload.length >= 8 && payload.readDoubleBE(0) + ttlMs <= now;
  const toCurrent = (row: Buffer): Buffer => {
    if (row[0] >>> 1 === current) return row.subarray(1);
    if (codec === null) {
      throw new SnapshotError(
        'SNAPSHOT_FAILED',
        `state "${meta.name}" holds rows of an older serializer generation and was not registered since the restore, so they cannot be converted ` +
          'for a full snapshot. Register the state (getState) before taking full snapshots or savepoints.',
      );
    }
    return Buffer.from(codec.serializer.serialize(codec.decode(row)));
  };
  return {
    meta,
    isMap: meta.kind === 'map',
    isList: meta.kind === 'list',
    expired,
    convert: (row) => {
      const payload = toCurrent(row);
      return expired(payload) ? null : payload;
    },
  };
}

function listElements(row: Buffer, meta: LevelStateMetaInfo, codec: ValueCodec<unknown> | null): Buffer[] {
  if (row[0] >>> 1 === (meta.generation ?? 0)) return ValueCodec.listElementBytes(row);
  if (codec === null) throw new SnapshotError('SNAPSHOT_FAILED', `state "${meta.name}" holds rows of an older serializer generation; register it before a full snapshot.`);
  return codec.decodeList(row).map((v) => Buffer.from(codec.serializer.serialize(v)));
}

interface PendingEntry {
  key: Buffer;
  namespace: Buffer;
  value?: Buffer;
  elements?: Buffer[];
  map?: [Buffer, Buffer | null][];
}

export async function takeFullSnapshot<K>(
  backend: LevelDbKeyedStateBackend<K>,
  checkpointId: number,
  options: SnapshotOptions,
  canonical: boolean,
): Promise<CancellableTask> {
  const b = backend as unknown as LevelDbKeyedStateBackend<unknown>;
  // ---- synchronous part: flush, pin a LevelDB snapshot, copy meta and timers.
  await b.store.flush();
  const snapshot = b.db.snapshot();
  const states = b.catalog.all();
  const timers = b.timersSnapshot();
  const now = b.clock();
  const plans = new Map<number, StatePlan>();
  const codecs = new Map<number, ValueCodec<unknown> | null>();
  for (const s of states) {
    if (s.kind === 'timers') continue;
    const info = b.registeredInfo(s.name);
    plans.set(s.stateId, plan(s, info, now));
    codecs.set(s.stateId, info?.codec ?? null);
  }
  const timerIds = new Map<number, RawTimer[]>();
  for (const s of states) if (s.kind === 'timers') timerIds.set(s.stateId, timers.get(s.name) ?? []);
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
      const writer = canonical ? new CanonicalKeyGroupsWriter(stream, header) : new KeyGroupsStreamWriter(stream, header);
      const section = new SectionWriter();
      const it = b.db.iterator({ gte: keyGroupPrefix(range.start), lt: keyGroupPrefix(range.end + 1), snapshot });
      let page = await it.nextv(1000);
      let pi = 0;
      const next = async (): Promise<[Buffer, Buffer] | undefined> => {
        if (pi >= page.length) {
          if (page.length === 0) return undefined;
          page = await it.nextv(1000);
          pi = 0;
          if (page.length === 0) return undefined;
        }
        return page[pi++];
      };
      let row = await next();
      try {
        for (let kg = range.start; kg <= range.end; kg++) {
          if (cancelled || b.isClosed()) throw new SnapshotError('SNAPSHOT_CANCELLED', `checkpoint ${checkpointId} was cancelled: the LevelDB backend was closed.`);
          writer.beginKeyGroup(kg);
          // Rows of this key group, state by state (row keys sort by key group, then state id).
          const sections = new Map<number, PendingEntry[]>();
          while (row !== undefined && row[0].readUInt16BE(0) === kg) {
            const [k, v] = row;
            row = await next();
            const sid = k.readUInt16BE(2);
            if (isCountRowStateId(sid)) continue;
            const p = plans.get(sid);
            if (p === undefined) throw new SnapshotError('SNAPSHOT_FAILED', `row of unknown state id ${sid} in key group ${kg}; the working directory is damaged.`);
            const d = decodeRowKey(k);
            const list = sections.get(sid) ?? [];
            sections.set(sid, list);
            if (p.isMap) {
              const value = ValueCodec.isNull(v) ? null : p.convert(v);
              if (value === null && !ValueCodec.isNull(v)) continue; // expired
              const last = list.length > 0 ? list[list.length - 1] : undefined;
              const entry: [Buffer, Buffer | null] = [Buffer.from(d.userKey), value === null ? null : Buffer.from(value)];
              if (last !== undefined && last.key.equals(d.key) && last.namespace.equals(d.namespace)) last.map?.push(entry);
              else list.push({ key: Buffer.from(d.key), namespace: Buffer.from(d.namespace), map: [entry] });
            } else if (p.isList) {
              const elements = listElements(v, p.meta, codecs.get(sid) ?? null).filter((e) => !p.expired(e));
              if (elements.length > 0) list.push({ key: Buffer.from(d.key), namespace: Buffer.from(d.namespace), elements: elements.map((e) => Buffer.from(e)) });
            } else {
              const value = p.convert(v);
              if (value !== null) list.push({ key: Buffer.from(d.key), namespace: Buffer.from(d.namespace), value: Buffer.from(value) });
            }
          }
          for (const [sid, timerList] of timerIds) {
            const inKg = timerList.filter((t) => t.keyGroup === kg);
            if (inKg.length === 0) continue;
            for (const t of inKg) section.timerEntry(t.timestamp, t.key, t.namespace);
            sections.set(sid, []);
            writer.addSection(sid, section);
          }
          for (const sid of [...sections.keys()].sort((x, y) => x - y)) {
            const entries = sections.get(sid) as PendingEntry[];
            if (entries.length === 0) continue;
            for (const e of entries) {
              if (e.map !== undefined) {
                section.mapEntry(e.key, e.namespace, e.map.length);
                for (const [uk, val] of e.map) section.mapElement(uk, val);
              } else if (e.elements !== undefined) {
                section.listEntry(e.key, e.namespace, e.elements.length);
                for (const el of e.elements) section.listElement(el);
              } else section.valueEntry(e.key, e.namespace, e.value as Buffer);
            }
            writer.addSection(sid, section);
          }
          await writer.endKeyGroup();
        }
      } finally {
        await it.close();
      }
      return await writer.finish();
    } catch (err) {
      await stream.discard().catch(() => undefined);
      if (err instanceof StreamStateError) throw err;
      throw new SnapshotError('SNAPSHOT_FAILED', `LevelDB full snapshot ${checkpointId} failed: ${(err as Error).message}`, { cause: err });
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
