import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { isStreamStateError, RestoreError, StorageError, StreamStateError } from '../errors.js';
import {
  DEFAULT_GC_MIN_AGE_MS,
  deleteConvertLeftovers,
  deleteGarbage,
  findConvertLeftovers,
  findGarbageIfJob,
  listJobCheckpoints,
  type GarbageReport,
} from '../savepoint/checkpoint-dir.js';
import { convertSnapshot, planParallelism, refuseInFlightRecords, type ConvertOptions } from '../savepoint/convert.js';
import { dumpOperator, keyGroupsHandlesOf } from '../savepoint/dump.js';
import { formatBytes, formatReport, inspectMetadata } from '../savepoint/inspect.js';
import { keyGroupSizes } from '../savepoint/key-group-sizes.js';
import { formatKeyGroupSizes } from '../savepoint/key-group-sizes-text.js';
import {
  isS3Path,
  locateCheckpointDir,
  locateSnapshot,
  type LocatedCheckpointDir,
  type LocatedSnapshot,
  type S3ConnectionOptions,
} from '../savepoint/locate.js';
import { verifySnapshot, type VerifyProblem, type VerifyResult } from '../savepoint/verify.js';
import { backendByName, keySerializerOf, TARGET_BACKENDS } from './backends.js';
import { ExitCode, exitCodeFor, type ExitCodeValue } from './exit-codes.js';
import { installProcessHandlers, TemporaryPathRegistry } from './interrupt.js';
import { Progress } from './progress.js';
import { packageVersion } from './version.js';
import { registerBootstrap } from './bootstrap.js';
import { registerEdit } from './edit.js';
import type { VerbHost } from './verb-host.js';

/**
 * The `streamstate` command line (docs/CLI.md). `run(argv, io)` is the whole program: main.ts
 * calls it with process streams, tests with captured ones. It never calls process.exit; it
 * resolves with the exit code.
 */

export interface CliOutput {
  write(chunk: string): boolean | void;
  once?(event: 'drain', listener: () => void): unknown;
  readonly isTTY?: boolean;
}

export interface CliIo {
  readonly stdout: CliOutput;
  readonly stderr: CliOutput;
  /** Relative paths resolve against this. Default process.cwd(). */
  readonly cwd?: string;
  /** Progress appears only for work that takes longer than this. Default 1000 ms. */
  readonly progressDelayMs?: number;
  /** Environment for S3 defaults (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS_REGION). Default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /**
   * run() is the whole process (main.ts): SIGINT/SIGTERM remove temporary output and exit 130/143,
   * EPIPE on process.stdout exits 0 (src/cli/interrupt.ts). Default false (in-process use).
   */
  readonly ownsProcess?: boolean;
}

interface GlobalOptions {
  quiet?: boolean;
  progress?: boolean;
  s3Endpoint?: string;
  s3Region?: string;
  s3PathStyle?: boolean;
  s3EntropyMarker?: string;
}

interface Context {
  readonly io: CliIo;
  readonly cwd: string;
  code: ExitCodeValue;
  command: string;
  /** Settings for s3:// paths, from the global --s3-* options and the environment. */
  s3: S3ConnectionOptions;
  /** Temporary directories of the running command, removed when the process is interrupted. */
  readonly temps: TemporaryPathRegistry;
  /** --quiet: no progress, no warnings; results and errors only. */
  quiet: boolean;
  /** --progress: plain progress lines also when stderr is not a terminal. */
  plainProgress: boolean;
  /** Progress displays of the running command, stopped when it ends. */
  readonly progresses: Progress[];
}

/** The command's progress display (docs/CLI.md, "Conventions"). */
function progressFor(ctx: Context): Progress {
  const p = new Progress(ctx.io.stderr, ctx.io.progressDelayMs, ctx.io.stderr.isTTY === true, Date.now, {
    enabled: !ctx.quiet,
    plain: ctx.plainProgress,
  });
  ctx.progresses.push(p);
  return p;
}

/**
 * S3 settings: flags first, then the standard AWS variables. Credentials always come from the
 * SDK's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...), never from flags.
 */
