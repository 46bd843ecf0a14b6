import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { filesystem } from '../../backends/filesystem/index.js';
import type { KeyedStateBackend } from '../../src/backend/contract.js';
import { BlobCheckpointStorage } from '../../src/checkpoint/checkpoint-storage.js';
import { isStreamStateError } from '../../src/errors.js';
import { stringSerializer } from '../../src/serializers/builtins.js';
import { mapState, valueState } from '../../src/state/descriptors.js';
import type { S3BlobStore } from '../../src/storage/s3-blob-store.js';
import { BackendHarness } from '../support/backend-harness.js';
import { startFaultProxy, type FaultProxy } from '../support/s3/fault-proxy.js';
import { startS3rver, uniquePrefix, type S3rverFixture } from '../support/s3/s3rver-fixture.js';

/**
 * A heap backend checkpointing to S3 through BlobCheckpointStorage(S3BlobStore), restored (with
 * rescaling) from what S3 holds; then the same with the fault proxy in between. Under faults a
 * checkpoint either completes or fails without _metadata, and whatever it left lies in its own
 * chk-<n>/ directory, which discardCheckpointDirectory (the gc path) removes.
 */
const KEYS = 600;
const valueDesc = valueState<string>('v', { serializer: stringSerializer });
const mapDesc = mapState<string, string>('m', { keySerializer: stringSerializer, valueSerializer: stringSerializer });

function expectedValue(key: number, version: number): string {
  return `value-${key}-v${version}-`.padEnd(120 + (key % 50), 'x');
}

async function fill(backends: KeyedStateBackend<string>[], version: number): Promise<void> {
  for (let k = 0; k < KEYS; k++) {
    const key = `key-${k}`;
    const b = backends.find((x) => {
      try {
        x.setCurrentKey(key);
        return true;
      } catch {
        return false;
      }
    });
    if (b === undefined) throw new Error(`no subtask owns ${key}`);
    b.getState(valueDesc).update(expectedValue(k, version));
    const m = b.getState(mapDesc);
    m.put('a', `${k}-a-${version}`);
    m.put('b', `${k}-b-${version}`);
  }
}

async function verify(backends: KeyedStateBackend<string>[], version: number): Promise<void> {
  let seen = 0;
  for (let k = 0; k < KEYS; k++) {
    const key = `key-${k}`;
    for (const b of backends) {
      try {
        b.setCurrentKey(key);
      } catch {
        continue;
      }
      expect(b.getState(valueDesc).value()).toBe(expectedValue(k, version));
      expect(b.getState(mapDesc).get('b')).toBe(`${k}-b-${version}`);
      seen++;
    }
  }
  expect(seen).toBe(KEYS);
}

let s3: S3rverFixture;
let proxy: FaultProxy;
beforeAll(async () => {
  s3 = await startS3rver();
  proxy = await startFaultProxy({ target: s3.endpoint, seed: 2024 });
});
afterAll(async () => {
  await proxy?.stop();
  await s3?.stop();
});

