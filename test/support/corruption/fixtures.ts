import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { filesystem } from '../../../backends/filesystem/index.js';
import { leveldb } from '../../../backends/leveldb/index.js';
import type { KeyedStateBackend, OperatorStateBackend, StateBackend } from '../../../src/backend/contract.js';
import type { FileStreamHandle, KeyedStateHandle, OperatorStateHandle } from '../../../src/backend/handles.js';
import { changelog } from '../../../src/changelog/index.js';
import { localCheckpointStorage } from '../../../src/checkpoint/checkpoint-storage.js';
import { CheckpointCoordinator } from '../../../src/checkpoint/coordinator.js';
import type { CheckpointMetadata } from '../../../src/checkpoint/metadata.js';
import type { CheckpointStorage } from '../../../src/checkpoint/storage.js';
import { resolveHandlePath } from '../../../src/checkpoint/streams.js';
import { keyGroupRangeForSubtask } from '../../../src/keygroups/key-groups.js';
import { stringSerializer } from '../../../src/serializers/builtins.js';
import { dumpState, MAX_PARALLELISM, OPERATOR_ID, populate } from './job.js';

/**
 * Corruption fixtures: real checkpoints on local disk, written through the real coordinator by a
 * job with every kind of state (job.ts). Built once per backend family; every case copies the
 * pristine directory, damages it and restores from the copy.
 *
 * Every family holds two jobs (A: the one restored; B: a stranger whose files are swapped in),
 * each with checkpoints 1 and 2 (retention 2); the heap family also has a canonical savepoint of A.
 */
export const FORMATS = ['metadata', 'key-groups', 'canonical', 'operator', 'changelog', 'leveldb'] as const;
export type FormatName = (typeof FORMATS)[number];

/** What a file of a snapshot is, by the handle field that references it. */
export type FileCategory =
  | 'metadata'
  | 'key-groups'
  | 'canonical'
  | 'operator'
  | 'changelog-segment'
  | 'leveldb-table'
  | 'leveldb-manifest'
  | 'leveldb-current'
  | 'leveldb-log'
  | 'leveldb-meta';

export interface SnapshotFile {
  /** Store-relative name (also the path under the store root). */
  readonly name: string;
  readonly category: FileCategory;
}

export interface CorruptionFixture {
  readonly format: FormatName;
  /** The pristine store root; never modified. */
  readonly root: string;
  readonly jobId: string;
  /** Store-relative pointer of the snapshot every case restores. */
  readonly pointer: string;
  readonly parallelism: number;
  /** The files this format's cases damage. */
  readonly targets: readonly SnapshotFile[];
  /** Every data file of the restored snapshot (partners for "two files of one checkpoint exchanged"). */
  readonly sameSnapshot: readonly SnapshotFile[];
  /** Files of other checkpoints, the savepoint, and the other job. */
  readonly foreign: readonly SnapshotFile[];
  /** dumpState() of the job when the snapshot was taken. */
  readonly expected: string;
  /** dumpState() at the job's previous checkpoint: what "restore the latest" yields once the snapshot's _metadata is gone. */
  readonly previous: string;
  readonly family: Family;
  /** A backend of the family whose storage (if any) is `storeRoot`, with LevelDB databases under `workDir`. */
  makeBackend(storeRoot: string, workDir: string): StateBackend;
}

/** heap: every stream a file; inline: small streams inside _metadata (the default threshold). */
export type Family = 'heap' | 'inline' | 'changelog' | 'leveldb';

const FAMILY_OF: Record<FormatName, Family> = {
  metadata: 'inline',
  'key-groups': 'heap',
  canonical: 'heap',
  operator: 'heap',
  changelog: 'changelog',
  leveldb: 'leveldb',
};

const TARGETS: Record<FormatName, readonly FileCategory[]> = {
  metadata: ['metadata'],
  'key-groups': ['key-groups'],
  canonical: ['canonical'],
  operator: ['operator'],
  changelog: ['changelog-segment'],
  leveldb: ['leveldb-table', 'leveldb-manifest', 'leveldb-current', 'leveldb-log', 'leveldb-meta'],
};

function makeFamilyBackend(family: Family, storeRoot: string, workDir: string): StateBackend {
  if (family === 'heap') return filesystem({ checkpointDir: storeRoot, inlineThreshold: 0 });
  if (family === 'inline') return filesystem({ checkpointDir: storeRoot });
  // Never materialize on a timer: checkpoint 2 is the empty base plus the segments of both rounds.
  if (family === 'changelog')
    return changelog({
      backend: filesystem({ checkpointDir: storeRoot, inlineThreshold: 0 }),
      materializationIntervalMs: Infinity,
    });
  // A small memtable and write buffer so the checkpoints hold table files, not only the log.
  return leveldb({ workingDir: workDir, incremental: true, memtableBytes: 4 * 1024, writeBufferBytes: 2 * 1024 });
}

