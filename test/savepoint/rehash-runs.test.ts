import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KeyedStateMetaInfo, KeyGroupsStateHandle } from '../../src/backend/handles.js';
import { BlobCheckpointStreamFactory, BlobStateFileReader } from '../../src/checkpoint/streams.js';
import { CanonicalKeyGroupsWriter, canonicalStates, stateIdentity } from '../../src/format/canonical-layout.js';
import {
  CANONICAL_LAYOUT,
  entryKindOf,
  HEAP_LAYOUT,
  KeyGroupsStreamWriter,
  readKeyGroups,
  SectionWriter,
} from '../../src/format/key-groups-stream.js';
import { keyGroupForBytes, keyGroupRangeForSubtask } from '../../src/keygroups/key-groups.js';
import { forEachEntry, rehashKeyedState, type RehashOptions, type RehashSource } from '../../src/savepoint/rehash.js';
import { SectionSplit } from '../../src/savepoint/rehash-split.js';
import { LocalBlobStore } from '../../src/storage/local-blob-store.js';

/**
 * Re-hashing moves entries in runs (one per source section and new key group: SectionSplit), not
 * one by one. The result must be exactly what moving them one by one gives: the reference below
 * hashes every entry, gathers each new key group's entries in source order and hands them to the
 * canonical writer one at a time (what rehash did before runs). Random sources (value, list, map
 * and timer states; entries in any order, duplicates included, so the writer's stable sort sees
 * the order it was given) through every route: in memory, spill files in many small buckets, and
 * the divisor merge (taken whenever the new max parallelism divides the old). Same blocks, same
 * bytes.
 */

const STATES: KeyedStateMetaInfo[] = [
  { name: 'v', kind: 'value', stateId: 0, namespaceSerializer: { id: 'bytes', version: 1 }, ttl: false },
  { name: 'l', kind: 'list', stateId: 1, namespaceSerializer: { id: 'bytes', version: 1 }, ttl: false },
  { name: 'm', kind: 'map', stateId: 2, namespaceSerializer: { id: 'bytes', version: 1 }, ttl: false },
  { name: 't', kind: 'timers', stateId: 3, namespaceSerializer: { id: 'bytes', version: 1 }, ttl: false },
];
const KEY_SERIALIZER = { id: 'bytes', version: 1 };

/** Few distinct short values, so keys and namespaces repeat (duplicates within a key group). */
const small = fc.uint8Array({ minLength: 0, maxLength: 6 }).map((a) => Buffer.from(a.map((x) => x % 3)));
const payload = fc.uint8Array({ minLength: 0, maxLength: 60 }).map((a) => Buffer.from(a));

interface Entry {
  readonly state: number;
  readonly key: Buffer;
  readonly ns: Buffer;
  readonly value: Buffer;
  readonly n: number;
  readonly timestamp: number;
}

const entryArb: fc.Arbitrary<Entry> = fc.record({
  state: fc.integer({ min: 0, max: 3 }),
  key: fc.oneof(
    small,
    fc.uint8Array({ minLength: 0, maxLength: 40 }).map((a) => Buffer.from(a)),
  ),
  ns: small,
  value: payload,
  n: fc.integer({ min: 0, max: 3 }),
  timestamp: fc.integer({ min: 0, max: 100 }),
});

function encode(section: SectionWriter, e: Entry): void {
  const kind = entryKindOf(STATES[e.state].kind);
  if (kind === 'value') section.valueEntry(e.key, e.ns, e.value);
  else if (kind === 'list') {
    section.listEntry(e.key, e.ns, e.n);
    for (let i = 0; i < e.n; i++) section.listElement(e.value.subarray(i));
  } else if (kind === 'map') {
    section.mapEntry(e.key, e.ns, e.n);
    for (let i = 0; i < e.n; i++) section.mapElement(Buffer.from([i]), i === 1 ? null : e.value);
  } else section.timerEntry(e.timestamp, e.key, e.ns);
}

let root: string;
let runs = 0;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'ss-rehash-runs-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function area(name: string): { streams: BlobCheckpointStreamFactory; files: BlobStateFileReader } {
  const store = new LocalBlobStore(join(root, name));
  return {
    streams: new BlobCheckpointStreamFactory({ store, baseDir: 'out', sharedDir: 'out', inlineThreshold: 0 }),
    files: new BlobStateFileReader(store, 'out'),
  };
}

/** Key-groups streams (heap layout: entries in the order given) of `entries` at `maxP`, `p` subtasks. */
async function writeSources(entries: readonly Entry[], maxP: number, p: number): Promise<RehashSource[]> {
  const { streams, files } = area(`src-${runs}`);
  const sources: RehashSource[] = [];
  for (let i = 0; i < p; i++) {
    const range = keyGroupRangeForSubtask(maxP, p, i).toJSON();
    const writer = new KeyGroupsStreamWriter(streams.createOutputStream('exclusive'), {
      layout: HEAP_LAYOUT,
      keySerializer: KEY_SERIALIZER,
      maxParallelism: maxP,
      keyGroupRange: range,
      states: STATES,
    });
    const section = new SectionWriter();
    for (let kg = range.start; kg <= range.end; kg++) {
      writer.beginKeyGroup(kg);
      for (let s = 0; s < STATES.length; s++) {
        for (const e of entries) if (e.state === s && keyGroupForBytes(e.key, maxP) === kg) encode(section, e);
        writer.addSection(s, section);
      }
      await writer.endKeyGroup();
    }
    const handle = await writer.finish();
    if (handle !== null) sources.push({ handle, files });
  }
  return sources;
}

