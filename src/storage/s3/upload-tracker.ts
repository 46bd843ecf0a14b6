import { AbortMultipartUploadCommand, type S3Client } from '@aws-sdk/client-s3';

/** What the tracker needs from the store: its client, bucket, and the counted, limited send. */
export interface TrackedStore {
  readonly client: S3Client;
  readonly bucket: string;
  sendRaw<T>(commandName: string, run: () => Promise<T>): Promise<T>;
}

/**
 * Wraps the store's client for one lib-storage Upload: every part request passes the store's
 * limiter; the first failure is kept (lib-storage would otherwise hide it behind the abort's own
 * error), stops the upload at once, and the upload id is known so we can abort it ourselves.
 */
export class UploadTracker {
  readonly client: S3Client;
  firstError: unknown;
  onFirstFailure: () => void = () => undefined;
  private uploadId: string | undefined;
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly store: TrackedStore,
    private readonly key: string,
  ) {
    const base = store.client;
    // Same config (lib-storage reads client.config), different send.
    const wrapped = Object.create(base) as S3Client;
    const send = (command: { constructor: { name: string } }): Promise<unknown> => {
      const p = store
        .sendRaw(
          command.constructor.name.replace(/Command$/, ''),
          () => base.send(command as never) as Promise<unknown>,
        )
        .then((out) => {
          const id = (out as { UploadId?: string } | undefined)?.UploadId;
          if (id !== undefined) this.uploadId = id;
          return out;
        })
        .catch((err: unknown) => {
          if (this.firstError === undefined) {
            this.firstError = err;
            this.onFirstFailure();
          }
          throw err;
        });
      this.inFlight.add(p);
      void p.then(
        () => this.inFlight.delete(p),
        () => this.inFlight.delete(p),
      );
      return p;
    };
    Object.defineProperty(wrapped, 'send', { value: send });
    this.client = wrapped;
  }

  /** Waits for part uploads still running, so none lands after the abort. */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /** Best effort: a failed abort leaves parts that a bucket lifecycle rule (AbortIncompleteMultipartUpload) removes. */
  async abortMultipart(): Promise<void> {
    if (this.uploadId === undefined) return;
    const UploadId = this.uploadId;
    this.uploadId = undefined;
    await this.store
      .sendRaw('AbortMultipartUpload', () =>
        this.store.client.send(new AbortMultipartUploadCommand({ Bucket: this.store.bucket, Key: this.key, UploadId })),
      )
      .catch(() => undefined);
  }
}
