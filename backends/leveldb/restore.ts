import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import type { KeyedBackendParams, RestoreSource, StateFileReader } from '../../src/backend/contract.js';
import type {
  FileStreamHandle,
  KeyedStateHandle,
  KeyGroupsStateHandle,
  StreamHandle,
} from '../../src/backend/handles.js';
import { isKeyGroupsHandle } from '../../src/backend/handles.js';
import { FormatError, RestoreError, StateMigrationError, StreamStateError } from '../../src/errors.js';
import {
  listEntries,
  mapEntries,
  readKeyGroups,
  timerEntries,
  valueEntries,
} from '../../src/format/key-groups-stream.js';
import { checkRestoreMaxParallelism, KeyGroupRange } from '../../src/keygroups/key-groups.js';
import {
  describeSerializer,
  resolveCompatibility,
  type Serializer,
  type SerializerSnapshot,
} from '../../src/serializers/serializer.js';
import type { LevelDb } from './buffered-store.js';
import type { ImportMapping, StateCatalog } from './catalog.js';
import { IncrementalChain } from './chain.js';
import { isIncrementalHandle, type LevelDbIncrementalHandle } from './incremental-snapshot.js';
import { decodeMeta, type LevelMeta } from './meta.js';
import { openLevelDb } from './open-db.js';
import { countRowStateId, encodeRowKey, isCountRowStateId, keyGroupPrefix } from './row-keys.js';
import type { Instance } from './snapshot-source.js';
import type { RawTimer } from './timer-queue.js';

/**
 * Restore (Flink's RocksDBIncrementalRestoreOperation, adapted):
 * - one incremental handle with our key-group range: download its files into the database
 *   directory, open, and continue its incremental chain (claim) or start a new one whose first
 *   checkpoint is full (no-claim);
 * - otherwise (rescaling): the incremental handle with the largest overlap becomes the database,
 *   key groups outside our range or its own are cleared, and the rows of the other handles' key groups are
 *   copied in with batched writes, from temporary databases (incremental handles) or read from
 *   key-groups streams (full snapshots, canonical savepoints). State ids and serializer
 *   generations are remapped by state name.
 */
export interface RestoredDb {
  readonly db: LevelDb;
  readonly timers: Map<string, RawTimer[]>;
  readonly chain: IncrementalChain;
}

type IncrementalHandle = KeyedStateHandle & LevelDbIncrementalHandle;

const BATCH_BYTES = 4 * 1024 * 1024;

function rethrowNamed(err: unknown, what: string): never {
  if (err instanceof StreamStateError) {
    const Ctor = err.constructor as new (
      code: StreamStateError['code'],
      message: string,
      options?: { cause?: unknown },
    ) => StreamStateError;
    throw new Ctor(err.code, err.message.includes(what) ? err.message : `${what}: ${err.message}`, { cause: err });
  }
  throw new RestoreError('RESTORE_FAILED', `${what}: ${(err as Error).message}. Restore from another checkpoint.`, {
    cause: err,
  });
}

async function readStream(handle: StreamHandle, files: StateFileReader, what: string): Promise<Buffer> {
  if (handle.type === 'file') {
    try {
      return await files.read(handle);
    } catch (err) {
      rethrowNamed(err, `${what} (${files.describe(handle)})`);
    }
  }
  const bytes = Buffer.from(handle.data, 'base64');
  if (bytes.length !== handle.size || crc32(bytes) !== handle.crc32) {
    throw new FormatError(
      'CHECKSUM_MISMATCH',
      `${what}: the inline data does not match its size/crc32. The _metadata is damaged; restore from another checkpoint.`,
    );
  }
  return bytes;
}

function checkKeySerializer(recorded: SerializerSnapshot, current: Serializer<unknown>, what: string): void {
  const c = resolveCompatibility(recorded, current);
  if (c.kind !== 'compatible-as-is') {
    throw new StateMigrationError(
      'KEY_SERIALIZER_MISMATCH',
      `${what} was written with key serializer ${describeSerializer(recorded)}, but the backend is created with ${current.id}@${current.version}. ` +
        'Keys are part of the stored rows and cannot be migrated: restore with the original key serializer.',
    );
  }
}

async function download(
  handles: readonly { localName: string; handle: FileStreamHandle }[],
  dir: string,
  files: StateFileReader,
): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const f of handles) {
    if (!/^[A-Za-z0-9._-]+$/.test(f.localName))
      throw new FormatError(
        'CORRUPT',
        `incremental handle lists a bad local file name ${JSON.stringify(f.localName)}.`,
      );
    try {
      await files.download(f.handle, join(dir, f.localName));
    } catch (err) {
      rethrowNamed(err, `cannot fetch LevelDB file ${f.localName} from ${files.describe(f.handle)}`);
    }
  }
}

