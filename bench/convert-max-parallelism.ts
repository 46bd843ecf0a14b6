/**
 * `convert --max-parallelism 4096` (every key re-hashed into its new key group: in memory up to
 * rehashMemoryBytes, 256 MiB, through spill files beyond) against a plain canonical convert of the
 * same savepoint (same parallelism and max parallelism: each key group's sections are re-encoded in
 * canonical order, not hashed), alternating rounds in the same run. Goal: within 1.5x. A third
 * convert, `--max-parallelism 32` (a divisor of 128: whole key groups merged, no hashing, no
 * spill), is timed in the same rounds for comparison.
 *   node dist/bench/convert-max-parallelism.js [--quick] [sizeMB] [rounds]   (default 200 MB, 3 rounds; quick 16 MB, 2)
 * The source is a canonical savepoint of `sizeMB` of value state (200-byte values), parallelism 2,
 * maxParallelism 128, written directly with the canonical writer (no backend holds it in memory).
 * Figures: medians of the rounds and their ratios to plain, peak RSS, to bench/results/latest.json
 * under `convertMaxParallelism`. Full run: `npm run build && node --expose-gc dist/bench/convert-max-parallelism.js 1024 3`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KeyedStateMetaInfo, KeyGroupsStateHandle } from '../src/backend/handles.js';
import { backendByName, keySerializerOf } from '../src/cli/backends.js';
import { localCheckpointStorage } from '../src/checkpoint/checkpoint-storage.js';
import { CANONICAL_LAYOUT, SectionWriter } from '../src/format/key-groups-stream.js';
import { keyGroupForBytes, keyGroupRangeForSubtask } from '../src/keygroups/key-groups.js';
import { bytesSerializer, stringSerializer } from '../src/serializers/builtins.js';
import { CanonicalKeyGroupsWriter } from '../src/format/canonical-layout.js';
import { convertSnapshot, type ConvertOptions } from '../src/savepoint/convert.js';
import { locateSnapshot } from '../src/savepoint/locate.js';
import { median, parseBenchArgs, printTable, recordResults } from './lib/bench.js';

const { quick, args } = parseBenchArgs();
const sizeMb = args.length > 0 ? Number(args[0]) : quick ? 16 : 200;
const rounds = args.length > 1 ? Number(args[1]) : quick ? 2 : 3;
const VALUE_BYTES = 200;
const MAXP = 128;
const PARALLELISM = 2;
const NEW_MAXP = 4096;
/** A divisor of MAXP: the merge route. */
const DIVISOR_MAXP = 32;
const JOB = 'bench';
const entries = Math.floor((sizeMb * 1024 * 1024) / (VALUE_BYTES + 14));
const root = mkdtempSync(join(tmpdir(), 'ss-bench-maxp-'));
const storage = localCheckpointStorage(root, { inlineThreshold: 0 });

const STATE: KeyedStateMetaInfo = {
  name: 'v',
  kind: 'value',
  stateId: 0,
  namespaceSerializer: { id: stringSerializer.id, version: stringSerializer.version },
  valueSerializer: { id: bytesSerializer.id, version: bytesSerializer.version },
  ttl: false,
};

function keyBytes(i: number): Buffer {
  return Buffer.from(`key-${i}`, 'utf8');
}

function valueFor(i: number, out: Buffer): Buffer {
  for (let j = 0; j < VALUE_BYTES; j += 4) out.writeUInt32BE((Math.imul(i + j, 2654435761) ^ j) >>> 0, j);
  return out;
}

/** The source savepoint, written key group by key group with the canonical writer. */
async function writeSource(): Promise<string> {
  // Key indices per key group (counting sort), so each key group is written once, in order.
  const kgOf = new Uint16Array(entries);
  const counts = new Int32Array(MAXP + 1);
  for (let i = 0; i < entries; i++) {
    kgOf[i] = keyGroupForBytes(keyBytes(i), MAXP);
    counts[kgOf[i] + 1]++;
  }
  for (let k = 0; k < MAXP; k++) counts[k + 1] += counts[k];
  const order = new Int32Array(entries);
  const fill = counts.slice();
  for (let i = 0; i < entries; i++) order[fill[kgOf[i]]++] = i;
  const { pointer, streams } = storage.createSavepointLocation(JOB);
  const handles: (KeyGroupsStateHandle | null)[] = [];
  const value = Buffer.alloc(VALUE_BYTES);
  const empty = Buffer.alloc(0);
  for (let s = 0; s < PARALLELISM; s++) {
    const range = keyGroupRangeForSubtask(MAXP, PARALLELISM, s).toJSON();
    const writer = new CanonicalKeyGroupsWriter(streams.createOutputStream('exclusive'), {
      layout: CANONICAL_LAYOUT,
      keySerializer: { id: stringSerializer.id, version: stringSerializer.version },
      maxParallelism: MAXP,
      keyGroupRange: range,
      states: [STATE],
    });
    const section = new SectionWriter();
    for (let kg = range.start; kg <= range.end; kg++) {
      writer.beginKeyGroup(kg);
      for (let j = counts[kg]; j < counts[kg + 1]; j++)
        section.valueEntry(keyBytes(order[j]), empty, valueFor(order[j], value));
      writer.addSection(0, section);
      await writer.endKeyGroup();
    }
    handles.push(await writer.finish());
  }
  await storage.writeMetadata(pointer, {
    checkpointId: 1,
    jobId: JOB,
    kind: 'savepoint',
    format: 'canonical',
    backend: 'memory',
    timestamp: Date.now(),
    operators: [
      {
        operatorId: 'op',
        parallelism: PARALLELISM,
        maxParallelism: MAXP,
        subtasks: handles.map((h, i) => ({ subtaskIndex: i, keyed: h === null ? [] : [h], operator: [] })),
      },
    ],
  });
  return join(root, pointer);
}