function s3Settings(opts: GlobalOptions, env: Readonly<Record<string, string | undefined>>): S3ConnectionOptions {
  const endpoint = opts.s3Endpoint ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL;
  const region = opts.s3Region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION;
  return {
    ...(endpoint === undefined ? {} : { endpoint }),
    ...(region === undefined ? {} : { region }),
    ...(opts.s3PathStyle === true ? { forcePathStyle: true } : {}),
    ...(opts.s3EntropyMarker === undefined ? {} : { entropy: { marker: opts.s3EntropyMarker } }),
  };
}

/** Runs `fn` on what `open` located, then releases its storage (S3 connections). */
async function using<L extends LocatedSnapshot | LocatedCheckpointDir, T>(
  open: Promise<L>,
  fn: (located: L) => Promise<T>,
): Promise<T> {
  const located = await open;
  try {
    return await fn(located);
  } finally {
    await located.close();
  }
}

async function out(io: CliIo, text: string): Promise<void> {
  if (io.stdout.write(text) === false && io.stdout.once) await new Promise<void>((r) => io.stdout.once!('drain', r));
}

function oneLine(s: string): string {
  return s.replace(/\s*\n\s*/g, ' ').trim();
}

/** Any integer: range checks are the library's (typed errors that say what is allowed). */
function parseInteger(value: string): number {
  if (!/^-?[0-9]+$/.test(value)) throw new InvalidArgumentError('expected an integer.');
  return Number(value);
}

function parsePositiveInt(value: string): number {
  if (!/^[1-9][0-9]*$/.test(value)) throw new InvalidArgumentError('expected a positive integer.');
  return Number(value);
}

// ------------------------------------------------------------------------------ shared helpers

const convertBase = (
  ctx: Context,
  progress: Progress,
): Pick<ConvertOptions, 'backendFor' | 'keySerializerOf' | 'progress' | 'temporaryPaths'> => ({
  backendFor: backendByName,
  keySerializerOf,
  progress: (e) => progress.update(e.phase, e.done, e.total),
  temporaryPaths: ctx.temps,
});

function needsMaterialize(located: LocatedSnapshot): boolean {
  return located.snapshot.metadata.operators.some((op) => keyGroupsHandlesOf(op).others.length > 0);
}

/**
 * Runs `fn` on a key-groups view of the snapshot: the snapshot itself when every keyed handle is
 * a key-groups stream, else a canonical conversion in a temporary directory (through the backend
 * that wrote it), removed afterwards.
 */
async function withKeyGroupsView<T>(
  ctx: Context,
  located: LocatedSnapshot,
  progress: Progress,
  fn: (view: LocatedSnapshot) => Promise<T>,
): Promise<T> {
  if (!needsMaterialize(located)) return fn(located);
  const dir = await mkdtemp(join(tmpdir(), 'streamstate-view-'));
  ctx.temps.add(dir);
  try {
    const dst = join(dir, 'canonical');
    await convertSnapshot(located, dst, {
      ...convertBase(ctx, progress),
      target: located.snapshot.metadata.backend,
      format: 'canonical',
      inFlightRecords: 'drop', // a read-only view of the state
    });
    progress.done();
    return await using(locateSnapshot(dst), fn);
  } finally {
    await rm(dir, { recursive: true, force: true }).then(
      () => ctx.temps.delete(dir),
      () => undefined,
    );
  }
}

// ------------------------------------------------------------------------------ commands

function locate(ctx: Context, path: string): Promise<LocatedSnapshot> {
  return locateSnapshot(path, { cwd: ctx.cwd, s3: ctx.s3 });
}

function locateDir(ctx: Context, path: string): Promise<LocatedCheckpointDir> {
  return locateCheckpointDir(path, { cwd: ctx.cwd, s3: ctx.s3 });
}

