import {
  isKeyGroupsHandle,
  referencedFiles,
  type KeyedStateHandle,
  type KeyedStateMetaInfo,
  type KeyGroupsStateHandle,
  type OperatorStateHandle,
} from '../backend/handles.js';
import { encodeMetadata } from '../checkpoint/metadata-codec.js';
import { subtaskStateHandles, type CheckpointMetadata, type CheckpointMetadataStats } from '../checkpoint/metadata.js';
import { describeSerializer, type SerializerSnapshot } from '../serializers/serializer.js';

/**
 * What `streamstate inspect` shows: a savepoint's or checkpoint's operators, subtasks, handles,
 * states, key groups, sizes and files, computed from _metadata alone (nothing else is read).
 */

export interface HandleReport {
  readonly type: string;
  readonly layout?: string;
  readonly keyGroupRange: { readonly start: number; readonly end: number };
  /** Key groups that hold data (key-groups handles only). */
  readonly keyGroupsWithData?: number;
  /** Bytes of the streams and files the handle references. */
  readonly bytes: number;
  readonly inline: boolean;
}

export interface KeyedStateReport {
  readonly name: string;
  readonly kind: string;
  readonly namespaceSerializer: string;
  readonly valueSerializer?: string;
  readonly userKeySerializer?: string;
  readonly ttl: boolean;
}

export interface OperatorStateReport {
  readonly name: string;
  readonly mode: string;
  readonly valueSerializer: string;
  readonly keySerializer?: string;
  /** Elements (lists) or entries (broadcast), summed over subtasks. */
  readonly elements: number;
}

export interface OperatorReport {
  readonly operatorId: string;
  readonly parallelism: number;
  readonly maxParallelism: number;
  readonly keySerializer?: string;
  readonly keyedBytes: number;
  readonly operatorBytes: number;
  readonly keyedStates: readonly KeyedStateReport[];
  /** Handle types whose states are recorded in the backend's own files (inspect cannot list them). */
  readonly opaqueHandleTypes: readonly string[];
  readonly operatorStates: readonly OperatorStateReport[];
  readonly subtasks: ReadonlyArray<{
    readonly subtaskIndex: number;
    readonly keyed: readonly HandleReport[];
    readonly operator: readonly HandleReport[];
  }>;
}

export interface SnapshotReport {
  readonly path: string;
  readonly checkpointId: number;
  readonly jobId: string;
  readonly kind: string;
  readonly format: string;
  readonly backend: string;
  readonly timestamp: number;
  readonly properties?: Readonly<Record<string, string | number | boolean>>;
  readonly metadataBytes: number;
  /** _metadata plus every referenced file (each counted once). */
  readonly totalBytes: number;
  readonly operators: readonly OperatorReport[];
  readonly files: ReadonlyArray<{ readonly path: string; readonly size: number; readonly crc32: number }>;
  /** The checkpoint statistics recorded in _metadata, when it has them (docs/FORMAT.md, "stats"). */
  readonly stats?: CheckpointMetadataStats;
}

/** Sum of the sizes of every stream handle (inline or file) inside `value`. */
export function streamBytes(value: unknown): number {
  let n = 0;
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) for (const x of v) walk(x);
    else if (v !== null && typeof v === 'object') {
      const o = v as Record<string, unknown>;
      if ((o.type === 'file' || o.type === 'inline') && typeof o.size === 'number') n += o.size;
      else for (const x of Object.values(o)) walk(x);
    }
  };
  walk(value);
  return n;
}

/** Key-groups handles inside a keyed handle (itself, or nested ones such as a changelog's materialized state). */
export function keyGroupsHandlesIn(handle: unknown, out: KeyGroupsStateHandle[] = []): KeyGroupsStateHandle[] {
  if (Array.isArray(handle)) for (const h of handle) keyGroupsHandlesIn(h, out);
  else if (handle !== null && typeof handle === 'object') {
    const o = handle as Record<string, unknown>;
    if (o.type === 'key-groups' && Array.isArray(o.blocks) && Array.isArray(o.states))
      out.push(o as unknown as KeyGroupsStateHandle);
    else for (const v of Object.values(o)) if (v !== null && typeof v === 'object') keyGroupsHandlesIn(v, out);
  }
  return out;
}

function isInline(value: unknown): boolean {
  return referencedFiles(value).length === 0;
}

function keyedReport(h: KeyedStateHandle): HandleReport {
  const base = {
    type: h.type,
    keyGroupRange: { start: h.keyGroupRange.start, end: h.keyGroupRange.end },
    bytes: streamBytes(h),
    inline: isInline(h),
  };
  return isKeyGroupsHandle(h) ? { ...base, layout: h.layout, keyGroupsWithData: h.blocks.length } : base;
}