/** Every file a handle references, with its category. */
function categorize(handle: KeyedStateHandle | OperatorStateHandle, pointer: string, out: SnapshotFile[]): void {
  const add = (f: FileStreamHandle | { type: string } | undefined, category: FileCategory): void => {
    if (f !== undefined && f.type === 'file')
      out.push({ name: resolveHandlePath(pointer, (f as FileStreamHandle).path), category });
  };
  const h = handle as unknown as Record<string, unknown>;
  if (h.type === 'operator') add(h.stream as FileStreamHandle, 'operator');
  else if (h.type === 'key-groups')
    add(h.stream as FileStreamHandle, h.layout === 'canonical-v1' ? 'canonical' : 'key-groups');
  else if (h.type === 'changelog') {
    for (const m of h.materialized as KeyedStateHandle[]) categorize(m, pointer, out);
    for (const log of h.logs as { segments: { file: FileStreamHandle }[] }[])
      for (const s of log.segments) add(s.file, 'changelog-segment');
  } else if (h.type === 'leveldb-incremental') {
    const files = [
      ...(h.sharedFiles as { localName: string; handle: FileStreamHandle }[]),
      ...(h.privateFiles as { localName: string; handle: FileStreamHandle }[]),
    ];
    for (const f of files) {
      const category: FileCategory = /\.(ldb|sst)$/.test(f.localName)
        ? 'leveldb-table'
        : f.localName.startsWith('MANIFEST-')
          ? 'leveldb-manifest'
          : f.localName === 'CURRENT'
            ? 'leveldb-current'
            : 'leveldb-log';
      add(f.handle, category);
    }
    add(h.meta as FileStreamHandle, 'leveldb-meta');
  } else {
    throw new Error(`corruption fixture: unknown handle type ${String(h.type)}`);
  }
}

/** The _metadata and every data file of a snapshot. */
export function snapshotFiles(pointer: string, metadata: CheckpointMetadata): SnapshotFile[] {
  const out: SnapshotFile[] = [{ name: `${pointer}/_metadata`, category: 'metadata' }];
  for (const op of metadata.operators) {
    for (const st of op.subtasks) for (const h of [...st.keyed, ...st.operator]) categorize(h, pointer, out);
  }
  const seen = new Set<string>();
  return out.filter((f) => !seen.has(f.name) && (seen.add(f.name), true));
}

/** Bytes added to some values in the leveldb family: LevelDB's memtable is at least 64 KiB, and the checkpoints must hold table files. */
const LEVELDB_PADDING = 2000;

/** The checkpoint storage of a family's store root (the one its coordinators use). */
export function storageFor(family: Family, root: string): CheckpointStorage {
  return localCheckpointStorage(root, family === 'inline' ? {} : { inlineThreshold: 0 });
}

export interface RunningJob {
  readonly keyed: KeyedStateBackend<string>[];
  readonly operator: OperatorStateBackend[];
}

/** Creates the keyed and operator backends of every subtask (restored from `plan` when given). */
export async function openJob(
  backend: StateBackend,
  jobId: string,
  parallelism: number,
  plan: Awaited<ReturnType<CheckpointCoordinator['restore']>>,
  job: RunningJob = { keyed: [], operator: [] },
): Promise<RunningJob> {
  for (let i = 0; i < parallelism; i++) {
    const sub = plan?.subtask(OPERATOR_ID, i);
    const info = { jobId, operatorId: OPERATOR_ID, subtaskIndex: i, parallelism };
    job.keyed.push(
      await backend.createKeyedStateBackend({
        ...info,
        maxParallelism: MAX_PARALLELISM,
        keyGroupRange: keyGroupRangeForSubtask(MAX_PARALLELISM, parallelism, i),
        keySerializer: stringSerializer,
        ...(sub ? { restore: sub.keyed } : {}),
      }),
    );
    job.operator.push(await backend.createOperatorStateBackend({ ...info, ...(sub ? { restore: sub.operator } : {}) }));
  }
  return job;
}

export async function closeJob(job: RunningJob): Promise<void> {
  await Promise.allSettled([...job.keyed, ...job.operator].map((b) => b.close()));
}

export function newCoordinator(
  storage: CheckpointStorage,
  backend: StateBackend,
  jobId: string,
  parallelism: number,
): CheckpointCoordinator {
  return new CheckpointCoordinator({
    jobId,
    storage,
    backendName: backend.name,
    operators: [{ operatorId: OPERATOR_ID, parallelism, maxParallelism: MAX_PARALLELISM }],
    numRetained: 2,
  });
}

/** One checkpoint or savepoint of every subtask, acknowledged to the coordinator; resolves with its pointer. */
async function snapshotJob(coordinator: CheckpointCoordinator, job: RunningJob, savepoint: boolean): Promise<string> {
  const pending = savepoint ? coordinator.triggerSavepoint({ format: 'canonical' }) : coordinator.triggerCheckpoint();
  const tasks = [];
  for (let i = 0; i < job.keyed.length; i++) {
    const options = pending.snapshotOptions(OPERATOR_ID, i);
    tasks.push({
      i,
      keyed: await job.keyed[i].snapshot(pending.checkpointId, options),
      operator: await job.operator[i].snapshot(pending.checkpointId, options),
    });
  }
  for (const t of tasks) {
    const keyed = await t.keyed.done;
    const operator = await t.operator.done;
    await coordinator.acknowledge(pending.checkpointId, OPERATOR_ID, t.i, { keyed: [keyed], operator: [operator] });
  }
  const info = await pending.completion;
  for (const b of job.keyed) await b.notifyCheckpointComplete(pending.checkpointId);
  return info.pointer;
}

