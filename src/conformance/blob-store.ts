import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type ErrorCode, isStreamStateError, StreamStateError } from '../errors.js';
import type { BlobStore } from '../storage/blob-store.js';

/**
 * The behaviour every BlobStore must have (the compliance suite of `streamstate/conformance`).
 * Run it for a new storage medium, in a vitest test file, with
 *   describeBlobStore('my store', async () => ({ store, cleanup }))
 * Each test gets a fresh store from `makeStore` and calls `cleanup` afterwards.
 */
export interface BlobStoreFixture {
  store: BlobStore;
  cleanup(): Promise<void>;
}

/**
 * What the store under test supports beyond the required methods (like abstract-level's
 * `supports`): the suite runs the tests of a capability only where it is declared, and checks
 * that a declared capability is really there.
 */
export interface BlobStoreSupports {
  /** `putFile` (a local file stored whole). Default: whether the store has the method. */
  readonly putFile?: boolean;
}

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<unknown> {
  const err = await p.then(
    () => {
      throw new Error(`expected a StreamStateError ${code}, but the call succeeded`);
    },
    (e: unknown) => e,
  );
  if (!isStreamStateError(err, code)) throw new Error(`expected code ${code}, got ${String(err)}`, { cause: err });
  return err;
}

async function* chunks(...parts: Uint8Array[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield p;
}

function bytes(n: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

const BLOB_STORE_CAPABILITIES: readonly string[] = ['putFile'] satisfies readonly (keyof BlobStoreSupports)[];

/** A typo in the manifest fails the test file at once instead of checking the wrong thing. */
function checkSupports(supports: BlobStoreSupports): void {
  for (const [key, value] of Object.entries(supports)) {
    if (!BLOB_STORE_CAPABILITIES.includes(key))
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `supports.${key} is not a capability of the BlobStore compliance suite; known: ${BLOB_STORE_CAPABILITIES.join(', ')}.`,
      );
    if (value !== undefined && typeof value !== 'boolean')
      throw new StreamStateError(
        'INVALID_ARGUMENT',
        `supports.${key} must be true or false, got ${JSON.stringify(value)}.`,
      );
  }
}

export function describeBlobStore(
  name: string,
  makeStore: () => Promise<BlobStoreFixture>,
  supports: BlobStoreSupports = {},
): void {
  checkSupports(supports);
  describe(`BlobStore compliance: ${name}`, () => {
    let fx: BlobStoreFixture;
    let store: BlobStore;
    let scratch: string;

    beforeEach(async () => {
      fx = await makeStore();
      store = fx.store;
      scratch = await mkdtemp(join(tmpdir(), 'ss-blob-dl-'));
    });
    afterEach(async () => {
      await fx.cleanup();
      await rm(scratch, { recursive: true, force: true });
    });

    it('has a location', () => {
      expect(typeof store.location).toBe('string');
      expect(store.location.length).toBeGreaterThan(0);
    });

    it('put then get returns the same bytes; put overwrites', async () => {
      const data = bytes(1000, 7);
      await store.put('a/b/c.bin', data);
      expect(Buffer.compare(await store.get('a/b/c.bin'), data)).toBe(0);
      await store.put('a/b/c.bin', Buffer.from('second'));
      expect((await store.get('a/b/c.bin')).toString()).toBe('second');
    });

    it('stores a copy: mutating the caller buffer afterwards changes nothing', async () => {
      const data = Buffer.from('original');
      await store.put('copy', data);
      data.fill(0);
      expect((await store.get('copy')).toString()).toBe('original');
    });

    it('stores empty objects', async () => {
      await store.put('empty', new Uint8Array(0));
      expect((await store.get('empty')).length).toBe(0);
      expect((await store.stat('empty'))?.size).toBe(0);
    });

    it('putStream concatenates chunks and returns the size', async () => {
      const a = bytes(300_000, 1);
      const b = bytes(5, 2);
      const c = bytes(70_000, 3);
      const size = await store.putStream('s/obj', chunks(a, b, c));
      expect(size).toBe(a.length + b.length + c.length);
      expect(Buffer.compare(await store.get('s/obj'), Buffer.concat([a, b, c]))).toBe(0);
    });

    it('putStream of an empty source creates an empty object', async () => {
      expect(await store.putStream('s/empty', chunks())).toBe(0);
      expect((await store.stat('s/empty'))?.size).toBe(0);
    });

    it('putStream whose source fails leaves no object behind and rejects with the source error', async () => {
      async function* failing(): AsyncGenerator<Uint8Array> {
        yield bytes(1000);
        throw new Error('source broke');
      }
      await expect(store.putStream('s/broken', failing())).rejects.toThrow(/source broke/);
      expect(await store.stat('s/broken')).toBeNull();
    });

    it('putAtomic writes; exclusive refuses to overwrite and keeps the old content', async () => {
      await store.putAtomic('m/_metadata', Buffer.from('one'));
      expect((await store.get('m/_metadata')).toString()).toBe('one');
      await store.putAtomic('m/_metadata', Buffer.from('two'));
      expect((await store.get('m/_metadata')).toString()).toBe('two');
      await expectCode(store.putAtomic('m/_metadata', Buffer.from('three'), { exclusive: true }), 'ALREADY_EXISTS');
      expect((await store.get('m/_metadata')).toString()).toBe('two');
      await store.putAtomic('m2/_metadata', Buffer.from('x'), { exclusive: true });
      expect((await store.get('m2/_metadata')).toString()).toBe('x');
    });

    it('putAtomic leaves only the object visible in list', async () => {
      await store.putAtomic('d/_metadata', Buffer.from('x'), { exclusive: true });
      expect((await store.list('d/')).map((b) => b.name)).toEqual(['d/_metadata']);
    });

    it('concurrent exclusive putAtomic: exactly one wins', async () => {
      const results = await Promise.allSettled(
        Array.from({ length: 5 }, (_, i) =>
          store.putAtomic('race/_metadata', Buffer.from(`w${i}`), { exclusive: true }),
        ),
      );
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      for (const r of results)
        if (r.status === 'rejected') expect(isStreamStateError(r.reason, 'ALREADY_EXISTS')).toBe(true);
    });

    it('get / getRange / download of a missing object throw NOT_FOUND naming it', async () => {
      const err = await expectCode(store.get('no/such/thing'), 'NOT_FOUND');
      expect(String((err as Error).message)).toContain('no/such/thing');
      await expectCode(store.getRange('no/such/thing', 0, 1), 'NOT_FOUND');
      await expectCode(store.download('no/such/thing', join(scratch, 'x')), 'NOT_FOUND');
    });

    it('getRange returns the requested slice; past the end it returns what exists', async () => {
      const data = bytes(10_000, 9);
      await store.put('r', data);
      expect(Buffer.compare(await store.getRange('r', 0, 10), data.subarray(0, 10))).toBe(0);
      expect(Buffer.compare(await store.getRange('r', 4321, 1234), data.subarray(4321, 5555))).toBe(0);
      expect(Buffer.compare(await store.getRange('r', 9990, 100), data.subarray(9990))).toBe(0);
      expect((await store.getRange('r', 0, 0)).length).toBe(0);
      expect((await store.getRange('r', 20_000, 5)).length).toBe(0);
      await expectCode(store.getRange('r', -1, 5), 'INVALID_ARGUMENT');
    });

    // The heap restore keeps views into getRange's buffer as restored values, which users may write
    // to; a store that handed out its own memory would let them rewrite a completed checkpoint.
    it('get and getRange return buffers the caller owns: writing to them changes no later read', async () => {
      const data = bytes(4096, 5);
      await store.put('own', data);
      const whole = await store.get('own');
      const range = await store.getRange('own', 100, 1000);
      whole.fill(0);
      range.fill(0);
      expect(Buffer.compare(await store.get('own'), data)).toBe(0);
      expect(Buffer.compare(await store.getRange('own', 100, 1000), data.subarray(100, 1100))).toBe(0);
    });

    it('putAtomic stores a copy: mutating the caller buffer afterwards changes nothing', async () => {
      const data = bytes(4096, 6);
      const input = Buffer.from(data);
      await store.putAtomic('kept/_metadata', input);
      input.fill(0);
      expect(Buffer.compare(await store.get('kept/_metadata'), data)).toBe(0);
    });

    it('download writes the object to a local file (creating parent dirs)', async () => {
      const data = bytes(200_000, 4);
      await store.put('dl/obj', data);
      const target = join(scratch, 'nested', 'dir', 'obj');
      await store.download('dl/obj', target);
      expect(Buffer.compare(await readFile(target), data)).toBe(0);
    });

    it('stat gives size or null', async () => {
      await store.put('st/x', bytes(123));
      const info = await store.stat('st/x');
      expect(info?.name).toBe('st/x');
      expect(info?.size).toBe(123);
      expect(await store.stat('st/y')).toBeNull();
      expect(await store.stat('st')).toBeNull(); // a "directory" is not an object
    });

    it('list matches by name prefix, recursively, sorted', async () => {
      for (const n of [
        'job/chk-1/a',
        'job/chk-1/_metadata',
        'job/chk-10/a',
        'job/chk-2/x/y',
        'job/shared/s',
        'other/z',
        'jobx',
      ]) {
        await store.put(n, Buffer.from(n));
      }
      expect((await store.list('job/')).map((b) => b.name)).toEqual([
        'job/chk-1/_metadata',
        'job/chk-1/a',
        'job/chk-10/a',
        'job/chk-2/x/y',
        'job/shared/s',
      ]);
      expect((await store.list('job/chk-1/')).map((b) => b.name)).toEqual(['job/chk-1/_metadata', 'job/chk-1/a']);
      expect((await store.list('job/chk-1')).map((b) => b.name)).toEqual([
        'job/chk-1/_metadata',
        'job/chk-1/a',
        'job/chk-10/a',
      ]);
      expect((await store.list('job')).map((b) => b.name)).toContain('jobx');
      expect((await store.list('')).length).toBe(7);
      expect(await store.list('nothing/')).toEqual([]);
      const sized = await store.list('other/');
      expect(sized[0].size).toBe('other/z'.length);
    });

    it('delete removes objects, ignores missing ones, and leaves others', async () => {
      await store.put('del/a', Buffer.from('a'));
      await store.put('del/sub/b', Buffer.from('b'));
      await store.put('keep/c', Buffer.from('c'));
      await store.delete(['del/a', 'del/sub/b', 'del/never-existed']);
      expect(await store.list('del/')).toEqual([]);
      expect(await store.stat('del/a')).toBeNull();
      expect((await store.get('keep/c')).toString()).toBe('c');
      await store.delete(['del/a']); // idempotent
      await store.delete([]);
      // writing again into a directory whose objects were all deleted works
      await store.put('del/sub/again', Buffer.from('z'));
      expect((await store.get('del/sub/again')).toString()).toBe('z');
    });

    it('writes racing deletes of sibling objects all land', async () => {
      await store.put('race2/first', Buffer.from('1'));
      const writes = Array.from({ length: 20 }, (_, i) => store.put(`race2/w${i}`, Buffer.from(String(i))));
      await Promise.all([store.delete(['race2/first']), ...writes]);
      expect((await store.list('race2/')).length).toBe(20);
    });

    it('rejects absolute names and ".." escapes with INVALID_ARGUMENT', async () => {
      for (const bad of ['/etc/passwd', '../escape', 'a/../../b', 'a//b', './a', '', 'a/']) {
        await expectCode(store.put(bad, Buffer.from('x')), 'INVALID_ARGUMENT');
        await expectCode(store.get(bad), 'INVALID_ARGUMENT');
      }
      await expectCode(store.list('../'), 'INVALID_ARGUMENT');
      await expectCode(store.delete(['../x']), 'INVALID_ARGUMENT');
    });

    it('supports: putFile as declared (a store without the capability has no putFile method)', () => {
      expect(typeof store.putFile === 'function').toBe(supports.putFile ?? typeof store.putFile === 'function');
    });

    it.runIf(supports.putFile !== false)(
      'putFile stores a local file whole and returns its size and crc32',
      async () => {
        if (store.putFile === undefined) return; // no putFile: nothing to check (the test above checked the declaration)
        const data = bytes(300_000, 11);
        const local = join(scratch, 'local.bin');
        await writeFile(local, data);
        expect(await store.putFile('f/local.bin', local)).toEqual({ size: data.length, crc32: crc32(data) });
        expect(Buffer.compare(await store.get('f/local.bin'), data)).toBe(0);
        const empty = join(scratch, 'empty.bin');
        await writeFile(empty, Buffer.alloc(0));
        expect(await store.putFile('f/empty.bin', empty)).toEqual({ size: 0, crc32: 0 });
        expect((await store.stat('f/empty.bin'))?.size).toBe(0);
      },
    );
  });
}
