import { closeSync, existsSync, fsyncSync, openSync, readFileSync, ftruncateSync, writeSync } from 'node:fs';
import { StreamStateError } from '../../src/errors.js';
import { CommittedOutput } from '../../src/testing/committed-output.js';

/** One line of the transaction log. */
interface LoggedTransaction<T> {
  /** transaction id */
  readonly t: string;
  /** checkpoint id */
  readonly c: number;
  /** attempt within the process that committed it */
  readonly a: number;
  /** the process (child number) that committed it */
  readonly p: number;
  readonly r: readonly T[];
}

export interface LoadedLog<T> {
  readonly transactions: readonly {
    readonly transactionId: string;
    readonly checkpointId: number;
    readonly process: number;
    readonly records: readonly T[];
  }[];
  /** Lines whose transaction id appeared before: the idempotence of commit was broken. */
  readonly duplicateIds: readonly string[];
  /** Bytes of a torn last line (cut by a kill mid-append) that were dropped. */
  readonly tornBytes: number;
}

/**
 * The crash suite's "external system": committed transactions as an append-only file of JSON lines,
 * each appended and fsynced before commit() returns, idempotent by transaction id across processes
 * (the ids already in the file are loaded on open). A kill mid-append leaves a torn last line,
 * which was never acknowledged and is dropped on the next open.
 */
export class DurableCommittedOutput<T> extends CommittedOutput<T> {
  private readonly fd: number;
  private closed = false;

  private constructor(
    readonly file: string,
    private readonly processNo: number,
    private readonly onCommitted: () => void,
  ) {
    super();
    const log = readTransactionLog<T>(file, true);
    for (const tx of log.transactions) super.commit(tx.transactionId, tx.checkpointId, tx.records, 0);
    this.fd = openSync(file, 'a');
  }

  /** Opens (creating if needed) the log at `file`; `onCommitted` runs after each durable commit (kill point). */
  static open<T>(
    file: string,
    processNo: number,
    onCommitted: () => void = () => undefined,
  ): DurableCommittedOutput<T> {
    return new DurableCommittedOutput<T>(file, processNo, onCommitted);
  }

  override commit(transactionId: string, checkpointId: number, records: readonly T[], attempt: number): boolean {
    if (this.closed)
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `the transaction log ${this.file} is closed; open it again to commit.`,
      );
    if (this.isCommitted(transactionId)) return false;
    const line: LoggedTransaction<T> = { t: transactionId, c: checkpointId, a: attempt, p: this.processNo, r: records };
    writeSync(this.fd, `${JSON.stringify(line)}\n`);
    fsyncSync(this.fd);
    const fresh = super.commit(transactionId, checkpointId, records, attempt);
    this.onCommitted();
    return fresh;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

/**
 * Reads a transaction log. `repair`: cut a torn last line off the file (what the writer does on
 * open). Duplicate ids are reported, not hidden: the checker counts them as failures.
 */
export function readTransactionLog<T>(file: string, repair = false): LoadedLog<T> {
  if (!existsSync(file)) return { transactions: [], duplicateIds: [], tornBytes: 0 };
  const text = readFileSync(file);
  const end = text.lastIndexOf(0x0a) + 1;
  const tornBytes = text.length - end;
  if (tornBytes > 0 && repair) {
    const fd = openSync(file, 'r+');
    try {
      ftruncateSync(fd, end);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
  const seen = new Set<string>();
  const duplicateIds: string[] = [];
  const transactions: LoadedLog<T>['transactions'][number][] = [];
  for (const line of text.subarray(0, end).toString('utf8').split('\n')) {
    if (line === '') continue;
    const tx = JSON.parse(line) as LoggedTransaction<T>;
    if (seen.has(tx.t)) {
      duplicateIds.push(tx.t);
      continue;
    }
    seen.add(tx.t);
    transactions.push({ transactionId: tx.t, checkpointId: tx.c, process: tx.p, records: tx.r });
  }
  return { transactions, duplicateIds, tornBytes };
}