let peakRss = 0;
const rssSampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 50);

async function timedConvert(
  src: string,
  name: string,
  extra: Partial<ConvertOptions>,
): Promise<{ ms: number; bytes: number; peakRss: number }> {
  const dst = join(root, name);
  const located = await locateSnapshot(src);
  peakRss = process.memoryUsage().rss;
  const t0 = performance.now();
  try {
    const r = await convertSnapshot(located, dst, {
      target: 'memory',
      format: 'canonical',
      backendFor: backendByName,
      keySerializerOf,
      ...extra,
    });
    return { ms: performance.now() - t0, bytes: r.keyedBytes, peakRss };
  } finally {
    await located.close();
    rmSync(dst, { recursive: true, force: true });
  }
}

const mb = (bytes: number): number => Math.round(bytes / 1024 / 1024);

async function main(): Promise<void> {
  console.log(
    `source: ${entries} entries of ${VALUE_BYTES} B values (~${sizeMb} MB), parallelism ${PARALLELISM}, maxParallelism ${MAXP}; ${rounds} alternating rounds`,
  );
  const t0 = performance.now();
  const src = await writeSource();
  console.log(`source written in ${Math.round(performance.now() - t0)} ms`);
  const kinds = ['plain', 'rehash', 'divisor'] as const;
  type Kind = (typeof kinds)[number];
  const extra: Record<Kind, Partial<ConvertOptions>> = {
    plain: {},
    rehash: { maxParallelism: NEW_MAXP },
    divisor: { maxParallelism: DIVISOR_MAXP },
  };
  const ms: Record<Kind, number[]> = { plain: [], rehash: [], divisor: [] };
  const rss: Record<Kind, number> = { plain: 0, rehash: 0, divisor: 0 };
  let bytes = 0;
  globalThis.gc?.();
  for (let r = 0; r < rounds; r++) {
    // Rotate which goes first, so drift on the shared machine hits all alike.
    const order = kinds.map((_, i) => kinds[(i + r) % kinds.length]);
    for (const which of order) {
      const res = await timedConvert(src, `${which}-${r}`, extra[which]);
      globalThis.gc?.();
      bytes = res.bytes;
      ms[which].push(res.ms);
      rss[which] = Math.max(rss[which], res.peakRss);
      console.log(`  round ${r + 1} ${which.padEnd(7)} ${Math.round(res.ms)} ms`);
    }
  }
  const ratio = (k: Kind): number => Math.round((median(ms[k]) / median(ms.plain)) * 100) / 100;
  const secondsPerGB = (t: number): number => Math.round(((t / 1000) * 1024 * 1024 * 1024) / bytes);
  const row = (convert: string, k: Kind): Record<string, string | number> => ({
    convert,
    'median ms': Math.round(median(ms[k])),
    'MB/s': Math.round(bytes / 1024 / 1024 / (median(ms[k]) / 1000)),
    's/GB': secondsPerGB(median(ms[k])),
    'peak RSS MB': mb(rss[k]),
    'x plain': ratio(k),
  });
  printTable([
    row(`plain canonical (maxParallelism ${MAXP})`, 'plain'),
    row(`--max-parallelism ${NEW_MAXP} (re-hash)`, 'rehash'),
    row(`--max-parallelism ${DIVISOR_MAXP} (divisor merge)`, 'divisor'),
  ]);
  recordResults('convertMaxParallelism', {
    sizeMb,
    entries,
    keyedBytes: bytes,
    rounds,
    plainMs: ms.plain,
    rehashMs: ms.rehash,
    divisorMs: ms.divisor,
    medianPlainMs: median(ms.plain),
    medianRehashMs: median(ms.rehash),
    medianDivisorMs: median(ms.divisor),
    ratio: ratio('rehash'),
    divisorRatio: ratio('divisor'),
    peakRssPlainMb: mb(rss.plain),
    peakRssRehashMb: mb(rss.rehash),
    peakRssDivisorMb: mb(rss.divisor),
    secondsPerGBPlain: secondsPerGB(median(ms.plain)),
    secondsPerGBRehash: secondsPerGB(median(ms.rehash)),
    loadAverage: loadavg().map((l) => Math.round(l * 100) / 100),
  });
}

main()
  .finally(() => {
    clearInterval(rssSampler);
    rmSync(root, { recursive: true, force: true });
  })
  .catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
