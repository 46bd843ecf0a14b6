import { mkdtemp, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { crc32 } from 'node:zlib';
import type {
  CheckpointStreamFactory,
  KeyedBackendParams,
  StateBackend,
  StateFileReader,
} from '../backend/contract.js';
import {
  isKeyGroupsHandle,
  type FileStreamHandle,
  type KeyedStateHandle,
  type KeyGroupRangeJson,
  type KeyGroupsStateHandle,
  type OperatorStateHandle,
} from '../backend/handles.js';
import { assignOperatorState } from '../checkpoint/assignment.js';
import { BlobCheckpointStorage } from '../checkpoint/checkpoint-storage.js';
import type { CheckpointMetadata, OperatorSnapshot, SubtaskStateSnapshot } from '../checkpoint/metadata.js';
import type { ResolvedSnapshot } from '../checkpoint/storage.js';
import { BlobCheckpointStreamFactory, BlobStateFileReader } from '../checkpoint/streams.js';
import {
  ChannelStateError,
  FormatError,
  RestoreError,
  SnapshotError,
  StorageError,
  StreamStateError,
} from '../errors.js';
import { CANONICAL_LAYOUT, HEAP_LAYOUT, readKeyGroups, type RawKeyGroup } from '../format/key-groups-stream.js';
import { checkParallelism, keyGroupRangeForSubtask } from '../keygroups/key-groups.js';
import type { SerializerSnapshot } from '../serializers/serializer.js';
import { LocalBlobStore, fsyncDir } from '../storage/local-blob-store.js';
import { randomHex } from '../storage/blob-names.js';
import { CanonicalKeyGroupsWriter, normalizeSerializerSnapshot } from '../format/canonical-layout.js';
import { checkKeyGroupCoverage } from './coverage.js';
import { changelogInnerBackend, restoreChangelogSubtask } from './changelog-source.js';
import { copySnapshot } from './copy-snapshot.js';
import { isS3Path, openSnapshotDestination, type LocatedSnapshot, type S3ConnectionOptions } from './locate.js';
import { opaqueSerializer } from '../serializers/opaque.js';
import { checkNewMaxParallelism, rehashKeyedState } from './rehash.js';

/**
 * `streamstate convert`: any checkpoint or savepoint → a savepoint for a target backend, at any
 * parallelism (within maxParallelism) and, with `maxParallelism`, at another max parallelism.
 *
 * 1. Keyed handles that are not key-groups streams (LevelDB incremental, changelog) are first
 *    restored into the backend that wrote them and written out as canonical streams (scratch dir).
 * 2. Key-groups streams are re-partitioned and rewritten canonically at the format level, block by
 *    block: memory use is one key group, so state larger than the heap converts. At another max
 *    parallelism every entry is re-hashed instead, through spill files in the scratch directory
 *    (rehash.ts); memory stays bounded there too.
 * 3. `native`: the canonical result is restored into the target backend and snapshotted natively.
 * Operator state is backend-independent: its handles are re-assigned and their files copied.
 *
 * Everything is written into a temporary directory next to `dst`, renamed at the end; on failure
 * it is removed, so no partial savepoint is ever left behind. An s3:// `dst` is written to a local
 * temporary directory first and uploaded with _metadata last.
 */

/** Layouts of key-groups streams whose sections this module reads directly. */
export const FORMAT_LEVEL_LAYOUTS: ReadonlySet<string> = new Set([HEAP_LAYOUT, CANONICAL_LAYOUT, 'leveldb-full-v1']);

export interface ConvertProgress {
  (event: { readonly phase: string; readonly done: number; readonly total: number }): void;
}

export interface ConvertOptions {
  /** Backend name recorded in the result, and restored into for `native` (`memory`, `filesystem`, `leveldb`). */
  readonly target: string;
  readonly format: 'canonical' | 'native';
  /**
   * In-flight records (channel state of an unaligned checkpoint) have no place in a savepoint.
   * 'refuse' (default): CHANNEL_STATE_UNPLACEABLE, nothing written. 'drop': for read-only views of the
   * keyed and operator state (dump, the processor reader), never for a savepoint a job will restore.
   */
  readonly inFlightRecords?: 'refuse' | 'drop';
  /** New parallelism of every operator; default each operator's own. */
  readonly parallelism?: number;
  /**
   * New max parallelism of every operator (1..32768, at least the parallelism); default each
   * operator's own. Keyed state is re-hashed into the new key groups (src/savepoint/rehash.ts).
   */
  readonly maxParallelism?: number;
  /**
   * With `maxParallelism`: keyed state of at most this many bytes is re-hashed in memory, more
   * through spill files in the scratch directory (RehashOptions.memoryBytes; default 256 MiB).
   */
  readonly rehashMemoryBytes?: number;
  /** Creates a backend by name (the source's recorded name, or `target`). `workDir` is scratch space for disk backends. */
  readonly backendFor: (name: string, workDir: string) => StateBackend;
  /** The key serializer a keyed handle was written with, for handle types that do not record it in the handle. */
  readonly keySerializerOf?: (
    handle: KeyedStateHandle,
    files: StateFileReader,
  ) => Promise<SerializerSnapshot | undefined>;
  readonly progress?: ConvertProgress;
  /** Blocks are flushed to the output in writes of about this many bytes. Default 1 MiB. */
  readonly flushBytes?: number;
  /** How to reach S3 when `dst` is an s3:// URL. */
  readonly s3?: S3ConnectionOptions;
  /**
   * Told every temporary directory before it is created and again once it is gone, so that a
   * process interrupted by a signal can remove what is still there (the CLI does).
   */
  readonly temporaryPaths?: TemporaryPaths;
}

/** The temporary directories of work in progress (see ConvertOptions.temporaryPaths). */
export interface TemporaryPaths {
  add(path: string): void;
  delete(path: string): void;
}

/**
 * Hidden directories convert writes next to `dst`: the result before its final rename, and scratch
 * data. The names say who wrote them, so `streamstate gc` can recognize what an interrupted convert
 * left behind (CONVERT_LEFTOVER).
 */
export function convertTempNames(dst: string): { output: string; scratch: string } {
  const tag = randomHex(12);
  return {
    output: `.${basename(dst)}.streamstate-convert-${tag}`,
    scratch: `.${basename(dst)}.streamstate-scratch-${tag}`,
  };
}

/**
 * Names of convert's temporary directories: today's (convertTempNames) and those of earlier
 * versions (`.<dst>.tmp-<12 hex>`, `.<dst>.scratch-<12 hex>`).
 */
export const CONVERT_LEFTOVER = /^\..+\.(streamstate-convert|streamstate-scratch|tmp|scratch)-[0-9a-f]{12}$/;

export interface ConvertResult {
  readonly path: string;
  readonly metadata: CheckpointMetadata;
  /** Bytes of keyed state read at the format level. */
  readonly keyedBytes: number;
  readonly keyGroups: number;
}

interface KeyGroupsSource {
  readonly handle: KeyGroupsStateHandle;
  readonly files: StateFileReader;
}

/** A directory under the scratch store: streams that write into it and a reader for what they wrote. */
interface Area {
  readonly pointer: string;
  readonly streams: CheckpointStreamFactory;
  readonly files: StateFileReader;
}

function intersect(a: KeyGroupRangeJson, b: KeyGroupRangeJson): KeyGroupRangeJson | null {
  const start = Math.max(a.start, b.start);
  const end = Math.min(a.end, b.end);
  return start <= end ? { start, end } : null;
}

/**
 * A converted snapshot would silently lose the in-flight records of an unaligned checkpoint:
 * refused (CHANNEL_STATE_UNPLACEABLE) before anything is written.
 */
export function refuseInFlightRecords(metadata: CheckpointMetadata): void {
  for (const op of metadata.operators) {
    const at = op.subtasks.findIndex((s) => s.channel);
    if (at < 0) continue;
    throw new ChannelStateError(
      'CHANNEL_STATE_UNPLACEABLE',
      `${metadata.kind} ${metadata.checkpointId} of job ${metadata.jobId} is an unaligned checkpoint: subtask ${at} of operator "${op.operatorId}" holds in-flight records, which a converted snapshot cannot hold. ` +
        'Restore it with its job instead, or convert an aligned checkpoint or a savepoint.',
    );
  }
}

/**
 * Checks what can be checked before anything is written: parallelism and max parallelism bounds
 * and handle consistency. Returns each operator's new parallelism.
 */
export function planParallelism(
  metadata: CheckpointMetadata,
  parallelism: number | undefined,
  maxParallelism?: number,
): Map<string, number> {
  checkKeyGroupCoverage(metadata, `${metadata.kind} ${metadata.checkpointId} of job ${metadata.jobId}`);
  const plan = new Map<string, number>();
  for (const op of metadata.operators) {
    const p = parallelism ?? op.parallelism;
    if (maxParallelism !== undefined) checkNewMaxParallelism(maxParallelism, p, `operator ${op.operatorId}`);
    else if (p > op.maxParallelism) {
      throw new RestoreError(
        'PARALLELISM_INVALID',
        `--parallelism ${p} is above operator ${op.operatorId}'s maxParallelism ${op.maxParallelism}; key groups cannot be split further. Use at most ${op.maxParallelism}.`,
      );
    }
    checkParallelism(maxParallelism ?? op.maxParallelism, p);
    for (const s of op.subtasks) {
      for (const h of s.keyed) {
        if (h.maxParallelism !== op.maxParallelism) {
          throw new RestoreError(
            'MAX_PARALLELISM_MISMATCH',
            `operator ${op.operatorId} subtask ${s.subtaskIndex}: a ${h.type} handle records maxParallelism ${h.maxParallelism} but the operator ${op.maxParallelism}; the snapshot is inconsistent.`,
          );
        }
      }
    }
    plan.set(op.operatorId, p);
  }
  return plan;
}

function isFormatLevel(h: KeyedStateHandle): h is KeyGroupsStateHandle {
  return isKeyGroupsHandle(h) && FORMAT_LEVEL_LAYOUTS.has(h.layout);
}

class Converter {
  private readonly store: LocalBlobStore;
  private readonly storage: BlobCheckpointStorage;
  private readonly outName: string;
  private readonly scratchName: string;
  private areas = 0;
  keyedBytes = 0;
  keyGroups = 0;

  constructor(
    private readonly source: ResolvedSnapshot,
    private readonly dst: string,
    private readonly opts: ConvertOptions,
  ) {
    const parent = dirname(dst);
    this.store = new LocalBlobStore(parent);
    // Inline threshold 0: the result is files only, like every savepoint of a real job could be.
    this.storage = new BlobCheckpointStorage(this.store, { inlineThreshold: 0 });
    const names = convertTempNames(dst);
    this.outName = names.output;
    this.scratchName = names.scratch;
    opts.temporaryPaths?.add(resolve(parent, this.outName));
    opts.temporaryPaths?.add(resolve(parent, this.scratchName));
  }

  get parent(): string {
    return dirname(this.dst);
  }

  private area(name?: string): Area {
    const pointer = name ?? `${this.scratchName}/stage-${this.areas++}`;
    return {
      pointer,
      streams: new BlobCheckpointStreamFactory({
        store: this.store,
        baseDir: pointer,
        sharedDir: pointer,
        inlineThreshold: 0,
      }),
      files: new BlobStateFileReader(this.store, pointer),
    };
  }

  private workDir(): string {
    return resolve(this.parent, this.scratchName, `work-${this.areas++}`);
  }

  private progress(phase: string, done: number, total: number): void {
    this.opts.progress?.({ phase, done, total });
  }

  async run(): Promise<ConvertResult> {
    const md = this.source.metadata;
    if (this.opts.inFlightRecords !== 'drop') refuseInFlightRecords(md);
    const parallelism = planParallelism(md, this.opts.parallelism, this.opts.maxParallelism);
    try {
      const out = this.area(this.outName);
      const operators: OperatorSnapshot[] = [];
      for (const op of md.operators) {
        const newP = parallelism.get(op.operatorId)!;
        const newMaxP = this.opts.maxParallelism ?? op.maxParallelism;
        const sources = await this.keyGroupsSources(op);
        const canonicalArea = this.opts.format === 'canonical' ? out : this.area();
        const keyed =
          newMaxP === op.maxParallelism
            ? await this.rewriteCanonical(op, sources, newP, canonicalArea)
            : await this.rehashCanonical(op, sources, newP, newMaxP, canonicalArea);
        const finalKeyed =
          this.opts.format === 'canonical' ? keyed : await this.snapshotNative(op, newP, newMaxP, keyed, canonicalArea);
        const operatorHandles = await this.copyOperatorState(op, newP, out);
        const subtasks: SubtaskStateSnapshot[] = [];
        for (let i = 0; i < newP; i++) {
          const k = finalKeyed[i];
          const o = operatorHandles[i] ?? [];
          if (k === null && o.length === 0) continue;
          subtasks.push({ subtaskIndex: i, keyed: k === null ? [] : [k], operator: o });
        }
        operators.push({ operatorId: op.operatorId, parallelism: newP, maxParallelism: newMaxP, subtasks });
      }
      const metadata: CheckpointMetadata = {
        checkpointId: md.checkpointId,
        jobId: md.jobId,
        kind: 'savepoint',
        format: this.opts.format,
        backend: this.opts.target,
        timestamp: md.timestamp,
        operators,
        properties: {
          ...(md.properties ?? {}),
          convertedFrom: `${md.kind} ${md.checkpointId} (${md.format}, ${md.backend})`,
        },
      };
      await this.storage.writeMetadata(this.outName, metadata);
      await this.cleanupScratch();
      try {
        await rename(resolve(this.parent, this.outName), this.dst);
      } catch (err) {
        throw new StorageError(
          'STORAGE_IO',
          `cannot move the converted savepoint into place at ${this.dst}: ${(err as Error).message}. Nothing was written there.`,
          { cause: err },
        );
      }
      try {
        await fsyncDir(this.parent); // durable: the rename is an entry of the parent directory
      } catch (err) {
        throw new StorageError(
          'STORAGE_IO',
          `the converted savepoint is at ${this.dst}, but syncing ${this.parent} failed (${(err as Error).message}): it may not survive a power failure. Run convert again to be sure.`,
          { cause: err },
        );
      }
      this.opts.temporaryPaths?.delete(resolve(this.parent, this.outName));
      return { path: this.dst, metadata, keyedBytes: this.keyedBytes, keyGroups: this.keyGroups };
    } catch (err) {
      const out = resolve(this.parent, this.outName);
      await rm(out, { recursive: true, force: true }).then(
        () => this.opts.temporaryPaths?.delete(out),
        () => undefined,
      );
      await this.cleanupScratch();
      throw err;
    }
  }

  private async cleanupScratch(): Promise<void> {
    const scratch = resolve(this.parent, this.scratchName);
    await rm(scratch, { recursive: true, force: true }).then(
      () => this.opts.temporaryPaths?.delete(scratch),
      () => undefined,
    );
  }

  // ------------------------------------------------------------------ step 1: key-groups sources

  private async keyGroupsSources(op: OperatorSnapshot): Promise<KeyGroupsSource[]> {
    const out: KeyGroupsSource[] = [];
    let stage: Area | undefined;
    for (const s of [...op.subtasks].sort((a, b) => a.subtaskIndex - b.subtaskIndex)) {
      if (s.keyed.length === 0) continue;
      if (s.keyed.every(isFormatLevel)) {
        for (const h of s.keyed) out.push({ handle: h as KeyGroupsStateHandle, files: this.source.files });
        continue;
      }
      stage ??= this.area();
      const h = await this.materialize(op, s, stage);
      if (h !== null) out.push({ handle: h, files: stage.files });
    }
    return out;
  }

  private async recordedKeySerializer(handles: readonly KeyedStateHandle[]): Promise<SerializerSnapshot> {
    for (const h of handles) {
      const ks = (h as { keySerializer?: SerializerSnapshot }).keySerializer;
      if (ks !== undefined && typeof ks.id === 'string' && typeof ks.version === 'number') return ks;
      const found = await this.opts.keySerializerOf?.(h, this.source.files);
      if (found !== undefined) return found;
    }
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `cannot tell which key serializer wrote the ${handles.map((h) => h.type).join(', ')} handle(s); this streamstate cannot convert them.`,
    );
  }

  /** Restores one subtask into the backend that wrote it and writes a canonical stream of it. */
  private async materialize(
    op: OperatorSnapshot,
    s: SubtaskStateSnapshot,
    stage: Area,
  ): Promise<KeyGroupsStateHandle | null> {
    const md = this.source.metadata;
    const keySerializer = opaqueSerializer(await this.recordedKeySerializer(s.keyed));
    // Changelog handles: the wrapped backend restores the materialization and the log is replayed into it.
    const innerName = changelogInnerBackend(s.keyed, `operator ${op.operatorId} subtask ${s.subtaskIndex}`);
    const name = innerName ?? md.backend;
    const backend = this.opts.backendFor(name, this.workDir());
    this.progress(`restoring ${op.operatorId}/${s.subtaskIndex} into ${md.backend}`, 0, 1);
    const params: KeyedBackendParams<Uint8Array> = {
      jobId: md.jobId,
      operatorId: op.operatorId,
      subtaskIndex: s.subtaskIndex,
      parallelism: op.parallelism,
      maxParallelism: op.maxParallelism,
      keyGroupRange: keyGroupRangeForSubtask(op.maxParallelism, op.parallelism, s.subtaskIndex),
      keySerializer,
      restore: { handles: s.keyed, files: this.source.files, mode: 'no-claim', checkpointId: md.checkpointId },
    };
    const keyed =
      innerName === undefined
        ? await backend.createKeyedStateBackend(params)
        : await restoreChangelogSubtask(backend, innerName, params);
    try {
      const task = await keyed.snapshot(md.checkpointId, {
        type: 'savepoint',
        format: 'canonical',
        full: true,
        streams: stage.streams,
      });
      const h = await task.done;
      if (h !== null && !isFormatLevel(h)) {
        throw new SnapshotError(
          'SNAPSHOT_FAILED',
          `backend ${md.backend} wrote a ${h.type} handle for a canonical savepoint; expected a key-groups stream.`,
        );
      }
      this.progress(`restoring ${op.operatorId}/${s.subtaskIndex} into ${md.backend}`, 1, 1);
      return h;
    } finally {
      await keyed.close();
    }
  }

  // ------------------------------------------------------------------ step 2: canonical, re-partitioned

  private async rewriteCanonical(
    op: OperatorSnapshot,
    sources: KeyGroupsSource[],
    newP: number,
    area: Area,
  ): Promise<(KeyGroupsStateHandle | null)[]> {
    const out: (KeyGroupsStateHandle | null)[] = [];
    const keySerializers = new Set(
      sources.map((s) => JSON.stringify(normalizeSerializerSnapshot(s.handle.keySerializer))),
    );
    if (keySerializers.size > 1) {
      throw new FormatError(
        'CORRUPT',
        `operator ${op.operatorId}: subtasks recorded different key serializers (${[...keySerializers].join(', ')}); the snapshot is inconsistent.`,
      );
    }
    const allStates = sources.flatMap((s) => s.handle.states);
    const total = sources.reduce((n, s) => n + s.handle.blocks.reduce((m, b) => m + b.length, 0), 0);
    let done = 0;
    for (let i = 0; i < newP; i++) {
      const range = keyGroupRangeForSubtask(op.maxParallelism, newP, i).toJSON();
      const relevant = sources
        .map((s) => ({ s, r: intersect(range, s.handle.keyGroupRange) }))
        .filter(
          (x): x is { s: KeyGroupsSource; r: KeyGroupRangeJson } =>
            x.r !== null && x.s.handle.blocks.some((b) => b.keyGroup >= x.r!.start && b.keyGroup <= x.r!.end),
        );
      if (relevant.length === 0) {
        out.push(null);
        continue;
      }
      const first = relevant[0].s.handle;
      const stream = area.streams.createOutputStream('exclusive');
      try {
        const writer = new CanonicalKeyGroupsWriter(
          stream,
          {
            layout: CANONICAL_LAYOUT,
            keySerializer: first.keySerializer,
            maxParallelism: op.maxParallelism,
            keyGroupRange: range,
            states: first.states,
          },
          {
            extraStates: allStates,
            ...(this.opts.flushBytes === undefined ? {} : { flushBytes: this.opts.flushBytes }),
          },
        );
        const cursors = relevant.map(({ s, r }) => ({
          it: readKeyGroups(s.handle, s.files, r),
          ids: writer.idsFor(s.handle.states),
          head: undefined as RawKeyGroup | undefined,
        }));
        for (const c of cursors) c.head = (await c.it.next()).value ?? undefined;
        for (;;) {
          let kg = Number.POSITIVE_INFINITY;
          for (const c of cursors) if (c.head !== undefined && c.head.keyGroup < kg) kg = c.head.keyGroup;
          if (kg === Number.POSITIVE_INFINITY) break;
          writer.beginKeyGroup(kg);
          for (const c of cursors) {
            if (c.head === undefined || c.head.keyGroup !== kg) continue;
            for (const sec of c.head.sections) {
              writer.addRawSection(sec.stateId, sec.entryCount, sec.bytes, c.ids);
              done += sec.bytes.length;
            }
            c.head = (await c.it.next()).value ?? undefined;
          }
          await writer.endKeyGroup();
          this.keyGroups++;
          this.progress(`rewriting ${op.operatorId}`, done, total);
        }
        out.push(await writer.finish());
      } catch (err) {
        await stream.discard().catch(() => undefined);
        throw err;
      }
    }
    this.keyedBytes += total;
    return out;
  }

  /** Step 2 at another max parallelism: every key re-hashed into its new key group (rehash.ts). */
  private async rehashCanonical(
    op: OperatorSnapshot,
    sources: KeyGroupsSource[],
    newP: number,
    newMaxP: number,
    area: Area,
  ): Promise<(KeyGroupsStateHandle | null)[]> {
    const result = await rehashKeyedState(sources, {
      maxParallelism: newMaxP,
      parallelism: newP,
      streams: area.streams,
      scratchDir: this.workDir(),
      what: `operator ${op.operatorId}`,
      ...(this.opts.flushBytes === undefined ? {} : { flushBytes: this.opts.flushBytes }),
      ...(this.opts.rehashMemoryBytes === undefined ? {} : { memoryBytes: this.opts.rehashMemoryBytes }),
      progress: (phase, done, total) => this.progress(phase, done, total),
    });
    this.keyedBytes += result.bytesRead;
    this.keyGroups += result.keyGroups;
    return [...result.handles];
  }

  // ------------------------------------------------------------------ step 3: native

  private async snapshotNative(
    op: OperatorSnapshot,
    newP: number,
    newMaxP: number,
    canonical: (KeyGroupsStateHandle | null)[],
    from: Area,
  ): Promise<(KeyedStateHandle | null)[]> {
    const md = this.source.metadata;
    const out: (KeyedStateHandle | null)[] = [];
    const target = this.area(this.outName);
    for (let i = 0; i < newP; i++) {
      const h = canonical[i];
      if (h === null) {
        out.push(null);
        continue;
      }
      this.progress(`writing native ${this.opts.target} savepoint of ${op.operatorId}`, i, newP);
      const backend = this.opts.backendFor(this.opts.target, this.workDir());
      if (!backend.supportsSavepointFormat('native')) {
        throw new StreamStateError(
          'INVALID_ARGUMENT',
          `backend ${this.opts.target} has no native savepoint format; use --format canonical.`,
        );
      }
      const keyed = await backend.createKeyedStateBackend({
        jobId: md.jobId,
        operatorId: op.operatorId,
        subtaskIndex: i,
        parallelism: newP,
        maxParallelism: newMaxP,
        keyGroupRange: keyGroupRangeForSubtask(newMaxP, newP, i),
        keySerializer: opaqueSerializer(h.keySerializer),
        restore: { handles: [h], files: from.files, mode: 'no-claim', checkpointId: md.checkpointId },
      });
      try {
        const task = await keyed.snapshot(md.checkpointId, {
          type: 'savepoint',
          format: 'native',
          full: true,
          streams: target.streams,
        });
        out.push(await task.done);
      } finally {
        await keyed.close();
      }
    }
    this.progress(`writing native ${this.opts.target} savepoint of ${op.operatorId}`, newP, newP);
    return out;
  }

  // ------------------------------------------------------------------ operator state

  private async copyOperatorState(op: OperatorSnapshot, newP: number, out: Area): Promise<OperatorStateHandle[][]> {
    // Union state is fanned out to every subtask on restore; stored, each element must appear
    // once, so it is distributed like split state here (and relabelled back).
    const unionNames = new Set<string>();
    const relabel = (
      h: OperatorStateHandle,
      from: 'union' | 'split',
      to: 'union' | 'split',
      only?: Set<string>,
    ): OperatorStateHandle => ({
      ...h,
      states: h.states.map((m) =>
        m.mode === from && (only === undefined || only.has(m.name)) ? { ...m, mode: to } : m,
      ),
    });
    for (const s of op.subtasks)
      for (const h of s.operator) for (const m of h.states) if (m.mode === 'union') unionNames.add(m.name);
    const asSplit: OperatorSnapshot = {
      ...op,
      subtasks: op.subtasks.map((s) => ({ ...s, operator: s.operator.map((h) => relabel(h, 'union', 'split')) })),
    };
    const assigned = assignOperatorState(asSplit, newP).map((hs) =>
      hs.map((h) => relabel(h, 'split', 'union', unionNames)),
    );
    const copied = new Map<string, FileStreamHandle>();
    const result: OperatorStateHandle[][] = [];
    for (const handles of assigned) {
      const mine: OperatorStateHandle[] = [];
      for (const h of handles) {
        if (h.stream.type !== 'file') {
          mine.push(h);
          continue;
        }
        let file = copied.get(h.stream.path);
        if (file === undefined) {
          file = await this.copyFile(h.stream, out);
          copied.set(h.stream.path, file);
        }
        mine.push({ ...h, stream: file });
      }
      result.push(mine);
    }
    return result;
  }

  /** Copies a source file into the output in chunks, verifying its size and crc32 on the way. */
  private async copyFile(f: FileStreamHandle, out: Area): Promise<FileStreamHandle> {
    const files = this.source.files;
    let crc = 0;
    async function* chunks(): AsyncGenerator<Uint8Array> {
      const CHUNK = 8 * 1024 * 1024;
      for (let off = 0; off < f.size; off += CHUNK) {
        const c = await files.readRange(f, off, Math.min(CHUNK, f.size - off));
        crc = crc32(c, crc);
        yield c;
      }
    }
    const stream = out.streams.createOutputStream('exclusive');
    try {
      for await (const c of chunks()) await stream.write(c);
      if (crc >>> 0 !== f.crc32 >>> 0) {
        throw new FormatError(
          'CHECKSUM_MISMATCH',
          `${files.describe(f)}: crc32 ${(crc >>> 0).toString(16)} differs from the recorded ${(f.crc32 >>> 0).toString(16)}; the file is corrupt. Use another snapshot.`,
        );
      }
      const h = await stream.closeAndGetHandle();
      if (h === null || h.type !== 'file')
        throw new SnapshotError('SNAPSHOT_FAILED', `copying ${files.describe(f)} produced no file`);
      return h;
    } catch (err) {
      await stream.discard().catch(() => undefined);
      throw err;
    }
  }
}

