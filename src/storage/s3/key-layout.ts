import { randomInt } from 'node:crypto';
import { StreamStateError } from '../../errors.js';

/**
 * How blob names map to S3 keys, with optional entropy injection (as Flink's EntropyInjector).
 *
 * S3 scales request rates per key prefix, so checkpoint data files spread over random prefixes
 * avoid hot partitions. Configure a marker in the store prefix, e.g. `s3://bucket/_entropy_/chk`
 * with `entropy: { marker: '_entropy_' }`:
 *
 *   data file (name from dataFileName):  "job/chk-3/~k2x9~a1b2"  →  key "k2x9/chk/job/chk-3/~k2x9~a1b2"
 *   any other name (e.g. _metadata):     "job/chk-3/_metadata"   →  key "chk/job/chk-3/_metadata"
 *
 * The random characters are recorded in the data file's own name (the `~xxxx~` tag), so the name
 * alone finds the object again: handles keep plain relative paths, and the logical layout (and
 * listing by name prefix) is the same with and without entropy. The price: listing scans
 * everything under the part of the prefix before the marker, since data files are spread over
 * every random prefix. Listing is for gc and inspection, not the checkpoint hot path.
 */
export interface EntropyOptions {
  /** Text in the store prefix to replace, e.g. "_entropy_". */
  readonly marker: string;
  /** Random [a-z0-9] characters per data file. Default 4. */
  readonly length?: number;
}

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';

export interface ListPlan {
  /** What to pass as ListObjectsV2 Prefix. */
  readonly scanPrefix: string;
  /** The blob name of a listed key, or undefined when the key is not one of this store's blobs under the prefix. */
  nameOf(key: string): string | undefined;
}

export class KeyLayout {
  /** Prefix for names without entropy, "" or ending with "/". */
  private readonly plainBase: string;
  private readonly entropy?: {
    readonly before: string;
    readonly after: string;
    readonly length: number;
    readonly tag: RegExp;
    readonly keyPattern: RegExp;
  };

  /** `prefix` is normalized (no leading/trailing "/"). */
  constructor(prefix: string, entropy?: EntropyOptions) {
    if (entropy === undefined) {
      this.plainBase = prefix.length > 0 ? `${prefix}/` : '';
      return;
    }
    const length = entropy.length ?? 4;
    const { marker } = entropy;
    if (typeof marker !== 'string' || marker.length === 0 || marker.includes('/') || marker.includes('~')) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `entropy.marker must be a non-empty string without "/" or "~"; got ${JSON.stringify(marker)}. A typical marker is "_entropy_".`,
      );
    }
    if (!Number.isSafeInteger(length) || length < 1 || length > 32) {
      throw new StreamStateError('INVALID_ARGUMENT', `entropy.length must be an integer from 1 to 32; got ${length}.`);
    }
    const at = prefix.indexOf(marker);
    if (at < 0 || prefix.indexOf(marker, at + 1) >= 0) {
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `entropy marker ${JSON.stringify(marker)} must occur exactly once in the S3 prefix ${JSON.stringify(prefix)}: ` +
          `put it where the random characters should go, e.g. s3://bucket/${marker}/checkpoints.`,
      );
    }
    const before = prefix.slice(0, at);
    const after = prefix.slice(at + marker.length);
    const plain = (before + after)
      .split('/')
      .filter((s) => s.length > 0)
      .join('/');
    this.plainBase = plain.length > 0 ? `${plain}/` : '';
    this.entropy = {
      before,
      after,
      length,
      tag: new RegExp(`^~([a-z0-9]{${length}})~.`),
      keyPattern: new RegExp(`^${escapeRegExp(before)}([a-z0-9]{${length}})${escapeRegExp(after)}/(.+)$`),
    };
  }

  get entropyEnabled(): boolean {
    return this.entropy !== undefined;
  }

  /** The name to store a new data file under: tagged with fresh random characters when entropy is on. */
  dataFileName(name: string): string {
    if (this.entropy === undefined) return name;
    const slash = name.lastIndexOf('/');
    return `${name.slice(0, slash + 1)}~${this.random(this.entropy.length)}~${name.slice(slash + 1)}`;
  }

  keyOf(name: string): string {
    const chars = this.entropyOf(name);
    if (chars === undefined || this.entropy === undefined) return this.plainBase + name;
    return `${this.entropy.before}${chars}${this.entropy.after}/${name}`;
  }

  listPlan(prefix: string): ListPlan {
    const plainBase = this.plainBase;
    const entropy = this.entropy;
    if (entropy === undefined) {
      return { scanPrefix: plainBase + prefix, nameOf: (key) => key.slice(plainBase.length) || undefined };
    }
    return {
      scanPrefix: entropy.before,
      nameOf: (key) => {
        if (key.startsWith(plainBase)) {
          const name = key.slice(plainBase.length);
          if (name.startsWith(prefix) && name.length > 0 && this.entropyOf(name) === undefined) return name;
        }
        const m = entropy.keyPattern.exec(key);
        if (m === null) return undefined;
        const name = m[2];
        return name.startsWith(prefix) && this.entropyOf(name) === m[1] ? name : undefined;
      },
    };
  }

  /** The random characters a data file name carries, if any. */
  private entropyOf(name: string): string | undefined {
    if (this.entropy === undefined) return undefined;
    const m = this.entropy.tag.exec(name.slice(name.lastIndexOf('/') + 1));
    return m === null ? undefined : m[1];
  }

  private random(length: number): string {
    let out = '';
    for (let i = 0; i < length; i++) out += ALPHABET[randomInt(ALPHABET.length)];
    return out;
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