async function inspectCommand(ctx: Context, path: string, opts: InspectCliOptions): Promise<void> {
  if (opts.keyGroups) {
    await using(locate(ctx, path), (located) => keyGroupsLocated(ctx, located, opts));
    return;
  }
  if (opts.parallelism !== undefined)
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      '--parallelism goes with --key-groups (the subtask shares at a proposed parallelism); add --key-groups.',
    );
  const located = await locate(ctx, path);
  await located.close(); // _metadata is all inspect reads
  const report = inspectMetadata(located.snapshot.metadata, path);
  await out(ctx.io, opts.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
}

interface InspectCliOptions {
  json?: boolean;
  keyGroups?: boolean;
  parallelism?: number;
}

/** `inspect --key-groups`: sizes from _metadata, or from a canonical view of native handles. */
async function keyGroupsLocated(ctx: Context, located: LocatedSnapshot, opts: InspectCliOptions): Promise<void> {
  const progress = progressFor(ctx);
  const basis = needsMaterialize(located) ? 'canonical-view' : 'snapshot';
  const reports = await withKeyGroupsView(ctx, located, progress, (view) =>
    keyGroupSizes(
      view.snapshot.metadata,
      view.snapshot.files,
      opts.parallelism === undefined ? {} : { parallelism: opts.parallelism },
    ),
  );
  progress.done();
  await out(
    ctx.io,
    opts.json ? `${JSON.stringify({ basis, operators: reports }, null, 2)}\n` : formatKeyGroupSizes(reports, basis),
  );
}

function exitCodeForProblems(problems: readonly VerifyProblem[]): ExitCodeValue {
  if (problems.some((p) => p.category === 'missing')) return ExitCode.NOT_FOUND;
  if (problems.some((p) => p.category === 'corrupt')) return ExitCode.CORRUPT;
  if (problems.some((p) => p.category === 'unsupported')) return ExitCode.UNSUPPORTED_VERSION;
  if (problems.some((p) => p.category === 'decode')) return ExitCode.DECODE;
  return ExitCode.OK;
}

async function verifyCommand(ctx: Context, path: string, opts: { json?: boolean }): Promise<void> {
  await using(locate(ctx, path), (located) => verifyLocated(ctx, located, path, opts));
}

async function verifyLocated(
  ctx: Context,
  located: LocatedSnapshot,
  path: string,
  opts: { json?: boolean },
): Promise<void> {
  const progress = progressFor(ctx);
  let result: VerifyResult = await verifySnapshot(located, (done, total) =>
    progress.update('checking files', done, total),
  );
  progress.done();
  let materialized: VerifyResult | undefined;
  if (result.problems.length === 0 && result.undecodedHandleTypes.length > 0) {
    // Native handles of other backends: restore them through their backend and decode what it writes.
    try {
      materialized = await withKeyGroupsView(ctx, located, progress, (view) => verifySnapshot(view));
    } catch (err) {
      const code = exitCodeFor(err);
      const category =
        code === ExitCode.NOT_FOUND
          ? 'missing'
          : code === ExitCode.DECODE
            ? 'decode'
            : code === ExitCode.UNSUPPORTED_VERSION
              ? 'unsupported'
              : 'corrupt';
      materialized = {
        ...result,
        records: 0,
        opaqueRecords: 0,
        problems: [
          {
            category,
            code: err instanceof StreamStateError ? err.code : 'CORRUPT',
            message: `restoring the ${result.undecodedHandleTypes.join(', ')} state failed: ${(err as Error).message}`,
          },
        ],
      };
    }
    progress.done();
    result = {
      ...result,
      records: materialized.records,
      opaqueRecords: materialized.opaqueRecords,
      undecodedHandleTypes: [],
      problems: materialized.problems,
    };
  }
  ctx.code = exitCodeForProblems(result.problems);
  for (const p of result.problems) ctx.io.stderr.write(`streamstate verify: ${p.code}: ${oneLine(p.message)}\n`);
  if (opts.json) {
    await out(
      ctx.io,
      `${JSON.stringify({ path, ok: result.problems.length === 0, exitCode: ctx.code, ...result }, null, 2)}\n`,
    );
    return;
  }
  const summary =
    `${result.files} file${result.files === 1 ? '' : 's'} (${formatBytes(result.bytes)}), ${result.handles} handles, ${result.records} records decoded` +
    (result.opaqueRecords > 0 ? `, ${result.opaqueRecords} records with custom serializers (framing checked)` : '');
  await out(
    ctx.io,
    result.problems.length === 0
      ? `OK ${path}: ${summary}\n`
      : `FAILED ${path}: ${result.problems.length} problem${result.problems.length === 1 ? '' : 's'}; ${summary}\n`,
  );
}

