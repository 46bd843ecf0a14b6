import { FormatError, RestoreError } from '../errors.js';
import { opaqueSerializer } from '../serializers/opaque.js';
import type { SerializerSnapshot } from '../serializers/serializer.js';
import type { StateDescriptor, TtlConfig } from '../state/descriptors.js';
import type { StateMetaRecord } from './records.js';

/**
 * Descriptors for states a changelog recorded, built from the log alone (offline tools and replayed
 * copies have no user descriptors): opaque serializers keep the bytes as they are.
 */

/**
 * TTL during an offline replay: the config is not recorded (only that a state has TTL), so nothing
 * may expire or be dropped here; stored timestamps are the logged write times, and the job that
 * restores the result applies its own TTL to them.
 */
const KEEP_EVERYTHING_TTL: TtlConfig = {
  ttlMs: 1e15,
  update: 'onCreateAndWrite',
  visibility: 'returnExpiredIfNotCleanedUp',
  cleanupInFullSnapshot: false,
};

function serializerOf(
  meta: StateMetaRecord,
  s: SerializerSnapshot | undefined,
  what: string,
): ReturnType<typeof opaqueSerializer> {
  if (s === undefined || typeof s.id !== 'string') {
    throw new FormatError(
      'CORRUPT',
      `changelog metadata of state "${meta.name}" (${meta.kind}) records no ${what} serializer; the segment is damaged.`,
    );
  }
  return opaqueSerializer(s);
}

/**
 * Namespaces as bytes too; a backend's initial namespace (a string, before replay sets one from
 * a record) gets some bytes of its own so the backend can hold it. It is never written: replay
 * positions every record's namespace first.
 */
export function namespaceSerializerOf(meta: StateMetaRecord): ReturnType<typeof opaqueSerializer> {
  const bytes = serializerOf(meta, meta.namespaceSerializer, 'namespace');
  return { ...bytes, serialize: (v) => (v instanceof Uint8Array ? v : Buffer.from(String(v), 'utf8')) };
}

function noFunction(meta: StateMetaRecord): never {
  throw new RestoreError(
    'RESTORE_FAILED',
    `the changelog merges namespaces of ${meta.kind} state "${meta.name}", which needs the job's ${meta.kind === 'reducing' ? 'reduce' : 'aggregate'} function; ` +
      'an offline tool does not have it. Restore the checkpoint in the job and take a savepoint there instead.',
  );
}

/** A descriptor for a logged state that moves its bytes unchanged. */
export function opaqueDescriptor(meta: StateMetaRecord): StateDescriptor<unknown> {
  const base = {
    name: meta.name,
    namespaceSerializer: namespaceSerializerOf(meta),
    ...(meta.ttl ? { ttl: KEEP_EVERYTHING_TTL } : {}),
  };
  switch (meta.kind) {
    case 'value':
      return { ...base, kind: 'value', serializer: serializerOf(meta, meta.valueSerializer, 'value') };
    case 'list':
      return { ...base, kind: 'list', elementSerializer: serializerOf(meta, meta.valueSerializer, 'element') };
    case 'map':
      return {
        ...base,
        kind: 'map',
        userKeySerializer: serializerOf(meta, meta.userKeySerializer, 'map key'),
        valueSerializer: serializerOf(meta, meta.valueSerializer, 'map value'),
      };
    case 'reducing':
      // Replay forces logged results in (the reduce function is never called), except for merges.
      return {
        ...base,
        kind: 'reducing',
        serializer: serializerOf(meta, meta.valueSerializer, 'value'),
        reduce: () => noFunction(meta),
      };
    case 'aggregating':
      return {
        ...base,
        kind: 'aggregating',
        accumulatorSerializer: serializerOf(meta, meta.valueSerializer, 'accumulator'),
        aggregate: {
          createAccumulator: () => Buffer.alloc(0),
          add: () => noFunction(meta),
          getResult: (acc: unknown) => acc,
          merge: () => noFunction(meta),
        },
      };
    default:
      throw new FormatError(
        'CORRUPT',
        `changelog metadata names state "${meta.name}" with unknown kind ${JSON.stringify(meta.kind)}; the segment is damaged.`,
      );
  }
}
