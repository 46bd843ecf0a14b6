import { StreamStateError } from '../errors.js';

/**
 * The AWS SDK (S3 storage) and classic-level (the LevelDB backend) are optional peer dependencies:
 * the core never loads them, and a driver that needs one loads it on first use. A missing package
 * becomes DEPENDENCY_MISSING with the `npm install` line that fixes it, never a bare
 * ERR_MODULE_NOT_FOUND.
 */

/** What needs a package, and the packages to install for it. */
export interface OptionalDependency {
  /** E.g. "s3:// storage" or "the leveldb state backend". */
  readonly feature: string;
  /** The package names (with the version range this streamstate supports). */
  readonly packages: readonly string[];
}

export const AWS_SDK: OptionalDependency = {
  feature: 'S3 storage (s3:// paths, S3BlobStore)',
  packages: ['@aws-sdk/client-s3@^3.1169.0', '@aws-sdk/lib-storage@^3.1169.0'],
};

export const CLASSIC_LEVEL: OptionalDependency = {
  feature: 'the leveldb state backend',
  packages: ['classic-level@^3.0.0'],
};

function packageName(spec: string): string {
  const at = spec.lastIndexOf('@');
  return at > 0 ? spec.slice(0, at) : spec;
}

/** Whether `err` is the loader's "cannot find package" for one of `dep`'s packages. */
export function isMissingDependency(err: unknown, dep: OptionalDependency): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (e === null || typeof e !== 'object') return false;
  if (e.code !== 'ERR_MODULE_NOT_FOUND' && e.code !== 'MODULE_NOT_FOUND') return false;
  const message = typeof e.message === 'string' ? e.message : '';
  return dep.packages.some((p) => message.includes(`'${packageName(p)}'`) || message.includes(`'${packageName(p)}/`));
}

export function missingDependencyError(dep: OptionalDependency, cause: unknown): StreamStateError {
  return new StreamStateError(
    'DEPENDENCY_MISSING',
    `${dep.feature} needs ${dep.packages.map(packageName).join(' and ')}, which is not installed (an optional peer dependency of streamstate). ` +
      `Install it: npm install ${dep.packages.join(' ')}`,
    { cause },
  );
}

/** Runs `load` (a dynamic import); a missing package of `dep` becomes DEPENDENCY_MISSING. */
export async function loadOptional<T>(dep: OptionalDependency, load: () => Promise<T>): Promise<T> {
  try {
    return await load();
  } catch (err) {
    if (isMissingDependency(err, dep)) throw missingDependencyError(dep, err);
    throw err;
  }
}
