import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/**
 * Copies (or hard-links) a local file into place and computes its crc32, on a worker thread: the
 * bytes never pass through the main thread, so a checkpoint's upload to local storage advances at
 * disk speed however rarely the record-processing loop yields (issue 15, item 4). Streams through
 * the main thread moved one 1 MiB chunk per few event-loop turns.
 *
 * The worker's code is plain CommonJS given as a string (eval), so the same module works from the
 * TypeScript sources (tests) and from dist without a second file to locate.
 */

export interface TransferRequest {
  /** Source file (absolute). */
  readonly source: string;
  /** Target file (absolute; its directory exists). Replaced when it exists. */
  readonly target: string;
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
function transfer(job) {
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
        if (job.sync) fs.fsyncSync(fd);
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
        try { if (job.sync) fs.fsyncSync(dst); } catch (err) { throw fail('target', err); }
        return { size, crc32: crc, linked };
      } finally { fs.closeSync(dst); }
    } finally { fs.closeSync(src); }
  } catch (err) {
    // Nothing half-written stays behind: the caller sees the error and no target file.
    if (created) { try { fs.unlinkSync(job.target); } catch {} }
    throw err;
  }
}
// Hard-links a list of files in one task: each entry names alternatives (the first that exists is
// linked); the reply gives each linked name with its size. One that exists under none is ENOENT.
function linkBatch(job) {
  const out = [];
  for (const names of job.entries) {
    let linked = null;
    for (const name of names) {
      try { fs.linkSync(path.join(job.sourceDir, name), path.join(job.targetDir, name)); linked = name; break; }
      catch (err) { if (err.code !== 'ENOENT') throw fail('target', err); }
    }
    if (linked === null) throw fail('source', Object.assign(new Error('none of ' + names.join(', ') + ' exists in ' + job.sourceDir), { code: 'ENOENT' }));
    out.push({ name: linked, size: fs.statSync(path.join(job.targetDir, linked)).size });
  }
  return { files: out };
}
// A few small file-system steps in one task, in order: 'reset-dir' (remove, then create empty),
// 'read' (a file from byte 'from' to its size at open: { size, bytes }).
function steps(job) {
  return job.steps.map((st) => {
    if (st.op === 'reset-dir') { fs.rmSync(st.path, { recursive: true, force: true }); fs.mkdirSync(st.path, { recursive: true }); return null; }
    const fd = fs.openSync(st.path, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const from = Math.min(st.from || 0, size);
      const bytes = Buffer.allocUnsafe(size - from);
      let got = 0;
      while (got < bytes.length) { const n = fs.readSync(fd, bytes, got, bytes.length - got, from + got); if (n === 0) break; got += n; }
      return { size: from + got, bytes: bytes.subarray(0, got) };
    } finally { fs.closeSync(fd); }
  });
}
parentPort.on('message', (job) => {
  try { parentPort.postMessage({ id: job.id, ok: true, result: job.op === 'link-batch' ? linkBatch(job) : job.op === 'steps' ? steps(job) : transfer(job) }); }
  catch (err) { parentPort.postMessage({ id: job.id, ok: false, code: err && err.code, side: (err && err.side) || 'target', message: String(err && err.message || err) }); }
});
`;

type Reply =
  | { readonly id: number; readonly ok: true; readonly result: unknown }
  | {
      readonly id: number;
      readonly ok: false;
      readonly code: string | undefined;
      readonly side: 'source' | 'target';
      readonly message: string;
    };

interface Pending {
  readonly resolve: (r: never) => void;
  readonly reject: (e: unknown) => void;
}

/** One worker thread and the transfers it runs, one at a time in order. */
class TransferWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  dead = false;

  constructor() {
    this.worker = new Worker(WORKER_SOURCE, { eval: true });
    this.worker.unref();
    this.worker.on('message', (reply: Reply) => {
      const p = this.pending.get(reply.id);
      if (p === undefined) return;
      this.pending.delete(reply.id);
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
    };
    this.worker.on('error', die);
    this.worker.on('exit', (code) => die(new Error(`exit code ${code}`)));
  }

  get load(): number {
    return this.pending.size;
  }

  run<T>(req: object): Promise<T> {
    const id = this.nextId++;
    // Keep the process alive while a transfer is under way; an idle worker does not.
    if (this.pending.size === 0) this.worker.ref();
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
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

/** Runs one transfer on the least busy worker. */
export function transferFile(req: TransferRequest): Promise<TransferResult> {
  return leastBusyWorker().run<TransferResult>(req);
}

export interface LinkBatchRequest {
  /** Directory of the files to link (absolute). */
  readonly sourceDir: string;
  /** Existing directory the links go into, under the same names (absolute). */
  readonly targetDir: string;
  /** Per file, the names it may have, in order of preference (LevelDB tables: .ldb, then .sst). */
  readonly entries: readonly (readonly string[])[];
}

export interface LinkBatchResult {
  /** Per entry, the name linked and its size. */
  readonly files: { name: string; size: number }[];
}

/**
 * Hard-links many files as one task on a worker thread, with their sizes: one event-loop turn for
 * the whole list however many files it holds, where a link and a stat per file each waited for a
 * turn (under a busy processing loop, seconds for a few hundred files). Fails with a
 * TransferFailure: ENOENT (side 'source') when a file exists under none of its names; links made
 * before the failure stay (the caller removes its target directory).
 */
export function linkFiles(req: LinkBatchRequest): Promise<LinkBatchResult> {
  return leastBusyWorker().run<LinkBatchResult>({ op: 'link-batch', ...req });
}

/** One step of fileSteps. */
export type FileStep =
  | { readonly op: 'reset-dir'; readonly path: string }
  | { readonly op: 'read'; readonly path: string; readonly from?: number };

/** What a 'read' step returns: the bytes from `from` to the size the file had when opened. */
export interface ReadStepResult {
  readonly size: number;
  readonly bytes: Uint8Array;
}

/**
 * Runs a few small file-system steps, in order, as one task on a worker thread: one event-loop
 * turn for all of them, where each awaited fs call took a turn of its own. The first failing step
 * fails the call (a TransferFailure with its errno code); a 'reset-dir' step returns null.
 */
export function fileSteps(list: readonly FileStep[]): Promise<(ReadStepResult | null)[]> {
  return leastBusyWorker().run<(ReadStepResult | null)[]>({ op: 'steps', steps: list });
}
