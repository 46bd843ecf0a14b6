import { describe, expect, it } from 'vitest';
import { SharedStateRegistry } from '../../src/checkpoint/shared-registry.js';

describe('SharedStateRegistry', () => {
  it('tracks created-by and last use; unused files are returned once (reference item 70)', () => {
    const r = new SharedStateRegistry();
    r.registerCheckpoint(0, ['job/shared/a', 'job/shared/b']);
    expect(r.get('job/shared/a')).toEqual({
      key: 'job/shared/a',
      createdBy: 0,
      lastUsedCheckpointId: 0,
      confirmed: true,
    });
    expect(r.unregisterUnused(0)).toEqual([]);
    expect(r.unregisterUnused(1).sort()).toEqual(['job/shared/a', 'job/shared/b']);
    expect(r.unregisterUnused(1)).toEqual([]);
    expect(r.size).toBe(0);
  });

  it('unknown ids are harmless (reference item 71)', () => {
    const r = new SharedStateRegistry();
    expect(r.unregisterUnused(-1)).toEqual([]);
    expect(r.unregisterUnused(Number.MAX_SAFE_INTEGER)).toEqual([]);
    r.registerCheckpoint(3, ['job/shared/a']);
    expect(r.unregisterUnused(-1)).toEqual([]);
    expect(r.has('job/shared/a')).toBe(true);
  });

  it('a file reused by a later checkpoint stays; the earlier ones go once unused (reference item 72)', () => {
    const r = new SharedStateRegistry();
    // checkpoint 1 materializes m1 and writes log segment l1; checkpoint 2 reuses both and adds l2
    r.registerCheckpoint(1, ['j/shared/m1', 'j/shared/l1']);
    r.registerCheckpoint(2, ['j/shared/m1', 'j/shared/l1', 'j/shared/l2']);
    // checkpoint 3: new materialization m2 replaces m1 and the logs; l2 is still needed
    r.registerCheckpoint(3, ['j/shared/m2', 'j/shared/l2']);
    expect(r.unregisterUnused(2)).toEqual([]); // 2 is retained: m1, l1 are in use
    expect(r.unregisterUnused(3).sort()).toEqual(['j/shared/l1', 'j/shared/m1']);
    expect(r.has('j/shared/l2')).toBe(true);
    r.registerCheckpoint(4, ['j/shared/m2']);
    expect(r.unregisterUnused(4)).toEqual(['j/shared/l2']);
  });

  it('re-registering at 1 and 2 keeps the file when unregistering below 2 (reference item 74)', () => {
    const r = new SharedStateRegistry();
    r.registerCheckpoint(1, ['j/shared/x']);
    r.registerCheckpoint(2, ['j/shared/x']);
    expect(r.unregisterUnused(2)).toEqual([]);
    expect(r.get('j/shared/x')).toMatchObject({ createdBy: 1, lastUsedCheckpointId: 2 });
    expect(r.unregisterUnused(3)).toEqual(['j/shared/x']);
  });

  it('never deletes files of a no-claim restore; reports the restored checkpoint in use while referenced (reference item 73)', () => {
    const r = new SharedStateRegistry();
    r.registerRestored(10, ['other/shared/a', 'other/shared/b'], 'no-claim');
    expect(r.restoredCheckpointsInUse(10)).toEqual([]); // nobody references it yet
    r.registerCheckpoint(11, ['other/shared/a', 'j/shared/c']);
    expect(r.restoredCheckpointsInUse(11)).toEqual([10]);
    r.registerCheckpoint(12, ['j/shared/c']);
    expect(r.unregisterUnused(12)).toEqual([]); // a and b are last used at 11 and 10 but not ours
    expect(r.restoredCheckpointsInUse(12)).toEqual([]);
    expect(r.has('other/shared/a') && r.has('other/shared/b')).toBe(true);
    expect(r.unregisterUnused(Number.MAX_SAFE_INTEGER)).toEqual(['j/shared/c']);
  });

  it('claimed restored files are ours: not in use once unused, and deleted (reference item 75)', () => {
    const r = new SharedStateRegistry();
    r.registerRestored(5, ['j/shared/a', 'j/chk-5/x'], 'claim');
    r.registerCheckpoint(6, ['j/shared/a']);
    expect(r.restoredCheckpointsInUse(6)).toEqual([]);
    expect(r.unregisterUnused(6)).toEqual(['j/chk-5/x']);
    expect(r.unregisterUnused(7)).toEqual(['j/shared/a']);
  });

  it('no-claim wins when a file is restored under both modes', () => {
    const r = new SharedStateRegistry();
    r.registerRestored(5, ['x/shared/a'], 'no-claim');
    r.registerRestored(5, ['x/shared/a'], 'claim');
    expect(r.unregisterUnused(100)).toEqual([]);
  });

  it('an aborted checkpoint may delete only what its own streams wrote and no completed checkpoint registered', () => {
    const r = new SharedStateRegistry();
    r.registerCheckpoint(1, ['j/shared/old']);
    r.recordUpload(1, 'j/shared/old'); // registered already: not an upload
    r.recordUpload(2, 'j/shared/new');
    r.recordUpload(2, 'j/shared/kept');
    r.recordUpload(3, 'j/shared/other'); // another checkpoint's upload
    const doomed = r.discardAborted(2, (k) => k === 'j/shared/kept');
    expect(doomed).toEqual(['j/shared/new']);
    expect(r.has('j/shared/old')).toBe(true);
    expect(r.uploadedBy('j/shared/new')).toBeUndefined(); // out of the ledger before the caller deletes it
    expect(r.uploadedBy('j/shared/kept')).toBe(2);
    expect(r.uploadedBy('j/shared/other')).toBe(3);
    expect(r.discardAborted(2)).toEqual(['j/shared/kept']); // asking again is fine
    expect(r.discardAborted(2)).toEqual([]);
  });

  it('an upload a completed checkpoint registers leaves the ledger and becomes a live entry', () => {
    const r = new SharedStateRegistry();
    r.recordUpload(4, 'j/shared/a');
    expect(r.isLive('j/shared/a')).toBe(false);
    r.registerCheckpoint(5, ['j/shared/a']);
    expect(r.uploadedBy('j/shared/a')).toBeUndefined();
    expect(r.uploadsOf(4)).toEqual([]);
    expect(r.isLive('j/shared/a')).toBe(true);
    expect(r.get('j/shared/a')).toMatchObject({ createdBy: 5, lastUsedCheckpointId: 5 });
  });

  it('mayReuse: live entries last used at or after the floor, never no-claim restored files', () => {
    const r = new SharedStateRegistry();
    r.registerCheckpoint(3, ['j/shared/a']);
    r.registerCheckpoint(5, ['j/shared/b']);
    r.registerRestored(2, ['x/shared/c'], 'no-claim');
    r.registerRestored(2, ['y/shared/d'], 'claim');
    expect(r.mayReuse('j/shared/a', 3)).toBe(true);
    expect(r.mayReuse('j/shared/a', 4)).toBe(false); // kept only for an older in-flight checkpoint: may go any time
    expect(r.mayReuse('j/shared/b', 4)).toBe(true);
    expect(r.mayReuse('j/shared/gone', 0)).toBe(false);
    expect(r.mayReuse('x/shared/c', 0)).toBe(false);
    expect(r.isLive('x/shared/c')).toBe(false);
    expect(r.mayReuse('y/shared/d', 2)).toBe(true);
    expect(r.mayReuse('j/shared/b', Number.POSITIVE_INFINITY)).toBe(false);
  });

  it('rejects non-integer checkpoint ids', () => {
    const r = new SharedStateRegistry();
    expect(() => r.registerCheckpoint(Number.NaN, [])).toThrow(/integer/);
  });
});
