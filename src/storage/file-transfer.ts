import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/**
 * Copies (or hard-links) a local file into place and computes its crc32, on a worker thread: the
 * bytes never pass through the main thread, so a checkpoint's upload to local storage advances at
 * disk speed however rarely the record-processing loop yields (issue 15, item 4). Streams through
 * the main thread moved one 1 MiB chunk per few event-loop turns. What is left on the main thread
 * is a message per task and its reply, and a reply is handled only when the loop turns: so the
 * transfers asked for in one turn go out together (tasks of up to TASK_FILES), and small file-system work
 * (a LevelDB checkpoint's links, copies and reads) as one task of steps (fileSteps).
 *
 * The worker's code is plain CommonJS given as a string (eval), so the same module works from the
 * TypeScript sources (tests) and from dist without a second file to locate.
 */

export interface TransferRequest {
  /** Source file (absolute). */
  readonly source: string;
  /** Target file (absolute). Replaced when it exists. */
  readonly target: string;
  /** Create the target's directory (and its parents) first when missing; otherwise it must exist. */
  readonly makeDir?: boolean;
  /** Hard-link instead of copying when the file system allows it (the source is never modified in place). */
  readonly link: boolean;
  /** fsync the target before reporting it done. */
  readonly sync: boolean;
  /**
   * Fail with code EFBIG (side 'source', nothing left at the target) when the source holds more
   * bytes than this: checked against its size at open and again while reading (it may grow).
   */
  readonly maxBytes?: number;
}

export interface TransferResult {
  readonly size: number;
  readonly crc32: number;
  /** Whether the target is a hard link of the source (false: a copy). */
  readonly linked: boolean;
  /** With makeDir: the first directory created (its parents existed), when any was. */
  readonly createdDir?: string;
}

/** A failed transfer: the errno code and message of the step that failed, which side it concerned. */
export class TransferFailure extends Error {
  constructor(
    readonly code: string | undefined,
    readonly side: 'source' | 'target',
    message: string,
  ) {
    super(message);
    this.name = 'TransferFailure';
  }
}