async function convertCommand(ctx: Context, src: string, dst: string, opts: ConvertCliOptions): Promise<void> {
  await using(locate(ctx, src), (located) => convertLocated(ctx, located, src, dst, opts));
}

async function convertLocated(
  ctx: Context,
  located: LocatedSnapshot,
  src: string,
  dst: string,
  opts: ConvertCliOptions,
): Promise<void> {
  const md = located.snapshot.metadata;
  refuseInFlightRecords(md);
  const plan = planParallelism(md, opts.parallelism, opts.maxParallelism);
  if (opts.maxParallelismCheck) {
    const maxP = (old: number): string =>
      opts.maxParallelism === undefined || opts.maxParallelism === old
        ? `${old}`
        : `${old} -> ${opts.maxParallelism} (keys re-hashed)`;
    const lines = md.operators.map(
      (op) =>
        `operator ${op.operatorId}: parallelism ${op.parallelism} -> ${plan.get(op.operatorId)}, maxParallelism ${maxP(op.maxParallelism)}: ok`,
    );
    await out(ctx.io, `${lines.join('\n')}\n`);
    return;
  }
  const target = backendByName(opts.to, tmpdir());
  if (!target.supportsSavepointFormat(opts.format)) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `backend ${opts.to} does not write ${opts.format} savepoints; use --format ${opts.format === 'native' ? 'canonical' : 'native'}.`,
    );
  }
  const progress = progressFor(ctx);
  const started = Date.now();
  const result = await convertSnapshot(located, isS3Path(dst) ? dst : resolve(ctx.cwd, dst), {
    ...convertBase(ctx, progress),
    target: opts.to,
    format: opts.format,
    s3: ctx.s3,
    ...(opts.parallelism === undefined ? {} : { parallelism: opts.parallelism }),
    ...(opts.maxParallelism === undefined ? {} : { maxParallelism: opts.maxParallelism }),
  });
  progress.done();
  const seconds = (Date.now() - started) / 1000;
  const ops = result.metadata.operators
    .map((o) => `${o.operatorId}@${o.parallelism}${opts.maxParallelism === undefined ? '' : `/${o.maxParallelism}`}`)
    .join(', ');
  await out(
    ctx.io,
    `converted ${src} -> ${dst}: ${opts.format} savepoint for ${opts.to} (${ops}), ${result.keyGroups} key groups, ${formatBytes(result.keyedBytes)} keyed state in ${seconds.toFixed(2)} s\n`,
  );
}

interface ConvertCliOptions {
  to: string;
  format: 'canonical' | 'native';
  parallelism?: number;
  maxParallelism?: number;
  maxParallelismCheck?: boolean;
}

async function dumpCommand(ctx: Context, path: string, opts: { operator: string; state?: string }): Promise<void> {
  await using(locate(ctx, path), (located) => dumpLocated(ctx, located, path, opts));
}

async function dumpLocated(
  ctx: Context,
  located: LocatedSnapshot,
  path: string,
  opts: { operator: string; state?: string },
): Promise<void> {
  if (!located.snapshot.metadata.operators.some((o) => o.operatorId === opts.operator)) {
    const known = located.snapshot.metadata.operators.map((o) => o.operatorId).join(', ') || 'none';
    throw new RestoreError(
      'UNKNOWN_OPERATOR',
      `${path} has no operator "${opts.operator}" (operators: ${known}). Pass one of those to --operator.`,
    );
  }
  const progress = progressFor(ctx);
  await withKeyGroupsView(ctx, located, progress, async (view) => {
    for await (const record of dumpOperator(view.snapshot.metadata, view.snapshot.files, {
      operatorId: opts.operator,
      ...(opts.state === undefined ? {} : { stateName: opts.state }),
    })) {
      await out(ctx.io, `${JSON.stringify(record)}\n`);
    }
  });
}