/** Buffers puts into one batch per ~4 MiB. */
class BatchWriter {
  private batch;
  private bytes = 0;
  constructor(private readonly db: LevelDb) {
    this.batch = db.batch();
  }
  async put(key: Buffer, value: Buffer): Promise<void> {
    this.batch.put(key, value);
    this.bytes += key.length + value.length;
    if (this.bytes >= BATCH_BYTES) await this.flush();
  }
  async flush(): Promise<void> {
    if (this.bytes === 0) return;
    const b = this.batch;
    this.batch = this.db.batch();
    this.bytes = 0;
    await b.write();
  }
}

function overlap(h: KeyedStateHandle, range: KeyGroupRange): number {
  return range.intersection(h.keyGroupRange).size;
}

function addTimers(out: Map<string, RawTimer[]>, meta: LevelMeta, range: KeyGroupRange): void {
  for (const [name, list] of meta.timers) {
    const kept = list.filter((t) => range.contains(t.keyGroup));
    const existing = out.get(name);
    if (existing) existing.push(...kept);
    else out.set(name, kept);
  }
}

export async function restoreLevelDb<K>(
  params: KeyedBackendParams<K>,
  source: RestoreSource<KeyedStateHandle>,
  instance: Instance,
  catalog: StateCatalog,
): Promise<RestoredDb> {
  const range = KeyGroupRange.of(params.keyGroupRange);
  const files = source.files;
  const keySerializer = params.keySerializer as Serializer<unknown>;
  for (const h of source.handles) {
    checkRestoreMaxParallelism(h.maxParallelism, params.maxParallelism);
    if (!isIncrementalHandle(h) && !isKeyGroupsHandle(h)) {
      throw new RestoreError(
        'RESTORE_FAILED',
        `the LevelDB backend cannot restore a keyed state handle of type "${h.type}". Restore it with the backend that wrote it, or take a canonical savepoint.`,
      );
    }
  }
  const incremental = source.handles.filter(isIncrementalHandle) as IncrementalHandle[];
  const keyGroups = source.handles.filter(isKeyGroupsHandle);
  const metas = new Map<IncrementalHandle, LevelMeta>();
  for (const h of incremental) {
    const meta = decodeMeta(
      await readStream(h.meta, files, `meta of LevelDB checkpoint ${h.checkpointId}`),
      `meta of LevelDB checkpoint ${h.checkpointId}`,
    );
    checkKeySerializer(meta.keySerializer, keySerializer, `LevelDB checkpoint ${h.checkpointId}`);
    metas.set(h, meta);
  }
  for (const h of keyGroups) checkKeySerializer(h.keySerializer, keySerializer, 'the key-groups snapshot');

  const candidates = incremental
    .filter((h) => overlap(h, range) > 0)
    .sort((a, b) => overlap(b, range) - overlap(a, range));
  const base = candidates[0];
  const sameRange = source.handles.length === 1 && base !== undefined && range.equals(base.keyGroupRange);
  const timers = new Map<string, RawTimer[]>();
  let db: LevelDb | null = null;
  const temps: LevelDb[] = [];
  try {
    if (base !== undefined) {
      await download([...base.sharedFiles, ...base.privateFiles], instance.dbDir, files);
      db = await openLevelDb(instance.dbDir, {
        cacheSize: instance.cacheSize,
        writeBufferSize: instance.memtableBytes,
        createIfMissing: false,
        infoLog: instance.infoLog,
      });
      const meta = metas.get(base) as LevelMeta;
      catalog.adopt(meta.states);
      addTimers(timers, meta, range);
      if (sameRange) {
        const sharedFiles = new Map(base.sharedFiles.map((f) => [f.localName, f.handle]));
        return {
          db,
          timers,
          chain: IncrementalChain.restored(base.backendId, base.checkpointId, sharedFiles, source.mode === 'claim'),
        };
      }
      // Clip: keep only the key groups that are ours AND the base handle's. The database may hold
      // rows beyond its handle's range (a changelog handle nests a wider materialization from
      // before a rescale, clipped to its own range): those rows are stale, another handle owns
      // their key groups, and copyRows below only adds rows, so a kept stale row would survive.
      const own = range.intersection(base.keyGroupRange);
      await db.clear({ lt: keyGroupPrefix(own.start) });
      if (own.end + 1 < 0x10000) await db.clear({ gte: keyGroupPrefix(own.end + 1) });
    } else {
      db = await openLevelDb(instance.dbDir, {
        cacheSize: instance.cacheSize,
        writeBufferSize: instance.memtableBytes,
        infoLog: instance.infoLog,
      });
    }
    const target = db;
    for (const [i, h] of candidates.slice(1).entries()) {
      const tmpDir = join(instance.dir, `restore-${i}`);
      await download([...h.sharedFiles, ...h.privateFiles], tmpDir, files);
      const tmp = await openLevelDb(tmpDir, { createIfMissing: false });
      temps.push(tmp);
      const meta = metas.get(h) as LevelMeta;
      await copyRows(tmp, target, range.intersection(h.keyGroupRange), meta, catalog);
      addTimers(timers, meta, range);
      await tmp.close();
      temps.pop();
      await rm(tmpDir, { recursive: true, force: true });
    }
    for (const h of keyGroups) await importKeyGroups(h, files, range, target, catalog, timers);
    return { db, timers, chain: IncrementalChain.fresh() };
  } catch (err) {
    for (const t of temps) await t.close().catch(() => undefined);
    if (db !== null) await db.close().catch(() => undefined);
    throw err;
  }
}