/**
 * Converts the snapshot `source` into a new savepoint directory `dst` (which must not exist).
 * Nothing is left at `dst` or next to it when it fails.
 */
export async function convertSnapshot(
  source: LocatedSnapshot,
  dst: string,
  opts: ConvertOptions,
): Promise<ConvertResult> {
  if (isS3Path(dst)) return convertToS3(source, dst, opts);
  const target = resolve(dst);
  if (
    await stat(target).then(
      () => true,
      () => false,
    )
  ) {
    throw new StorageError(
      'ALREADY_EXISTS',
      `${dst} already exists; the converted savepoint needs a new directory. Pick another destination or remove it.`,
    );
  }
  const parent = dirname(target);
  if (
    !(await stat(parent).then(
      (s) => s.isDirectory(),
      () => false,
    ))
  ) {
    throw new StorageError('NOT_FOUND', `the parent directory of ${dst} does not exist; create it first.`);
  }
  return new Converter(source.snapshot, target, opts).run();
}

/**
 * An s3:// destination: converted into a local temporary directory, then copied up with _metadata
 * last (copySnapshot). Whatever fails, nothing is left under `dst` and the temporary directory is gone.
 */
async function convertToS3(source: LocatedSnapshot, dst: string, opts: ConvertOptions): Promise<ConvertResult> {
  const target = openSnapshotDestination(dst, opts.s3);
  try {
    // Checked up front so a long conversion does not end in ALREADY_EXISTS (copySnapshot checks again).
    if ((await target.store.list(`${target.dir}/`)).length > 0) {
      throw new StorageError(
        'ALREADY_EXISTS',
        `${dst} already holds objects; the converted savepoint needs a new prefix. Pick another destination or remove it.`,
      );
    }
    const scratch = await mkdtemp(join(tmpdir(), 'streamstate-convert-'));
    opts.temporaryPaths?.add(scratch);
    try {
      const result = await new Converter(source.snapshot, join(scratch, 'savepoint'), opts).run();
      await copySnapshot(
        { store: new LocalBlobStore(scratch), dir: 'savepoint' },
        { store: target.store, dir: target.dir },
        { progress: (done, total) => opts.progress?.({ phase: `uploading to ${dst}`, done, total }) },
      );
      return { ...result, path: dst };
    } finally {
      await rm(scratch, { recursive: true, force: true }).then(
        () => opts.temporaryPaths?.delete(scratch),
        () => undefined,
      );
    }
  } finally {
    await target.close();
  }
}
