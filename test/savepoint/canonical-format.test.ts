import fc from 'fast-check';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HeapStateBackend } from '../../backends/heap/heap-state-backend.js';
import { leveldb } from '../../backends/leveldb/index.js';
import type { StateOutputStream } from '../../src/backend/contract.js';
import type { KeyedStateMetaInfo, KeyGroupsStateHandle, StreamHandle } from '../../src/backend/handles.js';
import { changelog } from '../../src/changelog/backend.js';
import { localCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { readStreamHandle } from '../../src/checkpoint/streams.js';
import { CANONICAL_LAYOUT, readAllKeyGroups, SectionWriter } from '../../src/format/key-groups-stream.js';
import { backendByName } from '../../src/cli/backends.js';
import { CanonicalKeyGroupsWriter, canonicalStates } from '../../src/format/canonical-layout.js';
import { convertSnapshot } from '../../src/savepoint/convert.js';
import { locateSnapshot } from '../../src/savepoint/locate.js';
import { tempDir } from '../cli/support.js';
import { writeJob } from './support/job.js';

/** A StateOutputStream collecting into memory. */
function memoryStream(): StateOutputStream & { bytes(): Buffer } {
  const chunks: Buffer[] = [];
  let position = 0;
  return {
    get position() {
      return position;
    },
    async write(c) {
      chunks.push(Buffer.from(c));
      position += c.length;
    },
    async closeAndGetHandle(): Promise<StreamHandle | null> {
      const all = Buffer.concat(chunks);
      return { type: 'inline', data: all.toString('base64'), size: all.length, crc32: 0 };
    },
    async discard() {},
    bytes: () => Buffer.concat(chunks),
  };
}

const ser = { id: 'streamstate.string', version: 1 };
const meta = (name: string, kind: KeyedStateMetaInfo['kind'], stateId: number): KeyedStateMetaInfo => ({
  name,
  kind,
  stateId,
  namespaceSerializer: ser,
  ...(kind === 'timers' ? {} : { valueSerializer: ser }),
  ...(kind === 'map' ? { userKeySerializer: ser } : {}),
  ttl: false,
});

describe('CanonicalKeyGroupsWriter', () => {
  it('orders states by name (a state before a timer queue of the same name) and numbers them 0..n-1', () => {
    const states = canonicalStates([
      meta('zeta', 'value', 0),
      meta('alpha', 'timers', 1),
      meta('alpha', 'list', 2),
      meta('Beta', 'map', 3),
    ]);
    expect(states.map((s) => [s.name, s.kind, s.stateId])).toEqual([
      ['Beta', 'map', 0],
      ['alpha', 'list', 1],
      ['alpha', 'timers', 2],
      ['zeta', 'value', 3],
    ]);
    // fixed field order regardless of the input's
    expect(Object.keys(states[0])).toEqual([
      'name',
      'kind',
      'stateId',
      'namespaceSerializer',
      'valueSerializer',
      'userKeySerializer',
      'ttl',
    ]);
  });

  it('refuses one name recorded with two kinds', () => {
    expect(() => canonicalStates([meta('a', 'value', 0), meta('a', 'list', 1)])).toThrow(/recorded differently/);
  });

  type Entry = { kind: 'value' | 'list' | 'map' | 'timers'; key: string; ns: string; payload: string[]; ts: number };
  const entryArb: fc.Arbitrary<Entry> = fc.record({
    kind: fc.constantFrom('value', 'list', 'map', 'timers'),
    key: fc.string({ maxLength: 3 }),
    ns: fc.constantFrom('', 'w1', 'w2'),
    payload: fc.array(fc.string({ maxLength: 4 }), { minLength: 1, maxLength: 4 }),
    ts: fc.integer({ min: 0, max: 5 }),
  });

  /** Writes the entries of one key group, in the given order, under the given state ids. */
  async function write(entries: Entry[], ids: Record<Entry['kind'], number>): Promise<Buffer> {
    const states = (['value', 'list', 'map', 'timers'] as const).map((k) => meta(`s-${k}`, k, ids[k]));
    const stream = memoryStream();
    const w = new CanonicalKeyGroupsWriter(stream, {
      layout: 'heap-v1',
      keySerializer: ser,
      maxParallelism: 4,
      keyGroupRange: { start: 0, end: 3 },
      states,
    });
    w.beginKeyGroup(1);
    const seen = new Set<string>();
    for (const e of entries) {
      // one entry per (state, key, namespace), like any backend
      const id = `${e.kind}|${e.key}|${e.ns}|${e.kind === 'timers' ? e.ts : ''}`;
      if (seen.has(id)) continue;
      seen.add(id);
      const s = new SectionWriter();
      const k = Buffer.from(e.key);
      const n = Buffer.from(e.ns);
      if (e.kind === 'value') s.valueEntry(k, n, Buffer.from(e.payload[0]));
      else if (e.kind === 'list') {
        s.listEntry(k, n, e.payload.length);
        for (const p of e.payload) s.listElement(Buffer.from(p));
      } else if (e.kind === 'map') {
        const uks = [...new Set(e.payload)];
        s.mapEntry(k, n, uks.length);
        for (const uk of uks) s.mapElement(Buffer.from(uk), uk.length % 2 === 0 ? null : Buffer.from(`v${uk}`));
      } else s.timerEntry(e.ts, k, n);
      w.addSection(ids[e.kind], s);
    }
    await w.endKeyGroup();
    await w.finish();
    return stream.bytes();
  }

  it('writes the same bytes whatever the input order and state numbering', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(entryArb, {
          maxLength: 25,
          selector: (e) => `${e.kind}|${e.key}|${e.ns}|${e.kind === 'timers' ? e.ts : ''}`,
        }),
        fc.integer(),
        async (entries, seed) => {
          const a = await write(entries, { value: 0, list: 1, map: 2, timers: 3 });
          const shuffled = [...entries].sort(
            (x, y) => ((JSON.stringify(x).length * 31 + seed) % 7) - ((JSON.stringify(y).length * 31 + seed) % 7),
          );
          const b = await write(shuffled.reverse(), { value: 3, list: 0, map: 2, timers: 1 });
          expect(b.equals(a)).toBe(true);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('sorts entries by key then namespace bytes, map entries by user key, keeps list order', async () => {
    const bytes = await write(
      [
        { kind: 'list', key: 'b', ns: '', payload: ['z', 'a'], ts: 0 },
        { kind: 'list', key: 'a', ns: 'w2', payload: ['2'], ts: 0 },
        { kind: 'list', key: 'a', ns: 'w1', payload: ['1'], ts: 0 },
        { kind: 'map', key: 'k', ns: '', payload: ['y', 'x'], ts: 0 },
        { kind: 'timers', key: 'k', ns: '', payload: ['-'], ts: 5 },
        { kind: 'timers', key: 'j', ns: '', payload: ['-'], ts: 9 },
      ],
      { value: 0, list: 1, map: 2, timers: 3 },
    );
    const [kg] = [...readAllKeyGroups(bytes)];
    const { listEntries, mapEntries, timerEntries } = await import('../../src/format/key-groups-stream.js');
    const byId = new Map(kg.sections.map((s) => [s.stateId, s]));
    // canonical ids: s-list 0, s-map 1, s-timers 2 (s-value has no entries)
    expect(
      [...listEntries(byId.get(0)!)].map((e) => [e.key.toString(), e.namespace.toString(), e.elements.map(String)]),
    ).toEqual([
      ['a', 'w1', ['1']],
      ['a', 'w2', ['2']],
      ['b', '', ['z', 'a']],
    ]);
    expect([...mapEntries(byId.get(1)!)][0].entries.map(([uk]) => uk.toString())).toEqual(['x', 'y']);
    expect([...timerEntries(byId.get(2)!)].map((t) => t.key.toString())).toEqual(['j', 'k']);
  });
});

describe('canonical savepoints of different backends holding the same logical state', () => {
  let root: string;
  let cleanup: () => Promise<void>;
  beforeAll(async () => {
    ({ dir: root, cleanup } = await tempDir('ss-canon-'));
  });
  afterAll(async () => cleanup());

  async function streamsOf(sp: string): Promise<Buffer[]> {
    const dir = join(sp, '..');
    const storage = localCheckpointStorage(dir);
    const { metadata, files } = await storage.resolve(sp);
    const out: Buffer[] = [];
    for (const s of metadata.operators[0].subtasks) {
      const h = s.keyed[0] as KeyGroupsStateHandle;
      expect(h.layout).toBe(CANONICAL_LAYOUT);
      out.push(await readStreamHandle(h.stream, files));
    }
    return out;
  }

  async function keyedStreams(backendName: string, make: () => Parameters<typeof writeJob>[0]): Promise<Buffer[]> {
    const dir = join(root, backendName.replace(/[()]/g, '_'));
    await mkdir(dir, { recursive: true });
    return streamsOf(await writeJob(make(), { root: dir, parallelism: 2, format: 'canonical' }));
  }

  it('the format-level converter writes the same bytes as the backends', async () => {
    const memory = await keyedStreams('memory-2', () => new HeapStateBackend({ name: 'memory' }));
    const native = await writeJob(new HeapStateBackend({ name: 'memory' }), { root, parallelism: 2, format: 'native' });
    const dst = join(root, 'converted');
    await convertSnapshot(await locateSnapshot(native), dst, {
      target: 'memory',
      format: 'canonical',
      backendFor: backendByName,
    });
    const converted = await streamsOf(dst);
    expect(converted.map((c, i) => c.equals(memory[i]))).toEqual([true, true]);
  });

  it('are byte-identical (memory, filesystem, leveldb, changelog(memory))', async () => {
    const memory = await keyedStreams('memory', () => new HeapStateBackend({ name: 'memory' }));
    const others = {
      filesystem: await keyedStreams('filesystem', () => new HeapStateBackend({ name: 'filesystem' })),
      leveldb: await keyedStreams('leveldb', () => leveldb({ workingDir: join(root, 'work') })),
      'changelog(memory)': await keyedStreams('changelog(memory)', () =>
        changelog({
          backend: new HeapStateBackend({ name: 'memory' }),
          storage: localCheckpointStorage(join(root, 'cl')),
        }),
      ),
    };
    expect(memory).toHaveLength(2);
    for (const [name, streams] of Object.entries(others)) {
      expect({ name, equal: streams.map((s, i) => s.equals(memory[i])) }).toEqual({ name, equal: [true, true] });
    }
  });
});