/** Copies the rows of `range` from a temporary database, remapping state ids and generations. */
async function copyRows(
  from: LevelDb,
  to: LevelDb,
  range: KeyGroupRange,
  meta: LevelMeta,
  catalog: StateCatalog,
): Promise<void> {
  if (range.isEmpty) return;
  const mappings = new Map<number, ImportMapping>();
  for (const s of meta.states) mappings.set(s.stateId, catalog.importState(s));
  const out = new BatchWriter(to);
  const it = from.iterator({ gte: keyGroupPrefix(range.start), lt: keyGroupPrefix(range.end + 1) });
  try {
    for (;;) {
      const page = await it.nextv(1000);
      if (page.length === 0) break;
      for (const [k, v] of page) {
        const sid = k.readUInt16BE(2);
        const count = isCountRowStateId(sid);
        const m = mappings.get(count ? sid & 0x7fff : sid);
        if (m === undefined)
          throw new FormatError(
            'CORRUPT',
            `a restored LevelDB table holds rows of state id ${sid & 0x7fff}, which its meta does not list.`,
          );
        const key = Buffer.from(k);
        key.writeUInt16BE(count ? countRowStateId(m.stateId) : m.stateId, 2);
        let value = v;
        if (!count) {
          const gen = v[0] >>> 1;
          const ours = m.generations[gen] ?? gen;
          if (ours !== gen) {
            value = Buffer.from(v);
            value[0] = (ours << 1) | (v[0] & 1);
          }
        }
        await out.put(key, value);
      }
    }
    await out.flush();
  } finally {
    await it.close();
  }
}

function header(m: ImportMapping, isNull = false): number {
  return ((m.generations[0] ?? 0) << 1) | (isNull ? 1 : 0);
}

function withHeader(h: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(payload.length + 1);
  out[0] = h;
  payload.copy(out, 1);
  return out;
}

/** Writes the key groups of a key-groups stream (full snapshot or canonical savepoint) as rows. */
async function importKeyGroups(
  handle: KeyGroupsStateHandle,
  files: StateFileReader,
  range: KeyGroupRange,
  db: LevelDb,
  catalog: StateCatalog,
  timers: Map<string, RawTimer[]>,
): Promise<void> {
  const mappings = new Map<number, ImportMapping>();
  for (const s of handle.states) mappings.set(s.stateId, catalog.importState(s));
  const out = new BatchWriter(db);
  const what = handle.stream.type === 'file' ? files.describe(handle.stream) : 'inline key-groups stream';
  try {
    for await (const group of readKeyGroups(handle, files, range.intersection(handle.keyGroupRange))) {
      const kg = group.keyGroup;
      for (const section of group.sections) {
        const m = mappings.get(section.stateId) as ImportMapping;
        const kind = m.meta.kind;
        if (kind === 'timers') {
          const list = timers.get(m.meta.name) ?? [];
          timers.set(m.meta.name, list);
          for (const t of timerEntries(section, what))
            list.push({
              timestamp: t.timestamp,
              keyGroup: kg,
              key: Buffer.from(t.key),
              namespace: Buffer.from(t.namespace),
            });
        } else if (kind === 'list') {
          for (const e of listEntries(section, what)) {
            if (e.elements.length === 0) continue;
            const parts: Buffer[] = [Buffer.from([header(m)])];
            for (const el of e.elements) parts.push(varintBytes(el.length), el);
            await out.put(encodeRowKey(kg, m.stateId, e.key, e.namespace), Buffer.concat(parts));
          }
        } else if (kind === 'map') {
          for (const e of mapEntries(section, what)) {
            if (e.entries.length === 0) continue;
            for (const [uk, v] of e.entries) {
              await out.put(
                encodeRowKey(kg, m.stateId, e.key, e.namespace, uk),
                v === null ? Buffer.from([header(m, true)]) : withHeader(header(m), v),
              );
            }
            const count = Buffer.allocUnsafe(m.meta.ttl ? 12 : 4);
            count.writeUInt32BE(e.entries.length, 0);
            if (m.meta.ttl) {
              // TTL map values start with their f64 timestamp: keep the newest (see LevelMapState).
              let newest = -Infinity;
              for (const [, v] of e.entries)
                if (v !== null && v.length >= 8) newest = Math.max(newest, v.readDoubleBE(0));
              count.writeDoubleBE(newest, 4);
            }
            await out.put(encodeRowKey(kg, countRowStateId(m.stateId), e.key, e.namespace), count);
          }
        } else {
          for (const e of valueEntries(section, what))
            await out.put(encodeRowKey(kg, m.stateId, e.key, e.namespace), withHeader(header(m), e.value));
        }
      }
    }
    await out.flush();
  } catch (err) {
    rethrowNamed(err, `restoring ${what}`);
  }
}

function varintBytes(v: number): Buffer {
  const out: number[] = [];
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return Buffer.from(out);
}