describe('heap backend checkpoints on S3', () => {
  let harness: BackendHarness;
  let store: S3BlobStore;
  let storage: BlobCheckpointStorage;

  beforeEach(async () => {
    proxy.setRules([]);
    proxy.resetStats();
    store = s3.makeStore(uniquePrefix('chk'), { endpoint: proxy.endpoint, maxAttempts: 6 });
    storage = new BlobCheckpointStorage(store, { inlineThreshold: 0 });
    harness = await BackendHarness.create(async () => ({
      backend: filesystem({ checkpointDir: join(tmpdir(), 'streamstate-unused') }),
      storage,
      cleanup: async () => undefined,
    }));
  });
  afterEach(async () => {
    await harness.dispose();
  });

  it('checkpoints to S3 and restores at another parallelism', async () => {
    const op = await harness.createKeyedOperator({ keySerializer: stringSerializer, parallelism: 2 });
    await fill(op, 1);
    const pointer = await harness.checkpoint(op);
    const objects = (await store.list(`${harness.jobId}/`)).map((b) => b.name);
    expect(objects).toContain(`${pointer}/_metadata`);
    expect(objects.length).toBeGreaterThanOrEqual(3); // two subtask files + _metadata
    expect((await storage.listCompletedCheckpoints(harness.jobId)).map((c) => c.checkpointId)).toEqual([1]);

    await verify(await harness.restoreKeyed(pointer, { keySerializer: stringSerializer, parallelism: 3 }), 1);
  });

  it('completes under transient faults (503s, resets, truncated responses) and restores exactly', async () => {
    const op = await harness.createKeyedOperator({ keySerializer: stringSerializer, parallelism: 2 });
    await fill(op, 1);
    proxy.setRules([
      { fault: 'slowdown', probability: 0.2, times: 30 },
      { fault: 'reset', probability: 0.1, times: 10 },
      { fault: 'reset-mid-request', method: 'PUT', probability: 0.2, times: 5 },
      { fault: 'reset-mid-response', method: 'GET', probability: 0.3, times: 10 },
    ]);
    const pointer = await harness.checkpoint(op);
    await verify(await harness.restoreKeyed(pointer, { keySerializer: stringSerializer, parallelism: 1 }), 1);
    const injected = Object.values(proxy.stats.faults).reduce((a, b) => a + b, 0);
    expect(injected).toBeGreaterThan(3);
  });

  it('a checkpoint whose data uploads keep failing fails without _metadata; gc removes what it left; the previous one still restores', async () => {
    const op = await harness.createKeyedOperator({ keySerializer: stringSerializer, parallelism: 2 });
    await fill(op, 1);
    const first = await harness.checkpoint(op);
    await fill(op, 2);

    proxy.setRules([{ fault: 'reset', method: 'PUT', pathIncludes: '/chk-2/', times: Number.POSITIVE_INFINITY }]);
    const second = harness.checkpoint(op);
    const failure = await second.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isStreamStateError(failure), String(failure)).toBe(true);
    proxy.setRules([]);

    expect((await storage.listCompletedCheckpoints(harness.jobId)).map((c) => c.checkpointId)).toEqual([1]);
    await expect(storage.resolve(storage.checkpointPointer(harness.jobId, 2))).rejects.toSatisfy(
      (e: unknown) => isStreamStateError(e, 'NOT_FOUND') || isStreamStateError(e, 'METADATA_MISSING'),
    );
    // Anything left is inside chk-2/, and the gc path removes it.
    const leftovers = (await store.list(`${harness.jobId}/`))
      .map((b) => b.name)
      .filter((n) => !n.startsWith(`${first}/`));
    for (const n of leftovers) expect(n.startsWith(`${harness.jobId}/chk-2/`)).toBe(true);
    await storage.discardCheckpointDirectory(harness.jobId, 2);
    expect((await store.list(`${harness.jobId}/chk-2/`)).length).toBe(0);

    await verify(await harness.restoreKeyed(first, { keySerializer: stringSerializer, parallelism: 2 }), 1);
  });

  it('a checkpoint whose _metadata write fails is not a checkpoint; its files are gc-able', async () => {
    const op = await harness.createKeyedOperator({ keySerializer: stringSerializer, parallelism: 2 });
    await fill(op, 1);
    proxy.setRules([{ fault: 'slowdown', method: 'PUT', pathIncludes: '_metadata', times: Number.POSITIVE_INFINITY }]);
    const failure = await harness.checkpoint(op).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isStreamStateError(failure, 'STORAGE_IO'), String(failure)).toBe(true);
    proxy.setRules([]);
    expect(await storage.listCompletedCheckpoints(harness.jobId)).toEqual([]);
    await expect(storage.resolve(storage.checkpointPointer(harness.jobId, 1))).rejects.toSatisfy((e: unknown) =>
      isStreamStateError(e, 'METADATA_MISSING'),
    );
    await storage.discardCheckpointDirectory(harness.jobId, 1);
    expect(await store.list(`${harness.jobId}/`)).toEqual([]);
  });

  it('a restore that cannot read its files fails with a typed error instead of restoring partial state', async () => {
    const op = await harness.createKeyedOperator({ keySerializer: stringSerializer, parallelism: 2 });
    await fill(op, 1);
    const pointer = await harness.checkpoint(op);
    // Every GET of a state file breaks off halfway, on every retry.
    proxy.setRules([
      {
        fault: 'reset-mid-response',
        method: 'GET',
        pathIncludes: '/chk-1/',
        pathExcludes: '_metadata',
        times: Number.POSITIVE_INFINITY,
      },
    ]);
    const failure = await harness.restoreKeyed(pointer, { keySerializer: stringSerializer, parallelism: 2 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isStreamStateError(failure, 'STORAGE_IO'), String(failure)).toBe(true);
    expect(proxy.stats.faults['reset-mid-response']).toBeGreaterThanOrEqual(6);
  });
});