/** What moving entries one by one writes (the re-hash before runs). */
async function reference(sources: readonly RehashSource[], maxP: number, p: number): Promise<unknown> {
  const states = canonicalStates(sources.flatMap((s) => s.handle.states));
  const idOf = new Map(states.map((s) => [stateIdentity(s), s.stateId]));
  const byKeyGroup = new Map<number, Array<{ id: number; bytes: Buffer }>>();
  for (const { handle, files } of sources) {
    for await (const kg of readKeyGroups(handle, files, handle.keyGroupRange)) {
      for (const sec of kg.sections) {
        const meta = handle.states.find((m) => m.stateId === sec.stateId)!;
        const id = idOf.get(stateIdentity(meta))!;
        forEachEntry(entryKindOf(meta.kind), sec.bytes, sec.entryCount, 'reference', (start, end, ks, ke) => {
          const target = keyGroupForBytes(sec.bytes.subarray(ks, ke), maxP);
          const list = byKeyGroup.get(target) ?? [];
          list.push({ id, bytes: Buffer.from(sec.bytes.subarray(start, end)) });
          byKeyGroup.set(target, list);
        });
      }
    }
  }
  const { streams } = area(`ref-${runs}`);
  const handles: (KeyGroupsStateHandle | null)[] = [];
  for (let i = 0; i < p; i++) {
    const range = keyGroupRangeForSubtask(maxP, p, i).toJSON();
    const writer = new CanonicalKeyGroupsWriter(streams.createOutputStream('exclusive'), {
      layout: CANONICAL_LAYOUT,
      keySerializer: KEY_SERIALIZER,
      maxParallelism: maxP,
      keyGroupRange: range,
      states,
    });
    for (let kg = range.start; kg <= range.end; kg++) {
      const list = byKeyGroup.get(kg);
      if (list === undefined) continue;
      writer.beginKeyGroup(kg);
      for (const e of list) writer.addRawRange(e.id, 1, e.bytes, 0, e.bytes.length);
      await writer.endKeyGroup();
    }
    handles.push(await writer.finish());
  }
  return written(handles);
}

/** What a result holds, without the random file names. */
function written(handles: readonly (KeyGroupsStateHandle | null)[]): unknown {
  return handles.map((h) =>
    h === null || h.stream.type !== 'file'
      ? null
      : { range: h.keyGroupRange, blocks: h.blocks, size: h.stream.size, crc32: h.stream.crc32 },
  );
}

async function rehash(
  sources: readonly RehashSource[],
  maxP: number,
  p: number,
  route: string,
  opts: Partial<RehashOptions>,
): Promise<unknown> {
  const { streams } = area(`out-${runs}-${route}`);
  const result = await rehashKeyedState(sources, {
    maxParallelism: maxP,
    parallelism: p,
    streams,
    scratchDir: join(root, `scratch-${runs}-${route}`),
    what: 'operator test',
    ...opts,
  });
  return written(result.handles);
}

describe('re-hashing in runs', () => {
  it('writes exactly what moving entries one by one writes, on every route', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(entryArb, { minLength: 1, maxLength: 120 }),
        fc.constantFrom(4, 16, 128),
        fc.integer({ min: 1, max: 3 }),
        fc.constantFrom(1, 2, 3, 7, 8, 64, 300, 4096),
        fc.integer({ min: 1, max: 3 }),
        async (entries, oldMaxP, oldP, newMaxP, newP) => {
          runs++;
          const p = Math.min(newP, newMaxP);
          const sources = await writeSources(entries, oldMaxP, Math.min(oldP, oldMaxP));
          const want = await reference(sources, newMaxP, p);
          expect(await rehash(sources, newMaxP, p, 'memory', {})).toEqual(want);
          expect(
            await rehash(sources, newMaxP, p, 'spill', { memoryBytes: 0, bucketBytes: 64, bufferBytes: 1 }),
          ).toEqual(want);
        },
      ),
      { numRuns: 40 },
    );
  }, 120_000);
});

describe('SectionSplit', () => {
  it('groups a section by new key group, stable, and copies each group as its entries in order', () => {
    fc.assert(
      fc.property(
        fc.array(entryArb, { minLength: 0, maxLength: 80 }),
        fc.constantFrom(1, 3, 64, 32768),
        (entries, maxP) => {
          const values = entries.map((e) => ({ ...e, state: 0 }));
          const section = new SectionWriter();
          for (const e of values) encode(section, e);
          const bytes = Buffer.from(section.out.view());
          const split = new SectionSplit(maxP);
          // Twice: the scratch state left by one split must not leak into the next.
          for (let round = 0; round < 2; round++) {
            split.split('value', bytes, values.length, 'test');
            const seen = new Set<number>();
            let total = 0;
            for (let g = 0; g < split.groups; g++) {
              const kg = split.groupKeyGroups[g];
              expect(seen.has(kg)).toBe(false);
              seen.add(kg);
              const want = new SectionWriter();
              for (const e of values) if (keyGroupForBytes(e.key, maxP) === kg) encode(want, e);
              const got = Buffer.alloc(split.groupBytes[g]);
              expect(split.copyGroup(bytes, g, got, 0)).toBe(got.length);
              expect(got).toEqual(Buffer.from(want.out.view()));
              expect(split.entriesOf(g)).toBe(want.count);
              total += split.entriesOf(g);
            }
            expect(total).toBe(values.length);
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
