import { readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SeededRandom } from '../../../src/testing/rng.js';
import type { CorruptionFixture, SnapshotFile } from './fixtures.js';

/**
 * The ways a case damages one file of the restored snapshot. Each draws every choice from the
 * case's seeded RNG, so a seed replays the exact same damage.
 */
export const MUTATIONS = [
  'bit-flip',
  'truncate',
  'random-bytes',
  'random-file',
  'zero-range',
  'append',
  'version',
  'swap',
  'foreign',
  'delete',
] as const;
export type MutationKind = (typeof MUTATIONS)[number];

const WEIGHTS: Record<MutationKind, number> = {
  'bit-flip': 4,
  truncate: 2,
  'random-bytes': 2,
  'random-file': 1,
  'zero-range': 1,
  append: 1,
  version: 3,
  swap: 2,
  foreign: 3,
  delete: 1,
};

export interface AppliedMutation {
  readonly kind: MutationKind;
  /** What was done, to which file: printed with a failing case. */
  readonly description: string;
  /** The snapshot's _metadata no longer exists: by definition the checkpoint never completed. */
  readonly metadataGone: boolean;
}

function pick<T>(rng: SeededRandom, items: readonly T[]): T {
  return items[rng.int(items.length)];
}

function randomBytes(rng: SeededRandom, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = rng.int(256);
  return b;
}

/** A weighted random kind; `only` overrides the pick but the draw is still made, so a seed replays the same case either way. */
export function pickMutation(rng: SeededRandom, only?: MutationKind): MutationKind {
  const total = MUTATIONS.reduce((s, k) => s + WEIGHTS[k], 0);
  let x = rng.int(total);
  if (only !== undefined) return only;
  for (const k of MUTATIONS) {
    x -= WEIGHTS[k];
    if (x < 0) return k;
  }
  return 'bit-flip';
}

/** Another value for a version/flags field: the next version, zero, all ones, or random. */
function otherU16(rng: SeededRandom, current: number): number {
  const choices = [current + 1, 0, 0xffff, rng.int(0x10000), current + 2];
  let v = pick(rng, choices) & 0xffff;
  if (v === current) v = (current + 1) & 0xffff;
  return v;
}

/** Damages the format's version (or flags, or format identifier) field, recognised by the file's magic. */
function versionMutation(rng: SeededRandom, bytes: Buffer, file: SnapshotFile): { bytes: Buffer; what: string } {
  const out = Buffer.from(bytes);
  const magic = bytes.subarray(0, 4).toString('latin1');
  if (['SSMD', 'SSKG', 'SSCL', 'SSLM'].includes(magic) && bytes.length >= 8) {
    const flags = magic !== 'SSLM' && rng.next() < 0.3;
    const at = flags ? 6 : 4;
    const before = bytes.readUInt16BE(at);
    const after = flags ? before | (1 << (1 + rng.int(15))) : otherU16(rng, before);
    out.writeUInt16BE(after, at);
    return { bytes: out, what: `${magic} ${flags ? 'flags' : 'version'} ${before} -> ${after}` };
  }
  if (magic === 'SSOP' && bytes.length >= 5) {
    const picked = pick(rng, [0, 2, 255, rng.int(256)]);
    const v = picked === bytes[4] ? (picked + 1) & 0xff : picked;
    out[4] = v;
    return { bytes: out, what: `SSOP version ${bytes[4]} -> ${v}` };
  }
  if (file.category === 'leveldb-current') {
    const text = bytes.toString('latin1');
    const m = /^MANIFEST-(\d+)/.exec(text);
    const next = m
      ? `MANIFEST-${String(Number(m[1]) + 1 + rng.int(3)).padStart(m[1].length, '0')}\n`
      : 'MANIFEST-000001\n';
    return { bytes: Buffer.from(next, 'latin1'), what: `CURRENT ${JSON.stringify(text)} -> ${JSON.stringify(next)}` };
  }
  if (file.category === 'leveldb-table' && bytes.length >= 8) {
    // The table footer ends in an 8-byte magic number (LevelDB's table format identifier).
    const at = bytes.length - 1 - rng.int(8);
    out[at] ^= 1 + rng.int(255);
    return { bytes: out, what: `table footer magic byte ${at}` };
  }
  if ((file.category === 'leveldb-manifest' || file.category === 'leveldb-log') && bytes.length >= 7) {
    // Log record header: crc32c(4) length(2) type(1); a record type outside 1..4.
    const v = pick(rng, [0, 5, 9, 255]);
    out[6] = v;
    return { bytes: out, what: `log record type ${bytes[6]} -> ${v}` };
  }
  const at = rng.int(Math.max(1, Math.min(8, bytes.length)));
  if (out.length > 0) out[at] ^= 1 << rng.int(8);
  return { bytes: out, what: `header bit at byte ${at}` };
}

