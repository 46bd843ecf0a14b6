import { StorageError, StreamStateError } from '../../errors.js';

/**
 * Turns whatever the SDK threw into a StorageError whose message names the bucket/key, the likely
 * cause and what to do. StreamStateErrors pass through unchanged.
 */
export interface S3ErrorContext {
  /** What we were doing, e.g. "reading", "writing", "listing". */
  readonly op: string;
  readonly bucket: string;
  /** Full object key (or list prefix) when the operation concerned one. */
  readonly key?: string;
  /** The endpoint as configured (for "cannot reach" messages). */
  readonly endpoint: string;
}

interface SdkErrorShape {
  readonly name?: string;
  readonly code?: string;
  readonly message?: string;
  readonly $metadata?: { readonly httpStatusCode?: number; readonly attempts?: number };
  readonly cause?: unknown;
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ECONNABORTED',
  'ERR_STREAM_PREMATURE_CLOSE',
]);
const TIMEOUT_NAMES = new Set(['TimeoutError', 'RequestTimeout', 'RequestTimeoutException']);
const ACCESS_NAMES = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'Forbidden',
  'ExpiredToken',
  'InvalidToken',
  'AllAccessDisabled',
]);
const THROTTLE_NAMES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'TooManyRequestsException',
  'ServiceUnavailable',
]);

function shape(err: unknown): SdkErrorShape {
  return err !== null && typeof err === 'object' ? (err as SdkErrorShape) : { message: String(err) };
}

/** The network error code of `err` or of one of its causes (the SDK sometimes wraps them). */
export function networkErrorCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    const s = shape(e);
    if (s.code !== undefined && NETWORK_CODES.has(s.code)) return s.code;
    if (s.name !== undefined && TIMEOUT_NAMES.has(s.name)) return s.name;
    if (s.message === 'aborted' || s.message === 'Premature close') return 'ECONNRESET';
    e = s.cause;
  }
  return undefined;
}

export function httpStatusOf(err: unknown): number | undefined {
  return shape(err).$metadata?.httpStatusCode;
}

/** NoSuchBucket, or a bodyless 404 we already attributed to the bucket. */
export function isNoSuchBucket(err: unknown): boolean {
  return shape(err).name === 'NoSuchBucket';
}

/** 404 for an object (GetObject's NoSuchKey, HeadObject's bodyless NotFound). */
export function isNotFound(err: unknown): boolean {
  const s = shape(err);
  return (
    s.name === 'NoSuchKey' ||
    s.name === 'NotFound' ||
    (s.$metadata?.httpStatusCode === 404 && s.name !== 'NoSuchBucket')
  );
}

export function isPreconditionFailed(err: unknown): boolean {
  const s = shape(err);
  return s.name === 'PreconditionFailed' || s.$metadata?.httpStatusCode === 412;
}

export function isNotImplemented(err: unknown): boolean {
  const s = shape(err);
  return s.name === 'NotImplemented' || s.$metadata?.httpStatusCode === 501;
}

function url(ctx: S3ErrorContext): string {
  return ctx.key !== undefined && ctx.key.length > 0 ? `s3://${ctx.bucket}/${ctx.key}` : `s3://${ctx.bucket}`;
}

export function toStorageError(err: unknown, ctx: S3ErrorContext): StreamStateError {
  if (err instanceof StreamStateError) return err;
  const s = shape(err);
  const name = s.name ?? 'Error';
  const status = s.$metadata?.httpStatusCode;
  const attempts = s.$metadata?.attempts;
  const tries = attempts !== undefined ? ` after ${attempts} attempt${attempts === 1 ? '' : 's'}` : '';
  const detail = `${name}${status !== undefined ? ` (HTTP ${status})` : ''}: ${s.message ?? ''}`.trim();
  const options = { cause: err };

  if (name === 'NoSuchBucket') {
    return new StorageError(
      'NOT_FOUND',
      `S3 bucket "${ctx.bucket}" does not exist at ${ctx.endpoint} (while ${ctx.op} ${url(ctx)}): create it or fix the bucket name.`,
      options,
    );
  }
  if (isNotFound(err)) {
    return new StorageError(
      'NOT_FOUND',
      `S3 object ${url(ctx)} not found (while ${ctx.op}): it was deleted or never written; if a checkpoint references it, that checkpoint's files were removed behind its back.`,
      options,
    );
  }
  if (status === 403 || ACCESS_NAMES.has(name)) {
    return new StorageError(
      'STORAGE_IO',
      `S3 access denied while ${ctx.op} ${url(ctx)} (${detail}): check credentials (the credentials option, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the AWS profile) and the bucket policy.`,
      options,
    );
  }
  if (name === 'CredentialsProviderError') {
    return new StorageError(
      'STORAGE_IO',
      `no S3 credentials found while ${ctx.op} ${url(ctx)}: pass the credentials option or set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE).`,
      options,
    );
  }
  if (/region is missing/i.test(s.message ?? '')) {
    return new StreamStateError(
      'INVALID_ARGUMENT',
      `no AWS region configured for ${url(ctx)}: pass the region option (CLI: --s3-region) or set AWS_REGION.`,
      options,
    );
  }
  const network = networkErrorCode(err);
  if (network !== undefined) {
    return new StorageError(
      'STORAGE_IO',
      `cannot reach ${ctx.endpoint} (${network}${tries}) while ${ctx.op} ${url(ctx)}: check the endpoint, that the service is up, and the network; raise requestTimeoutMs for slow links.`,
      options,
    );
  }
  if (THROTTLE_NAMES.has(name) || status === 503 || status === 429) {
    return new StorageError(
      'STORAGE_IO',
      `S3 kept throttling${tries} while ${ctx.op} ${url(ctx)} (${detail}): lower maxConcurrency, enable entropy injection, or retry later.`,
      options,
    );
  }
  if (status !== undefined && status >= 500) {
    return new StorageError(
      'STORAGE_IO',
      `S3 server error${tries} while ${ctx.op} ${url(ctx)} (${detail}): the service is failing; retry later.`,
      options,
    );
  }
  return new StorageError('STORAGE_IO', `S3 request failed while ${ctx.op} ${url(ctx)} (${detail}).`, options);
}
