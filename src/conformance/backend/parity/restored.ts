import { describe, expect } from 'vitest';
import type { KeyedStateBackend } from '../../../backend/contract.js';
import { stringSerializer } from '../../../serializers/builtins.js';
import { EVERY_KIND, writeEveryKind } from '../every-kind.js';
import { collect } from '../harness.js';
import { parityIt, type ParityContext } from './parity-context.js';

/**
 * Restored states that were not registered again yet behave like registered ones in every query
 * and in every kind of snapshot (contract.ts: they are carried and counted).
 */

const D = EVERY_KIND;
const writeAll = (b: KeyedStateBackend<string>): void => writeEveryKind(b);

export function restoredStateTests(p: ParityContext): void {
  describe('restored states not registered again', () => {
    async function restored(): Promise<KeyedStateBackend<string>> {
      const b = await p.stringKeyed();
      writeAll(b);
      return p.h.snapshotAndRestore(b);
    }

    parityIt(p, 'restored.get-keys', 'getKeys and getKeysAndNamespaces see them, for every kind', async () => {
      const r = await restored();
      for (const name of Object.keys(D)) {
        expect((await collect(r.getKeys(name, ''))).sort()).toEqual(['k0', 'k1', 'k2', 'k3', 'k4']);
        expect((await collect(r.getKeys(name, 'w'))).sort()).toEqual(['k5', 'k6', 'k7', 'k8', 'k9']);
        const pairs = (await collect(r.getKeysAndNamespaces<string>(name))).map(([k, ns]) => `${k}/${ns}`).sort();
        expect(pairs).toEqual(Array.from({ length: 10 }, (_, i) => `k${i}/${i < 5 ? '' : 'w'}`).sort());
      }
    });

    parityIt(p, 'restored.num-entries', 'numEntries counts them as registered states count', async () => {
      const b = await p.stringKeyed();
      writeAll(b);
      const live = await b.numEntries();
      expect(live).toBe(60); // 10 keys × (v, l, r, a) + 10 × 2 map entries
      const r = await p.h.snapshotAndRestore(b);
      expect(await r.numEntries()).toBe(live);
      r.getState(D.v);
      expect(await r.numEntries()).toBe(live);
    });

    parityIt(
      p,
      'restored.get-keys',
      'applyToAllKeys visits their keys with the state registered on the way',
      async () => {
        const r = await restored();
        const seen: string[] = [];
        await r.applyToAllKeys('w', D.v, (key, state) => {
          seen.push(`${key}=${state.value()}`);
        });
        expect(seen.sort()).toEqual(['k5=v5', 'k6=v6', 'k7=v7', 'k8=v8', 'k9=v9']);
      },
    );

    parityIt(
      p,
      'restored.canonical-savepoint',
      'a canonical savepoint taken right after restore is canonical and holds them',
      async () => {
        const r = await restored();
        const pointer = await p.h.checkpoint([r], { type: 'savepoint', format: 'canonical' });
        const { operator } = await p.h.resolve(pointer);
        const handles = operator.subtasks.flatMap((s) => s.keyed);
        expect(handles.length).toBeGreaterThan(0);
        for (const h of handles)
          expect({ type: h.type, layout: (h as { layout?: string }).layout }).toEqual({
            type: 'key-groups',
            layout: 'canonical-v1',
          });
        const [again] = await p.h.restoreKeyed(pointer, { keySerializer: stringSerializer });
        expect(await again.numEntries()).toBe(60);
        again.setCurrentKey('k7');
        const l = again.getState(D.l);
        l.setCurrentNamespace('w');
        expect(l.get()).toEqual([7]);
      },
      undefined,
      'canonicalSavepoints',
    );

    for (const kind of [{ type: 'checkpoint' }, { type: 'savepoint', format: 'native' }] as const) {
      parityIt(
        p,
        null,
        `a ${kind.type === 'checkpoint' ? 'checkpoint' : 'native savepoint'} taken right after restore holds them`,
        async () => {
          const r = await restored();
          const pointer = await p.h.checkpoint([r], kind);
          await p.h.close(r);
          const r2 = await p.h.restoreKeyedSubtask(pointer, 0, { keySerializer: stringSerializer });
          r2.setCurrentKey('k2');
          expect(r2.getState(D.v).value()).toBe('v2');
          expect(r2.getState(D.m).get('y')).toBe(2);
          r2.setCurrentKey('k8');
          const a = r2.getState(D.a);
          a.setCurrentNamespace('w');
          expect(a.get()).toBe(8);
        },
      );
    }

    parityIt(
      p,
      'restored.merge-namespaces',
      'mergeNamespaces works on a state restored before its namespace was ever set',
      async () => {
        const r = await restored();
        r.setCurrentKey('k6');
        const red = r.getState(D.r);
        const l = r.getState(D.l);
        red.mergeNamespaces('merged', ['w', '']);
        l.mergeNamespaces('merged', ['w']);
        red.setCurrentNamespace('merged');
        l.setCurrentNamespace('merged');
        expect(red.get()).toBe(6);
        expect(l.get()).toEqual([6]);
        red.setCurrentNamespace('w');
        expect(red.get()).toBeNull();
      },
    );
  });
}