/** Bytes per read/write in the worker: large, since every call is a blocking syscall there anyway. */
const CHUNK_BYTES = 8 * 1024 * 1024;

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
const path = require('node:path');
const { crc32 } = require('node:zlib');
// link() failures after which a copy is made instead: another file system, no hard links there, too many links.
const COPY_INSTEAD = new Set(['EXDEV', 'EPERM', 'EMLINK', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EACCES']);
const buf = Buffer.allocUnsafe(${CHUNK_BYTES});
function fail(side, err) { err.side = side; return err; }
function kindOf(st) {
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}
function readAll(fd, onChunk) {
  let size = 0;
  for (;;) {
    const n = fs.readSync(fd, buf, 0, buf.length, size);
    if (n === 0) return size;
    onChunk(n);
    size += n;
  }
}
// One file of a transfer task: its directory first when asked, then linkOrCopy.
function transfer(job) {
  let createdDir;
  if (job.makeDir) {
    try { createdDir = fs.mkdirSync(path.dirname(job.target), { recursive: true }); } catch (err) { throw fail('target', err); }
  }
  const result = linkOrCopy(job);
  return createdDir === undefined ? result : Object.assign(result, { createdDir });
}
// One file linked or copied (no fsync: transferAll does those), with its crc32.
function linkOrCopy(job) {
  let linked = false;
  if (job.link) {
    try {
      try { fs.linkSync(job.source, job.target); }
      catch (err) { if (err.code !== 'EEXIST') throw err; fs.unlinkSync(job.target); fs.linkSync(job.source, job.target); }
      linked = true;
    } catch (err) { if (!COPY_INSTEAD.has(err.code)) throw fail(err.code === 'ENOENT' && !fs.existsSync(job.source) ? 'source' : 'target', err); }
  }
  let created = linked;
  const limit = job.maxBytes === undefined ? Infinity : job.maxBytes;
  const tooLarge = (size) => fail('source', Object.assign(new Error(job.source + ' holds more than ' + limit + ' bytes'), { code: 'EFBIG' }));
  try {
    if (linked) {
      const fd = fs.openSync(job.target, 'r');
      try {
        let crc = 0;
        const size = readAll(fd, (n) => { crc = crc32(buf.subarray(0, n), crc); });
        return { size, crc32: crc, linked };
      } finally { fs.closeSync(fd); }
    }
    let src;
    // O_NONBLOCK: a FIFO in place of a file must not block the worker; it is refused by fstat below.
    try { src = fs.openSync(job.source, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK); } catch (err) { throw fail('source', err); }
    try {
      let st;
      try { st = fs.fstatSync(src); } catch (err) { throw fail('source', err); }
      // ENOTREG's message is only what the file is ("a FIFO"); a directory is EISDIR, as reading it would be.
      if (st.isDirectory()) throw fail('source', Object.assign(new Error('EISDIR: ' + job.source + ' is a directory'), { code: 'EISDIR' }));
      if (!st.isFile()) throw fail('source', Object.assign(new Error(kindOf(st)), { code: 'ENOTREG' }));
      if (st.size > limit) throw tooLarge();
      let dst;
      try { dst = fs.openSync(job.target, 'w'); created = true; } catch (err) { throw fail('target', err); }
      try {
        let crc = 0;
        let size = 0;
        for (;;) {
          let n;
          try { n = fs.readSync(src, buf, 0, buf.length, size); } catch (err) { throw fail('source', err); }
          if (n === 0) break;
          if (size + n > limit) throw tooLarge();
          crc = crc32(buf.subarray(0, n), crc);
          try { for (let w = 0; w < n; ) w += fs.writeSync(dst, buf, w, n - w, size + w); } catch (err) { throw fail('target', err); }
          size += n;
        }
        return { size, crc32: crc, linked };
      } finally { fs.closeSync(dst); }
    } finally { fs.closeSync(src); }
  } catch (err) {
    // Nothing half-written stays behind: the caller sees the error and no target file.
    if (created) { try { fs.unlinkSync(job.target); } catch {} }
    throw err;
  }
}
// Hard-links a list of files: each entry names alternatives (the first that exists is linked),
// with its size. One that exists under none is ENOENT (side 'source').
function linkAll(st) {
  const out = [];
  for (const names of st.entries) {
    let linked = null;
    for (const name of names) {
      try { fs.linkSync(path.join(st.sourceDir, name), path.join(st.targetDir, name)); linked = name; break; }
      catch (err) { if (err.code !== 'ENOENT') throw fail('target', err); }
    }
    if (linked === null) throw fail('source', Object.assign(new Error('none of ' + names.join(', ') + ' exists in ' + st.sourceDir), { code: 'ENOENT' }));
    out.push({ name: linked, size: fs.statSync(path.join(st.targetDir, linked)).size });
  }
  return out;
}
// Copies the files named <number><suffix> whose number is at least 'atLeast' or in 'also'; their names, sorted.
function copyNumbered(st) {
  const copied = [];
  for (const name of fs.readdirSync(st.sourceDir).sort()) {
    if (!name.endsWith(st.suffix)) continue;
    const digits = name.slice(0, name.length - st.suffix.length);
    if (!/^[0-9]+$/.test(digits)) continue;
    const n = Number(digits);
    if (n < st.atLeast && !st.also.includes(n)) continue;
    fs.copyFileSync(path.join(st.sourceDir, name), path.join(st.targetDir, name));
    copied.push(name);
  }
  return copied;
}
// A file from byte 'from' to its size at open ({ size, bytes }); null when missing and 'missingOk'.
function readFrom(st) {
  let fd;
  try { fd = fs.openSync(st.path, 'r'); }
  catch (err) { if (st.missingOk && err.code === 'ENOENT') return null; throw err; }
  try {
    const size = fs.fstatSync(fd).size;
    const from = Math.min(st.from || 0, size);
    const bytes = Buffer.allocUnsafe(size - from);
    let got = 0;
    while (got < bytes.length) { const n = fs.readSync(fd, bytes, got, bytes.length - got, from + got); if (n === 0) break; got += n; }
    return { size: from + got, bytes: bytes.subarray(0, got) };
  } finally { fs.closeSync(fd); }
}
function failure(err) {
  return { ok: false, code: err && err.code, side: (err && err.side) || 'target', message: String((err && err.message) || err) };
}
// Transfers a list of files, each on its own (one failing leaves the others be), and then fsyncs
// the targets that asked for it: one journal commit covers the links and creations of the whole
// list, where an fsync after each file forced a commit per file.
function transferAll(job) {
  const out = job.files.map((f) => { try { return Object.assign({ ok: true }, transfer(f)); } catch (err) { return failure(err); } });
  job.files.forEach((f, i) => {
    if (!f.sync || !out[i].ok) return;
    try {
      const fd = fs.openSync(f.target, 'r');
      try { fs.fsyncSync(fd); } finally { fs.closeSync(fd); }
    } catch (err) {
      // Not durable: no target file, as for any failed transfer.
      try { fs.unlinkSync(f.target); } catch {}
      out[i] = failure(fail('target', err));
    }
  });
  return out;
}
// Small file-system steps in one task, in order (see FileStep); the first failure fails the task.
function steps(job) {
  return job.steps.map((st) => {
    switch (st.op) {
      case 'remove': fs.rmSync(st.path, { recursive: true, force: true }); return null;
      case 'reset-dir': fs.rmSync(st.path, { recursive: true, force: true }); fs.mkdirSync(st.path, { recursive: true }); return null;
      case 'write': fs.writeFileSync(st.path, st.bytes); return null;
      case 'link': return linkAll(st);
      case 'copy-numbered': return copyNumbered(st);
      default: return readFrom(st);
    }
  });
}
parentPort.on('message', (job) => {
  try { parentPort.postMessage({ id: job.id, ok: true, result: job.op === 'steps' ? steps(job) : transferAll(job) }); }
  catch (err) { parentPort.postMessage(Object.assign(failure(err), { id: job.id })); }
});
`;

/** A failed task or transfer, as the worker reports it. */
interface FailureReply {
  readonly ok: false;
  readonly code: string | undefined;
  readonly side: 'source' | 'target';
  readonly message: string;
}

type Reply = { readonly id: number } & ({ readonly ok: true; readonly result: unknown } | FailureReply);

/** Per file of a transfer task: its result or its failure. */
type TransferOutcome = ({ readonly ok: true } & TransferResult) | FailureReply;

interface Pending {
  /** Files in the task (the worker's load). */
  readonly weight: number;
  readonly resolve: (r: never) => void;
  readonly reject: (e: unknown) => void;
}

/** One worker thread and the tasks it runs, one at a time in order. */
class TransferWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  /** Files in the tasks sent and not answered yet. */
  load = 0;
  dead = false;

  constructor() {
    this.worker = new Worker(WORKER_SOURCE, { eval: true });
    this.worker.unref();
    this.worker.on('message', (reply: Reply) => {
      const p = this.pending.get(reply.id);
      if (p === undefined) return;
      this.pending.delete(reply.id);
      this.load -= p.weight;
      if (this.pending.size === 0) this.worker.unref();
      if (reply.ok) p.resolve(reply.result as never);
      else p.reject(new TransferFailure(reply.code, reply.side, reply.message));
    });
    const die = (err: unknown): void => {
      this.dead = true;
      const failure = new TransferFailure(
        undefined,
        'target',
        `the file-transfer worker stopped: ${(err as Error)?.message ?? String(err)}`,
      );
      for (const p of this.pending.values()) p.reject(failure);
      this.pending.clear();
      this.load = 0;
    };
    this.worker.on('error', die);
    this.worker.on('exit', (code) => die(new Error(`exit code ${code}`)));
  }

  run<T>(req: object, weight = 1): Promise<T> {
    const id = this.nextId++;
    // Keep the process alive while a task is under way; an idle worker does not.
    if (this.pending.size === 0) this.worker.ref();
    this.load += weight;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { weight, resolve, reject });
      this.worker.postMessage({ id, ...req });
    });
  }
}

/** Workers share the libuv pool's disks: two are enough to overlap one file's fsync with another's copy. */
const POOL_SIZE = Math.max(1, Math.min(2, availableParallelism()));
const pool: TransferWorker[] = [];

/** The least busy worker (started on first use; idle workers never keep the process alive). */
function leastBusyWorker(): TransferWorker {
  for (let i = pool.length - 1; i >= 0; i--) if (pool[i].dead) pool.splice(i, 1);
  let worker = pool.find((w) => w.load === 0);
  if (worker === undefined && pool.length < POOL_SIZE) {
    worker = new TransferWorker();
    pool.push(worker);
  }
  return worker ?? pool.reduce((a, b) => (b.load < a.load ? b : a));
}

interface QueuedTransfer {
  readonly request: TransferRequest;
  readonly resolve: (result: TransferResult) => void;
  readonly reject: (err: unknown) => void;
}

/** Transfers asked for since the last send (sendQueued). */
let queued: QueuedTransfer[] = [];

/**
 * Runs one transfer on a worker thread. Transfers asked for in the same turn of the event loop
 * (the uploads of a checkpoint start together, and the next ones start when a reply is handled)
 * go to the workers as one task each, whose targets are fsynced together; each still succeeds
 * or fails on its own, and a failed one leaves no target file.
 */
export function transferFile(req: TransferRequest): Promise<TransferResult> {
  return new Promise<TransferResult>((resolve, reject) => {
    // After the microtasks of this turn: the continuations of every reply handled in it ask too.
    if (queued.length === 0) process.nextTick(sendQueued);
    queued.push({ request: req, resolve, reject });
  });
}

/**
 * Files per transfer task at most: a task replies when all its files are done, so many files go as
 * several tasks queued on the workers, whose replies come back as they finish (an idle loop
 * starts the next uploads meanwhile; a busy one handles every reply that came in one turn).
 */
const TASK_FILES = 8;

/** Sends the queued transfers in tasks of up to TASK_FILES, each to the least busy worker. */
function sendQueued(): void {
  const all = queued;
  queued = [];
  // Tasks of even size: sizes of the files are not known here.
  const tasks = Math.max(Math.min(POOL_SIZE, all.length), Math.ceil(all.length / TASK_FILES));
  for (let t = 0; t < tasks; t++) {
    const part = all.filter((_, i) => i % tasks === t);
    leastBusyWorker()
      .run<TransferOutcome[]>({ op: 'transfer', files: part.map((q) => q.request) }, part.length)
      .then(
        (outcomes) => {
          for (const [i, q] of part.entries()) {
            const o = outcomes[i];
            if (!o.ok) q.reject(new TransferFailure(o.code, o.side, o.message));
            else if (o.createdDir === undefined) q.resolve({ size: o.size, crc32: o.crc32, linked: o.linked });
            else q.resolve({ size: o.size, crc32: o.crc32, linked: o.linked, createdDir: o.createdDir });
          }
        },
        (err: unknown) => {
          for (const q of part) q.reject(err);
        },
      );
  }
}

/** A file linked by a 'link' step: the name it was found under and its size. */
export interface LinkedFile {
  readonly name: string;
  readonly size: number;
}

/** What a 'read' step returns: the bytes from `from` to the size the file had when opened. */
export interface ReadStepResult {
  readonly size: number;
  readonly bytes: Uint8Array;
}

/** One step of fileSteps (paths absolute). */
export type FileStep =
  /** Removes the file or directory (with everything in it), if it exists. */
  | { readonly op: 'remove'; readonly path: string }
  /** Removes the directory with everything in it, then creates it empty. */
  | { readonly op: 'reset-dir'; readonly path: string }
  /** The file from byte `from` (default 0) to its size at open; null when it is missing and `missingOk`. */
  | { readonly op: 'read'; readonly path: string; readonly from?: number; readonly missingOk?: boolean }
  /** Creates or replaces the file with `bytes`. */
  | { readonly op: 'write'; readonly path: string; readonly bytes: Uint8Array }
  /**
   * Hard-links files from `sourceDir` into the existing `targetDir` under the same names. Per
   * file, the names it may have in order of preference (LevelDB tables: .ldb, then .sst); one
   * under none of them fails the step with ENOENT (side 'source'). Links made before stay.
   */
  | {
      readonly op: 'link';
      readonly sourceDir: string;
      readonly targetDir: string;
      readonly entries: readonly (readonly string[])[];
    }
  /** Copies the files of `sourceDir` named `<number><suffix>` whose number is at least `atLeast` or in `also`. */
  | {
      readonly op: 'copy-numbered';
      readonly sourceDir: string;
      readonly targetDir: string;
      readonly suffix: string;
      readonly atLeast: number;
      readonly also: readonly number[];
    };

/** What each kind of step returns. */
export interface FileStepResults {
  remove: null;
  'reset-dir': null;
  read: ReadStepResult | null;
  write: null;
  /** Per entry, in order. */
  link: LinkedFile[];
  /** The names copied, sorted. */
  'copy-numbered': string[];
}

/** The results of a list of steps, position by position. */
export type FileStepsResult<S extends readonly FileStep[]> = {
  -readonly [K in keyof S]: S[K] extends FileStep ? FileStepResults[S[K]['op']] : never;
};

/**
 * Runs file-system steps, in order, as one task on a worker thread: one event-loop turn for all
 * of them, where each awaited fs call took a turn of its own (under a busy processing loop, a
 * link and a stat per table of a LevelDB checkpoint took seconds). The first failing step fails
 * the call with a TransferFailure carrying its errno code; what earlier steps did stays.
 */
export function fileSteps<const S extends readonly FileStep[]>(list: S): Promise<FileStepsResult<S>> {
  return leastBusyWorker().run<FileStepsResult<S>>({ op: 'steps', steps: list });
}