interface JobRun {
  readonly jobId: string;
  readonly checkpoints: string[];
  readonly savepoint: string | null;
  /** dumpState() at checkpoint 2 (and the savepoint). */
  readonly expected: string;
  /** dumpState() at checkpoint 1. */
  readonly previous: string;
}

async function runJob(
  family: Family,
  root: string,
  workDir: string,
  jobId: string,
  seed: number,
  parallelism: number,
  savepoint: boolean,
): Promise<JobRun> {
  const backend = makeFamilyBackend(family, root, workDir);
  const storage = storageFor(family, root);
  const coordinator = newCoordinator(storage, backend, jobId, parallelism);
  await coordinator.restore();
  const job = await openJob(backend, jobId, parallelism, null);
  try {
    const checkpoints: string[] = [];
    const states: string[] = [];
    for (let round = 0; round < 2; round++) {
      populate(job.keyed, job.operator, seed, round, family === 'leveldb' ? LEVELDB_PADDING : 0);
      checkpoints.push(await snapshotJob(coordinator, job, false));
      states.push(await dumpState(job.keyed, job.operator, false));
    }
    const sp = savepoint ? await snapshotJob(coordinator, job, true) : null;
    return { jobId, checkpoints, savepoint: sp, expected: states[1], previous: states[0] };
  } finally {
    await closeJob(job);
    await coordinator.shutdown('finish');
  }
}

export interface FamilyFixture {
  readonly family: Family;
  readonly root: string;
  readonly parallelism: number;
  readonly a: JobRun;
  readonly b: JobRun;
  /** Files of each snapshot, by pointer. */
  readonly files: ReadonlyMap<string, SnapshotFile[]>;
  cleanup(): Promise<void>;
}

export async function buildFamily(family: Family, tmpRoot = tmpdir()): Promise<FamilyFixture> {
  const base = await mkdtemp(join(tmpRoot, `streamstate-corruption-${family}-`));
  const root = join(base, 'store');
  const workDir = join(base, 'work');
  await mkdir(root, { recursive: true });
  const parallelism = 2;
  try {
    const a = await runJob(
      family,
      root,
      workDir,
      `job-a-${family}`,
      1,
      parallelism,
      family === 'heap' || family === 'inline',
    );
    const b = await runJob(family, root, workDir, `job-b-${family}`, 2, parallelism, false);
    await rm(workDir, { recursive: true, force: true });
    const storage = storageFor(family, root);
    const files = new Map<string, SnapshotFile[]>();
    for (const pointer of [...a.checkpoints, ...b.checkpoints, ...(a.savepoint ? [a.savepoint] : [])]) {
      files.set(pointer, snapshotFiles(pointer, (await storage.resolve(pointer)).metadata));
    }
    return { family, root, parallelism, a, b, files, cleanup: () => rm(base, { recursive: true, force: true }) };
  } catch (err) {
    await rm(base, { recursive: true, force: true });
    throw err;
  }
}

/** The fixture of one format, carved out of its family's checkpoints. */
export function fixtureFor(format: FormatName, fam: FamilyFixture): CorruptionFixture {
  if (FAMILY_OF[format] !== fam.family)
    throw new Error(`format ${format} needs the ${FAMILY_OF[format]} family, not ${fam.family}`);
  const pointer = format === 'canonical' ? fam.a.savepoint! : fam.a.checkpoints[1];
  const mine = fam.files.get(pointer)!;
  const wanted = new Set(TARGETS[format]);
  const targets = mine.filter((f) => wanted.has(f.category));
  if (targets.length === 0)
    throw new Error(`fixture ${format}: the snapshot ${pointer} holds no ${[...wanted].join('/')} files`);
  const mineNames = new Set(mine.map((f) => f.name));
  const foreign: SnapshotFile[] = [];
  for (const [p, list] of fam.files)
    if (p !== pointer) for (const f of list) if (!mineNames.has(f.name)) foreign.push(f);
  return {
    format,
    root: fam.root,
    jobId: fam.a.jobId,
    pointer,
    parallelism: fam.parallelism,
    targets,
    sameSnapshot: format === 'metadata' ? mine : mine.filter((f) => f.category !== 'metadata'),
    foreign,
    expected: fam.a.expected,
    previous: fam.a.previous,
    family: fam.family,
    makeBackend: (storeRoot, workDir) => makeFamilyBackend(fam.family, storeRoot, workDir),
  };
}

export function familyOf(format: FormatName): Family {
  return FAMILY_OF[format];
}
