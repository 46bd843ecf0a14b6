/**
 * `convert --max-parallelism` (every key re-hashed into its new key group, through spill files)
 * against a plain canonical convert of the same savepoint (same parallelism and max parallelism:
 * key groups copied block by block), alternating rounds in the same run. Goal: within 1.5x.
 *   node dist/bench/convert-max-parallelism.js [--quick] [sizeMB] [rounds]   (default 200 MB, 3 rounds; quick 16 MB, 2)
 * The source is a canonical savepoint of `sizeMB` of value state (200-byte values), parallelism 2,
 * maxParallelism 128, written directly with the canonical writer (no backend holds it in memory).
 * Figures: medians of the rounds and their ratio, peak RSS, to bench/results/latest.json
 * under `convertMaxParallelism`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
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
  const plain: number[] = [];
  const rehash: number[] = [];
  let bytes = 0;
  let rssPlain = 0;
  let rssRehash = 0;
  globalThis.gc?.();
  for (let r = 0; r < rounds; r++) {
    // Alternate which goes first, so drift on the shared machine hits both alike.
    const order = r % 2 === 0 ? (['plain', 'rehash'] as const) : (['rehash', 'plain'] as const);
    for (const which of order) {
      const res = await timedConvert(src, `${which}-${r}`, which === 'plain' ? {} : { maxParallelism: NEW_MAXP });
      globalThis.gc?.();
      bytes = res.bytes;
      if (which === 'plain') {
        plain.push(res.ms);
        rssPlain = Math.max(rssPlain, res.peakRss);
      } else {
        rehash.push(res.ms);
        rssRehash = Math.max(rssRehash, res.peakRss);
      }
      console.log(`  round ${r + 1} ${which.padEnd(6)} ${Math.round(res.ms)} ms`);
    }
  }
  const ratio = Math.round((median(rehash) / median(plain)) * 100) / 100;
  const secondsPerGB = (ms: number): number => Math.round(((ms / 1000) * 1024 * 1024 * 1024) / bytes);
  printTable([
    {
      convert: `plain canonical (maxParallelism ${MAXP})`,
      'median ms': Math.round(median(plain)),
      'MB/s': Math.round(bytes / 1024 / 1024 / (median(plain) / 1000)),
      's/GB': secondsPerGB(median(plain)),
      'peak RSS MB': mb(rssPlain),
      'x plain': 1,
    },
    {
      convert: `--max-parallelism ${NEW_MAXP}`,
      'median ms': Math.round(median(rehash)),
      'MB/s': Math.round(bytes / 1024 / 1024 / (median(rehash) / 1000)),
      's/GB': secondsPerGB(median(rehash)),
      'peak RSS MB': mb(rssRehash),
      'x plain': ratio,
    },
  ]);
  recordResults('convertMaxParallelism', {
    sizeMb,
    entries,
    keyedBytes: bytes,
    rounds,
    plainMs: plain,
    rehashMs: rehash,
    medianPlainMs: median(plain),
    medianRehashMs: median(rehash),
    ratio,
    peakRssPlainMb: mb(rssPlain),
    peakRssRehashMb: mb(rssRehash),
    secondsPerGBPlain: secondsPerGB(median(plain)),
    secondsPerGBRehash: secondsPerGB(median(rehash)),
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
