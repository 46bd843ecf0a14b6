import type { KeyedBackendParams } from '../../src/backend/contract.js';
import { isKeyGroupsHandle, type KeyedStateMetaInfo, type KeyGroupsStateHandle } from '../../src/backend/handles.js';
import { MAX_WHOLE_READ_BYTES } from '../../src/checkpoint/streams.js';
import { RestoreError, StateMigrationError, StreamStateError } from '../../src/errors.js';
import { CANONICAL_LAYOUT, HEAP_LAYOUT, readKeyGroups, type RawSection } from '../../src/format/key-groups-stream.js';
import { checkRestoreMaxParallelism } from '../../src/keygroups/key-groups.js';
import { describeSerializer, resolveCompatibility } from '../../src/serializers/serializer.js';

/** A restored state (or timer queue) kept as raw sections until it is registered again. */
export interface RestoredState {
  readonly meta: KeyedStateMetaInfo;
  /** key-group index in the backend's range → sections in handle order */
  readonly sections: Map<number, RawSection[]>;
}

export interface RestoredStates {
  readonly states: Map<string, RestoredState>;
  readonly timers: Map<string, RestoredState>;
}

const READABLE_LAYOUTS = new Set([HEAP_LAYOUT, CANONICAL_LAYOUT]);

/**
 * Adjacent blocks are read together up to the largest single read (readKeyGroups reads 8 MiB by
 * default). The restore keeps every block it reads until its states are registered (and bytes
 * values stay views into them), so larger reads cost no memory; but each read is one external
 * allocation, and V8 starts a full collection of the whole heap for every 64 MB of external
 * memory allocated since the last one. With 8 MiB reads a 1 GB restore made ~16 of them before
 * decoding anything (--trace-gc: "external memory pressure"), most of its collection time; 256 MiB
 * reads still made one per read. One read per handle makes one, as reading the file whole does.
 */
export const RESTORE_READ_BYTES = MAX_WHOLE_READ_BYTES;

function otherBackendHint(type: string): string {
  if (type.startsWith('leveldb'))
    return 'it was written by the leveldb backend: restore it with leveldb(), or take a canonical savepoint and restore that';
  if (type.startsWith('changelog'))
    return 'it was written by the changelog backend: restore it with the same changelog(...) backend';
  return 'it was written by another state backend: restore it with that backend, or take a canonical savepoint';
}

/** Checks what every handle must satisfy before any of it is read. */
function checkHandle<K>(handle: KeyGroupsStateHandle, params: KeyedBackendParams<K>): void {
  checkRestoreMaxParallelism(handle.maxParallelism, params.maxParallelism);
  if (!READABLE_LAYOUTS.has(handle.layout)) {
    throw new RestoreError(
      'RESTORE_FAILED',
      `key-groups handle with layout "${handle.layout}" cannot be read by the heap backend (it reads ${[...READABLE_LAYOUTS].join(', ')}). Upgrade streamstate.`,
    );
  }
  const c = resolveCompatibility(handle.keySerializer, params.keySerializer as never);
  if (c.kind !== 'compatible-as-is') {
    throw new StateMigrationError(
      'KEY_SERIALIZER_MISMATCH',
      `the key serializer changed: the snapshot's keys were written with ${describeSerializer(handle.keySerializer)} ` +
        `but the backend uses ${params.keySerializer.id}@${params.keySerializer.version}. Keys decide key groups, so they cannot be migrated; restore with the original key serializer.`,
    );
  }
}

/**
 * Reads the key groups of this backend's range from every handle (ranged reads of only those
 * blocks) and groups the raw sections by state name. Nothing is decoded yet: states are decoded
 * when registered, with the serializers they were written with.
 */
export async function readRestoredStates<K>(params: KeyedBackendParams<K>): Promise<RestoredStates> {
  const out: RestoredStates = { states: new Map(), timers: new Map() };
  const restore = params.restore;
  if (restore === undefined) return out;
  const range = params.keyGroupRange;
  for (const handle of restore.handles) {
    if (handle === null || handle === undefined) continue;
    if (!isKeyGroupsHandle(handle)) {
      throw new RestoreError(
        'RESTORE_FAILED',
        `the heap backend cannot restore a "${handle.type}" handle: ${otherBackendHint(handle.type)}.`,
      );
    }
    checkHandle(handle, params);
  }
  try {
    for (const handle of restore.handles) {
      if (handle === null || handle === undefined || !isKeyGroupsHandle(handle)) continue;
      const byId = new Map<number, RestoredState>();
      for (const meta of handle.states) {
        const target = meta.kind === 'timers' ? out.timers : out.states;
        let r = target.get(meta.name);
        if (r === undefined) target.set(meta.name, (r = { meta, sections: new Map() }));
        else if (r.meta.kind !== meta.kind) {
          throw new RestoreError(
            'RESTORE_FAILED',
            `state "${meta.name}" is a ${meta.kind} state in one handle and a ${r.meta.kind} state in another; the snapshot is inconsistent.`,
          );
        }
        byId.set(meta.stateId, r);
      }
      for await (const kg of readKeyGroups(handle, restore.files, range, RESTORE_READ_BYTES)) {
        const i = kg.keyGroup - range.start;
        for (const section of kg.sections) {
          const r = byId.get(section.stateId)!;
          let list = r.sections.get(i);
          if (list === undefined) r.sections.set(i, (list = []));
          list.push(section);
        }
      }
    }
  } catch (err) {
    if (err instanceof StreamStateError) throw err;
    throw new RestoreError('RESTORE_FAILED', `reading the snapshot failed: ${(err as Error).message}`, { cause: err });
  }
  return out;
}