function pickPartner(rng: SeededRandom, pool: readonly SnapshotFile[], target: SnapshotFile): SnapshotFile | null {
  const others = pool.filter((f) => f.name !== target.name);
  if (others.length === 0) return null;
  const same = others.filter((f) => f.category === target.category);
  // Mostly a file of the same kind (same magic and version: only checksums can tell them apart).
  return same.length > 0 && rng.next() < 0.75 ? pick(rng, same) : pick(rng, others);
}

/** Damages one target file of the fixture copy under `storeRoot`. */
export async function applyMutation(
  rng: SeededRandom,
  fixture: CorruptionFixture,
  storeRoot: string,
  kind: MutationKind,
): Promise<AppliedMutation> {
  const target = pick(rng, fixture.targets);
  const path = join(storeRoot, target.name);
  const bytes = await readFile(path);
  const size = bytes.length;
  const done = (what: string): AppliedMutation => ({
    kind,
    description: `${kind} ${target.name} (${target.category}, ${size} bytes): ${what}`,
    metadataGone: kind === 'delete' && target.category === 'metadata',
  });
  switch (kind) {
    case 'bit-flip': {
      const out = Buffer.from(bytes);
      const flips: string[] = [];
      const n = 1 + rng.int(4);
      for (let i = 0; i < n && size > 0; i++) {
        const at = rng.int(size);
        const bit = rng.int(8);
        out[at] ^= 1 << bit;
        flips.push(`${at}.${bit}`);
      }
      await writeFile(path, out);
      return done(`flipped bits ${flips.join(', ')}`);
    }
    case 'truncate': {
      // Half the time cut near the end (a lost tail), else anywhere.
      const len =
        size === 0 ? 0 : rng.next() < 0.5 ? Math.max(0, size - 1 - rng.int(Math.min(size, 16))) : rng.int(size);
      await writeFile(path, bytes.subarray(0, len));
      return done(`cut to ${len} bytes`);
    }
    case 'random-bytes': {
      const at = rng.int(Math.max(1, size));
      const n = Math.min(size - at, 1 + rng.int(64));
      const out = Buffer.from(bytes);
      randomBytes(rng, Math.max(0, n)).copy(out, at);
      await writeFile(path, out);
      return done(`${n} random bytes at ${at}`);
    }
    case 'random-file': {
      const len = rng.next() < 0.5 ? size : rng.int(2 * size + 16);
      await writeFile(path, randomBytes(rng, len));
      return done(`replaced by ${len} random bytes`);
    }
    case 'zero-range': {
      const at = rng.int(Math.max(1, size));
      const n = Math.min(size - at, 1 + rng.int(512));
      const out = Buffer.from(bytes);
      out.fill(0, at, at + Math.max(0, n));
      await writeFile(path, out);
      return done(`${n} zero bytes at ${at}`);
    }
    case 'append': {
      const n = 1 + rng.int(32);
      await writeFile(path, Buffer.concat([bytes, randomBytes(rng, n)]));
      return done(`appended ${n} random bytes`);
    }
    case 'version': {
      const { bytes: out, what } = versionMutation(rng, bytes, target);
      await writeFile(path, out);
      return done(what);
    }
    case 'swap': {
      const partner = pickPartner(rng, fixture.sameSnapshot, target);
      if (partner === null) {
        await writeFile(path, bytes.subarray(0, Math.max(0, size - 1)));
        return done('no partner to swap with; cut by one byte instead');
      }
      const other = join(storeRoot, partner.name);
      const tmp = `${path}.swap`;
      await rename(path, tmp);
      await rename(other, path);
      await rename(tmp, other);
      return done(`exchanged with ${partner.name} (${partner.category})`);
    }
    case 'foreign': {
      const source = pickPartner(rng, fixture.foreign, target);
      if (source === null) throw new Error(`fixture ${fixture.format} has no foreign files`);
      await writeFile(path, await readFile(join(storeRoot, source.name)));
      return done(`replaced by ${source.name} (${source.category})`);
    }
    case 'delete': {
      await unlink(path);
      return done('deleted');
    }
  }
}