async function listCommand(ctx: Context, dir: string, opts: { json?: boolean }): Promise<void> {
  await using(locateDir(ctx, dir), (located) => listLocated(ctx, located, dir, opts));
}

async function listLocated(
  ctx: Context,
  located: LocatedCheckpointDir,
  dir: string,
  opts: { json?: boolean },
): Promise<void> {
  if (located.jobs.length === 0)
    throw new StorageError(
      'NOT_FOUND',
      `${dir} holds no job checkpoint directories (no chk-<n>/ or shared/ inside). Pass a job's checkpoint directory or the storage root.`,
    );
  const jobs = [];
  for (const job of located.jobs) jobs.push(await listJobCheckpoints(located.storage, job));
  if (opts.json) {
    await out(ctx.io, `${JSON.stringify(jobs, null, 2)}\n`);
    return;
  }
  const lines: string[] = [];
  for (const j of jobs) {
    lines.push(
      `job ${j.jobId}: ${j.checkpoints.length} completed checkpoint${j.checkpoints.length === 1 ? '' : 's'}${j.incomplete.length > 0 ? `, ${j.incomplete.length} incomplete (${j.incomplete.map((i) => `chk-${i}`).join(', ')})` : ''}`,
    );
    for (const c of j.checkpoints) {
      const stats =
        c.stats === undefined
          ? ''
          : `  (${c.stats.durationMs} ms, wrote ${formatBytes(c.stats.bytesWritten)} of ${formatBytes(c.stats.fullSize)})`;
      lines.push(
        `  ${String(c.checkpointId).padStart(6)}  ${new Date(c.timestamp).toISOString()}  ${formatBytes(c.size).padStart(10)}  ${c.pointer}${stats}`,
      );
    }
  }
  await out(ctx.io, `${lines.join('\n')}\n`);
}

interface GcCliOptions {
  dryRun?: boolean;
  json?: boolean;
  minAge?: number;
}

async function gcCommand(ctx: Context, dir: string, opts: GcCliOptions): Promise<void> {
  await using(locateDir(ctx, dir), (located) => gcLocated(ctx, located, dir, opts));
}