function describe(s: SerializerSnapshot | undefined): string | undefined {
  return s === undefined ? undefined : describeSerializer(s);
}

function stateReport(m: KeyedStateMetaInfo): KeyedStateReport {
  return {
    name: m.name,
    kind: m.kind,
    namespaceSerializer: describeSerializer(m.namespaceSerializer),
    ...(m.valueSerializer ? { valueSerializer: describe(m.valueSerializer) } : {}),
    ...(m.userKeySerializer ? { userKeySerializer: describe(m.userKeySerializer) } : {}),
    ttl: m.ttl,
  };
}

function operatorStates(handles: readonly OperatorStateHandle[]): OperatorStateReport[] {
  const byName = new Map<string, { report: OperatorStateReport; elements: number }>();
  for (const h of handles) {
    for (const s of h.states) {
      const seen = byName.get(s.name);
      // Broadcast state is an identical copy on every subtask: count one copy.
      const replicated = s.mode === 'broadcast';
      if (seen === undefined) {
        byName.set(s.name, {
          report: {
            name: s.name,
            mode: s.mode,
            valueSerializer: describeSerializer(s.valueSerializer),
            ...(s.keySerializer ? { keySerializer: describe(s.keySerializer) } : {}),
            elements: 0,
          },
          elements: s.offsets.length,
        });
      } else if (!replicated) seen.elements += s.offsets.length;
      else seen.elements = Math.max(seen.elements, s.offsets.length);
    }
  }
  return [...byName.values()]
    .map((e) => ({ ...e.report, elements: e.elements }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

export function inspectMetadata(metadata: CheckpointMetadata, path: string): SnapshotReport {
  const files = new Map<string, { path: string; size: number; crc32: number }>();
  const operators: OperatorReport[] = metadata.operators.map((op) => {
    const states = new Map<string, KeyedStateReport>();
    const opaque = new Set<string>();
    let keySerializer: string | undefined;
    let keyedBytes = 0;
    let operatorBytes = 0;
    const allOperatorHandles: OperatorStateHandle[] = [];
    const subtasks = [...op.subtasks]
      .sort((a, b) => a.subtaskIndex - b.subtaskIndex)
      .map((s) => {
        for (const h of s.keyed) {
          const kgs = keyGroupsHandlesIn(h);
          if (kgs.length === 0) opaque.add(h.type);
          for (const k of kgs) {
            keySerializer ??= describeSerializer(k.keySerializer);
            for (const m of k.states) if (!states.has(m.name)) states.set(m.name, stateReport(m));
          }
          const ks = (h as { keySerializer?: SerializerSnapshot }).keySerializer;
          if (keySerializer === undefined && ks !== undefined && typeof ks.id === 'string')
            keySerializer = describeSerializer(ks);
          keyedBytes += streamBytes(h);
        }
        for (const h of s.operator) operatorBytes += streamBytes(h);
        allOperatorHandles.push(...s.operator);
        for (const f of referencedFiles(subtaskStateHandles(s)))
          files.set(f.path, { path: f.path, size: f.size, crc32: f.crc32 });
        return {
          subtaskIndex: s.subtaskIndex,
          keyed: s.keyed.map(keyedReport),
          operator: s.operator.map((h) => ({
            type: h.type,
            keyGroupRange: { start: 0, end: -1 },
            bytes: streamBytes(h),
            inline: isInline(h),
          })),
        };
      });
    return {
      operatorId: op.operatorId,
      parallelism: op.parallelism,
      maxParallelism: op.maxParallelism,
      ...(keySerializer === undefined ? {} : { keySerializer }),
      keyedBytes,
      operatorBytes,
      keyedStates: [...states.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
      opaqueHandleTypes: [...opaque].sort(),
      operatorStates: operatorStates(allOperatorHandles),
      subtasks,
    };
  });
  const metadataBytes = encodeMetadata(metadata).length;
  const fileList = [...files.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return {
    path,
    checkpointId: metadata.checkpointId,
    jobId: metadata.jobId,
    kind: metadata.kind,
    format: metadata.format,
    backend: metadata.backend,
    timestamp: metadata.timestamp,
    ...(metadata.properties === undefined ? {} : { properties: metadata.properties }),
    metadataBytes,
    totalBytes: metadataBytes + fileList.reduce((n, f) => n + f.size, 0),
    operators,
    files: fileList,
    ...(metadata.stats === undefined ? {} : { stats: metadata.stats }),
  };
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

function range(r: { start: number; end: number }): string {
  return r.end < r.start ? 'none' : `${r.start}-${r.end}`;
}

/** The statistics lines of `inspect` (Flink's checkpoint details: sizes, then per subtask durations and sizes). */
export function formatStats(st: CheckpointMetadataStats): string[] {
  const ms = (v: number | undefined): string =>
    v === undefined ? 'n/a' : `${Number.isInteger(v) ? v : v.toFixed(1)} ms`;
  const lines = [
    `  checkpoint statistics: duration ${ms(st.durationMs)}, written ${formatBytes(st.bytesWritten)} of ${formatBytes(st.fullSize)} (reused ${formatBytes(st.bytesReused)}), ${st.fileCount} file${st.fileCount === 1 ? '' : 's'}`,
  ];
  for (const s of st.subtasks) {
    lines.push(
      `    subtask ${s.subtaskIndex} of ${s.operatorId}: sync ${ms(s.syncDurationMs)}, async ${ms(s.asyncDurationMs)}, alignment ${ms(s.alignmentDurationMs)}, ` +
        `written ${formatBytes(s.bytesWritten)} of ${formatBytes(s.fullSize)}, ${s.fileCount} file${s.fileCount === 1 ? '' : 's'}`,
    );
  }
  return lines;
}

/** The human-readable form of a report. */
export function formatReport(r: SnapshotReport): string {
  const lines: string[] = [];
  lines.push(`${r.kind} ${r.checkpointId} of job ${r.jobId} at ${r.path}`);
  lines.push(`  format ${r.format}, backend ${r.backend}, taken ${new Date(r.timestamp).toISOString()}`);
  lines.push(
    `  size ${formatBytes(r.totalBytes)} (_metadata ${formatBytes(r.metadataBytes)}, ${r.files.length} file${r.files.length === 1 ? '' : 's'})`,
  );
  if (r.properties) for (const [k, v] of Object.entries(r.properties)) lines.push(`  property ${k} = ${String(v)}`);
  if (r.stats) lines.push(...formatStats(r.stats));
  for (const op of r.operators) {
    lines.push('');
    lines.push(`operator ${op.operatorId}: parallelism ${op.parallelism}, maxParallelism ${op.maxParallelism}`);
    lines.push(
      `  keyed state ${formatBytes(op.keyedBytes)}, operator state ${formatBytes(op.operatorBytes)}${op.keySerializer ? `, key serializer ${op.keySerializer}` : ''}`,
    );
    for (const s of op.keyedStates) {
      const sers = [
        s.userKeySerializer && `userKey ${s.userKeySerializer}`,
        s.valueSerializer && `value ${s.valueSerializer}`,
        `namespace ${s.namespaceSerializer}`,
      ]
        .filter(Boolean)
        .join(', ');
      lines.push(`  keyed ${s.kind.padEnd(11)} ${s.name}  (${sers}${s.ttl ? ', ttl' : ''})`);
    }
    for (const t of op.opaqueHandleTypes)
      lines.push(
        `  keyed state in ${t} handles: states are recorded in the backend's files (convert to canonical to list them)`,
      );
    for (const s of op.operatorStates) {
      lines.push(
        `  operator ${s.mode.padEnd(9)} ${s.name}  (${s.elements} ${s.mode === 'broadcast' ? 'entries' : 'elements'}, value ${s.valueSerializer}${s.keySerializer ? `, key ${s.keySerializer}` : ''})`,
      );
    }
    for (const s of op.subtasks) {
      const keyed = s.keyed.map(
        (h) =>
          `${h.type}${h.layout ? `/${h.layout}` : ''} key groups ${range(h.keyGroupRange)}${h.keyGroupsWithData === undefined ? '' : ` (${h.keyGroupsWithData} with data)`} ${formatBytes(h.bytes)}${h.inline ? ' inline' : ''}`,
      );
      const oper = s.operator.map((h) => `operator ${formatBytes(h.bytes)}${h.inline ? ' inline' : ''}`);
      lines.push(`  subtask ${s.subtaskIndex}: ${[...keyed, ...oper].join('; ') || 'no state'}`);
    }
  }
  if (r.files.length > 0) {
    lines.push('');
    lines.push('files:');
    for (const f of r.files)
      lines.push(`  ${f.path}  ${formatBytes(f.size)}  crc32 ${(f.crc32 >>> 0).toString(16).padStart(8, '0')}`);
  }
  return `${lines.join('\n')}\n`;
}
