import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { INITIAL_UPLOAD_WINDOW, MAX_UPLOAD_WINDOW, uploadWindowed } from '../../backends/leveldb/upload-window.js';

/**
 * uploadWindowed: the uploads of a LevelDB checkpoint, a bounded number in flight. The bound grows
 * only when every upload in flight completed within one event-loop turn (a local store on worker
 * threads while records are processed), never for a store whose uploads complete spread over turns.
 * Completions are driven turn by turn (setImmediate), not by time.
 */

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Completes `list` within one turn of the event loop, then lets the window's end-of-turn check run. */
async function completeInOneTurn(list: ReadonlyArray<{ done: () => void }>): Promise<void> {
  await new Promise<void>((resolve) =>
    setImmediate(() => {
      for (const p of list) p.done();
      resolve();
    }),
  );
  await nextTurn();
  await nextTurn();
}

/** Uploads that complete only when the test says so; records how many were in flight at most. */
function controlledUploads(): {
  upload: (item: number) => Promise<string>;
  pending: Array<{ item: number; done: () => void; fail: (e: unknown) => void }>;
  maxInFlight: () => number;
  started: number[];
} {
  const pending: Array<{ item: number; done: () => void; fail: (e: unknown) => void }> = [];
  const started: number[] = [];
  let max = 0;
  return {
    pending,
    started,
    maxInFlight: () => max,
    upload: (item) =>
      new Promise<string>((resolve, reject) => {
        started.push(item);
        pending.push({ item, done: () => resolve(`file-${item}`), fail: reject });
        max = Math.max(max, pending.length);
      }),
  };
}

describe('uploadWindowed', () => {
  it('completions spread over turns (an object store): never more than the first bound in flight', async () => {
    const c = controlledUploads();
    const items = Array.from({ length: 100 }, (_, i) => i);
    const all = uploadWindowed(items, c.upload);
    while (c.pending.length > 0) {
      // Half the window per turn, at most.
      await completeInOneTurn(c.pending.splice(0, INITIAL_UPLOAD_WINDOW / 2));
    }
    expect(await all).toEqual(items.map((i) => `file-${i}`));
    expect(c.maxInFlight()).toBe(INITIAL_UPLOAD_WINDOW);
  });

  it('a whole window completed in one turn (worker threads, a busy loop): the bound doubles, up to its maximum', async () => {
    const c = controlledUploads();
    const items = Array.from({ length: 2000 }, (_, i) => i);
    const all = uploadWindowed(items, c.upload);
    const inFlightPerTurn: number[] = [];
    while (c.pending.length > 0) {
      inFlightPerTurn.push(c.pending.length);
      await completeInOneTurn(c.pending.splice(0));
    }
    expect(await all).toEqual(items.map((i) => `file-${i}`));
    expect(inFlightPerTurn.slice(0, 4)).toEqual([16, 32, 64, 128]);
    expect(c.maxInFlight()).toBe(MAX_UPLOAD_WINDOW);
    expect(new Set(c.started).size).toBe(items.length);
  });

  it('after a failure no upload starts; it is reported once those in flight settled', async () => {
    const c = controlledUploads();
    const all = uploadWindowed(
      Array.from({ length: 40 }, (_, i) => i),
      c.upload,
    );
    let settled = false;
    all.catch(() => undefined).finally(() => (settled = true));
    c.pending.shift()?.fail(new Error('disk full'));
    await nextTurn();
    await nextTurn();
    expect(settled).toBe(false); // 15 still in flight
    expect(c.started.length).toBe(INITIAL_UPLOAD_WINDOW);
    await completeInOneTurn(c.pending.splice(0));
    await expect(all).rejects.toThrow('disk full');
    expect(c.started.length).toBe(INITIAL_UPLOAD_WINDOW);
  });

  it('a synchronous throw of the upload function is that upload failing', async () => {
    await expect(
      uploadWindowed([1, 2], () => {
        throw new Error('bad name');
      }),
    ).rejects.toThrow('bad name');
  });

  it('no items: an empty result', async () => {
    expect(await uploadWindowed([], async () => 1)).toEqual([]);
  });

  it('any completion order over turns: each item uploaded once, results in item order, never above the bound', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 300 }),
        fc.array(fc.tuple(fc.nat(), fc.nat({ max: 40 })), { minLength: 1, maxLength: 50 }),
        async (n, schedule) => {
          const c = controlledUploads();
          const items = Array.from({ length: n }, (_, i) => i);
          const all = uploadWindowed(items, c.upload);
          for (let turn = 0; c.pending.length > 0; turn++) {
            // This turn completes `count` uploads from position `at` of those pending.
            const [at, count] = schedule[turn % schedule.length];
            await completeInOneTurn(c.pending.splice(at % c.pending.length, Math.max(1, count)));
          }
          expect(await all).toEqual(items.map((i) => `file-${i}`));
          expect([...c.started].sort((a, b) => a - b)).toEqual(items);
          expect(c.maxInFlight()).toBeLessThanOrEqual(MAX_UPLOAD_WINDOW);
        },
      ),
      { numRuns: 60 },
    );
  });
});