/** A duration: `0`, or a number with a unit (ms, s, m, h, d). */
function parseDuration(value: string): number {
  const m = /^(0|[0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)?$/.exec(value);
  if (m === null || (m[2] === undefined && m[1] !== '0'))
    throw new InvalidArgumentError('expected a duration such as 0, 90s, 30m, 2h or 1d.');
  const units: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  return Number(m[1]) * (units[m[2] ?? 'ms'] ?? 1);
}

function formatDuration(ms: number): string {
  for (const [unit, n] of [
    ['d', 86_400_000],
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const)
    if (ms >= n && ms % n === 0) return `${ms / n}${unit}`;
  return `${ms}ms`;
}

async function gcLocated(ctx: Context, located: LocatedCheckpointDir, dir: string, opts: GcCliOptions): Promise<void> {
  const gc = { minAgeMs: opts.minAge ?? DEFAULT_GC_MIN_AGE_MS, now: Date.now() };
  const warn = (w: string): void =>
    void (ctx.quiet ? undefined : ctx.io.stderr.write(`streamstate gc: warning: ${oneLine(w)}\n`));
  // Every candidate must be recognizably a streamstate job; anything else is left alone.
  const reports: GarbageReport[] = [];
  const skipped: string[] = [];
  const live: string[] = [];
  for (const job of located.jobs) {
    let report: GarbageReport | null;
    try {
      report = await findGarbageIfJob(located.storage, job, gc);
    } catch (err) {
      if (!isStreamStateError(err, 'LOCKED')) throw err;
      // A live instance may still complete a checkpoint: everything of this job stays.
      live.push(job);
      warn(err.message);
      continue;
    }
    if (report === null) {
      skipped.push(job);
      warn(`${job} is not a streamstate job (no readable chk-<n>/_metadata of job ${job}); left alone.`);
    } else reports.push(report);
  }
  // Leftovers of interrupted converts, directly in the given directory (local disk only).
  const leftovers = isS3Path(dir)
    ? { stale: [], young: [] }
    : await findConvertLeftovers(resolve(ctx.cwd, dir.startsWith('file://') ? dir.slice('file://'.length) : dir), gc);
  if (live.length > 0 && reports.length === 0 && leftovers.stale.length === 0) {
    throw new StorageError(
      'LOCKED',
      `${dir}: ${live.length === 1 ? `job ${live[0]} is` : `jobs ${live.join(', ')} are`} running (a live lease); gc deleted nothing. Stop the job first.`,
    );
  }
  if (reports.length === 0 && live.length === 0 && leftovers.stale.length === 0 && leftovers.young.length === 0) {
    throw new StorageError(
      'NOT_FOUND',
      `${dir} holds no streamstate job (no chk-<n>/_metadata written by streamstate in it or in its job directories) and no leftovers of streamstate convert; nothing was deleted. ` +
        "Pass a job's checkpoint directory or the storage root.",
    );
  }
  for (const r of reports) {
    for (const w of r.warnings) warn(w);
    if (!opts.dryRun) await deleteGarbage(located.storage, r);
  }
  if (!opts.dryRun) await deleteConvertLeftovers(leftovers.stale);
  if (opts.json) {
    await out(
      ctx.io,
      `${JSON.stringify({ dryRun: opts.dryRun === true, minAgeMs: gc.minAgeMs, jobs: reports, skipped, live, convertLeftovers: leftovers }, null, 2)}\n`,
    );
    if (live.length > 0) ctx.code = ExitCode.IN_USE;
    return;
  }
  const verb = opts.dryRun ? 'would delete' : 'deleted';
  const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;
  const lines: string[] = [];
  for (const r of reports) {
    const keptBy = new Map<string, number>();
    for (const k of r.kept) keptBy.set(k.reason, (keptBy.get(k.reason) ?? 0) + 1);
    const kept =
      r.kept.length === 0
        ? ''
        : `; kept ${plural(r.kept.length, 'file')} (${[...keptBy].map(([why, n]) => `${n} ${why === 'too-young' ? `younger than ${formatDuration(gc.minAgeMs)}` : why}`).join(', ')})`;
    lines.push(`job ${r.jobId}: ${verb} ${plural(r.files.length, 'file')} (${formatBytes(r.bytes)})${kept}`);
    for (const f of r.files) lines.push(`  ${f.reason.padEnd(22)} ${formatBytes(f.size).padStart(10)}  ${f.name}`);
  }
  if (leftovers.stale.length > 0 || leftovers.young.length > 0) {
    const bytes = leftovers.stale.reduce((n, l) => n + l.bytes, 0);
    const young =
      leftovers.young.length === 0
        ? ''
        : `; kept ${leftovers.young.length} younger than ${formatDuration(gc.minAgeMs)} (a convert may still be running)`;
    lines.push(
      `convert leftovers: ${verb} ${plural(leftovers.stale.length, 'directory').replace('directorys', 'directories')} (${formatBytes(bytes)})${young}`,
    );
    for (const l of leftovers.stale) lines.push(`  ${formatBytes(l.bytes).padStart(10)}  ${l.path}`);
  }
  for (const job of live) lines.push(`job ${job}: running (live lease), nothing deleted`);
  await out(ctx.io, `${lines.join('\n')}\n`);
  if (live.length > 0) ctx.code = ExitCode.IN_USE;
}

// ------------------------------------------------------------------------------ program

function buildProgram(ctx: Context): Command {
  const program = new Command('streamstate')
    .description('Inspect, verify, convert and clean up streamstate checkpoints and savepoints.')
    .exitOverride()
    .configureOutput({
      writeOut: (s) => void ctx.io.stdout.write(s),
      writeErr: (s) => void ctx.io.stderr.write(s),
    })
    .version(packageVersion(), '-V, --version', 'print the streamstate version')
    .option('-q, --quiet', 'no progress and no warnings on stderr: results (stdout) and errors only')
    .option('--progress', 'progress lines on stderr also when it is not a terminal (logs, pipes)')
    .option(
      '--s3-endpoint <url>',
      'S3 endpoint for s3:// paths (default: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS S3)',
    )
    .option(
      '--s3-region <region>',
      'S3 region (default: AWS_REGION, the AWS config, or us-east-1 with a custom endpoint)',
    )
    .option(
      '--s3-path-style',
      'path-style S3 URLs (http://host/bucket/key), as most S3-compatible servers need (MinIO, s3rver)',
    )
    .option(
      '--s3-entropy-marker <marker>',
      'the entropy marker the checkpoints were written with (reads checkpoints with entropy injection)',
    )
    .hook('preAction', () => {
      const global = program.opts<GlobalOptions>();
      ctx.s3 = s3Settings(global, ctx.io.env ?? process.env);
      ctx.quiet = global.quiet === true;
      ctx.plainProgress = global.progress === true && !ctx.quiet;
    });
  const action =
    <A extends unknown[]>(name: string, fn: (...args: A) => Promise<void>) =>
    async (...args: A): Promise<void> => {
      ctx.command = name;
      await fn(...args);
    };
  const withExitCodes = (cmd: Command): Command =>
    cmd.addHelpText(
      'after',
      '\nExit codes: 0 ok, 1 unexpected failure, 2 usage, 3 not found, 4 corrupt, 5 decode error, 6 unsupported version, 7 in use (gc: a live job), 130/143 interrupted (docs/CLI.md).',
    );

  withExitCodes(
    program
      .command('inspect')
      .description("show a checkpoint's or savepoint's operators, states, kinds, key groups, sizes and files")
      .argument('<path>', 'snapshot directory (or its _metadata file)')
      .option('--json', 'print the report as JSON')
      .option(
        '--key-groups',
        'bytes and entries per key group: histogram, largest key groups, skew, and what each subtask would hold',
      )
      .option(
        '--parallelism <n>',
        "with --key-groups: the parallelism to show subtask shares for (default the snapshot's)",
        parsePositiveInt,
      ),
  ).action(action('inspect', (path: string, opts: InspectCliOptions) => inspectCommand(ctx, path, opts)));

  withExitCodes(
    program
      .command('verify')
      .description('check that every referenced file exists, every checksum matches and every record decodes')
      .argument('<path>', 'snapshot directory (or its _metadata file)')
      .option('--json', 'print the result as JSON'),
  ).action(action('verify', (path: string, opts: { json?: boolean }) => verifyCommand(ctx, path, opts)));

  withExitCodes(
    program
      .command('convert')
      .description(
        'turn any checkpoint or savepoint into a savepoint for a target backend, optionally at another parallelism',
      )
      .argument('<src>', 'source snapshot directory')
      .argument('<dst>', 'new savepoint directory or s3:// prefix (must not exist)')
      .addOption(
        new Option('--to <backend>', 'target state backend').choices([...TARGET_BACKENDS]).makeOptionMandatory(),
      )
      .addOption(
        new Option('--format <format>', 'savepoint format').choices(['canonical', 'native']).default('canonical'),
      )
      .option('--parallelism <n>', 'new parallelism of every operator (at most its maxParallelism)', parsePositiveInt)
      .option(
        '--max-parallelism <n>',
        'new max parallelism (key groups) of every operator, 1..32768 and at least the parallelism: every key is re-hashed into its new key group',
        parseInteger,
      )
      .option(
        '--max-parallelism-check',
        'only check that the snapshot can be converted at --parallelism (maxParallelism bounds and consistency); write nothing',
      ),
  ).action(
    action('convert', (src: string, dst: string, opts: ConvertCliOptions) => convertCommand(ctx, src, dst, opts)),
  );

  withExitCodes(
    program
      .command('dump')
      .description("print an operator's state records as JSON lines (key, namespace, value)")
      .argument('<path>', 'snapshot directory (or its _metadata file)')
      .requiredOption('--operator <id>', 'operator id')
      .option('--state <name>', 'only this state'),
  ).action(action('dump', (path: string, opts: { operator: string; state?: string }) => dumpCommand(ctx, path, opts)));

  withExitCodes(
    program
      .command('list')
      .description(
        "list a job's completed checkpoints with ids, times and sizes (all jobs when given the storage root)",
      )
      .argument('<checkpoint-dir>', "a job's checkpoint directory or the checkpoint storage root")
      .option('--json', 'print as JSON'),
  ).action(action('list', (dir: string, opts: { json?: boolean }) => listCommand(ctx, dir, opts)));

  withExitCodes(
    program
      .command('gc')
      .description(
        'delete files of streamstate jobs that no completed checkpoint references, and leftovers of interrupted converts',
      )
      .argument('<checkpoint-dir>', "a job's checkpoint directory or the checkpoint storage root")
      .option('--dry-run', 'only list what would be deleted')
      .option(
        '--min-age <duration>',
        `keep files modified more recently than this (0, 90s, 30m, 2h, 1d; default ${formatDuration(DEFAULT_GC_MIN_AGE_MS)}): a checkpoint may still complete with them`,
        parseDuration,
      )
      .option('--json', 'print as JSON'),
  ).action(action('gc', (dir: string, opts: GcCliOptions) => gcCommand(ctx, dir, opts)));

  // Verbs defined in files of their own (the State Processor API's).
  const host: VerbHost = {
    cwd: () => ctx.cwd,
    s3: () => ctx.s3,
    print: (text) => out(ctx.io, text),
    action,
    decorate: withExitCodes,
    temps: ctx.temps,
  };
  registerBootstrap(program, host);
  registerEdit(program, host);

  return program;
}

/** Runs the CLI with `argv` (arguments after the program name) and resolves with the exit code. */
export async function run(
  argv: readonly string[],
  io: CliIo = { stdout: process.stdout, stderr: process.stderr },
): Promise<number> {
  const ctx: Context = {
    io,
    cwd: io.cwd ?? process.cwd(),
    code: ExitCode.OK,
    command: '',
    s3: {},
    temps: new TemporaryPathRegistry(),
    quiet: false,
    plainProgress: false,
    progresses: [],
  };
  const program = buildProgram(ctx);
  // Argument errors are reported like every other error (one line, the documented prefix, JSON with --json).
  const commandName = argv.find((a) => program.commands.some((c) => c.name() === a));
  const json = argv.includes('--json');
  const report = (code: string | undefined, message: string, exit: ExitCodeValue): void => {
    const prefix = commandName === undefined ? 'streamstate' : `streamstate ${commandName}`;
    io.stderr.write(
      json
        ? `${JSON.stringify({ error: { command: commandName ?? null, code: code ?? null, message: oneLine(message), exitCode: exit } })}\n`
        : `${prefix}: error${code === undefined ? '' : ` ${code}`}: ${oneLine(message)}\n`,
    );
  };
  program.configureOutput({
    writeOut: (str) => void io.stdout.write(str),
    writeErr: (str) => void io.stderr.write(str),
    outputError: (str) =>
      report('INVALID_ARGUMENT', `${str.replace(/^error:\s*/, '').trim()} (run with --help for usage)`, ExitCode.USAGE),
  });
  for (const cmd of program.commands) cmd.configureOutput(program.configureOutput());
  const uninstall =
    io.ownsProcess === true
      ? installProcessHandlers(ctx.temps, io.stderr, () => ctx.command || 'streamstate')
      : () => undefined;
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return ctx.code;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.exitCode === 0)
        return ExitCode.OK;
      // commander has reported it through outputError already.
      return ExitCode.USAGE;
    }
    const message = err instanceof Error ? err.message : String(err);
    report(err instanceof StreamStateError ? err.code : undefined, message, exitCodeFor(err));
    return exitCodeFor(err);
  } finally {
    for (const p of ctx.progresses) p.dispose();
    uninstall();
  }
}
