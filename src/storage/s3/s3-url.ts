import { StreamStateError } from '../../errors.js';

/** Where an S3 location points: a bucket and a key prefix inside it ("" = the bucket root). */
export interface S3Location {
  readonly bucket: string;
  readonly prefix: string;
}

// Lenient on purpose (S3-compatible servers accept more than AWS); rejects what can never work.
const BUCKET_NAME = /^[a-z0-9][a-z0-9.\-_]{1,61}[a-z0-9]$/;

/** Parses `s3://bucket/some/prefix` (also `s3a://`, `s3n://`). The prefix loses leading/trailing slashes. */
export function parseS3Url(url: string): S3Location {
  const match = typeof url === 'string' ? /^s3[an]?:\/\/([^/]*)(?:\/(.*))?$/.exec(url) : null;
  if (match === null) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `${JSON.stringify(url)} is not an S3 URL: write it as s3://<bucket>/<optional prefix>.`,
    );
  }
  return { bucket: checkBucketName(match[1]), prefix: normalizePrefix(match[2] ?? '') };
}

export function checkBucketName(bucket: string): string {
  if (typeof bucket !== 'string' || !BUCKET_NAME.test(bucket)) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `S3 bucket name ${JSON.stringify(bucket)} is invalid: use 3-63 lowercase letters, digits, "." or "-", starting and ending with a letter or digit.`,
    );
  }
  return bucket;
}

/** "/a//b/" → "a/b". Rejects "." / ".." segments, which S3 would store literally but paths would not mean. */
export function normalizePrefix(prefix: string): string {
  const segments = prefix.split('/').filter((s) => s.length > 0);
  if (segments.some((s) => s === '.' || s === '..')) {
    throw new StreamStateError(
      'INVALID_ARGUMENT',
      `S3 key prefix ${JSON.stringify(prefix)} has a "." or ".." segment: give a plain path like "checkpoints/job-a".`,
    );
  }
  return segments.join('/');
}

export function formatS3Url(bucket: string, prefix: string): string {
  return prefix.length > 0 ? `s3://${bucket}/${prefix}` : `s3://${bucket}`;
}
