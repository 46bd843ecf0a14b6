import type { SerializerSnapshot } from '../serializers/serializer.js';
import type { StateKind } from '../state/descriptors.js';

/**
 * State handles: plain JSON-serializable descriptions of where a snapshot's bytes are. The
 * coordinator stores them in _metadata; a restore gets them back.
 *
 * File paths are relative to the directory holding the _metadata that references them
 * (`chk-7/…` files appear as `data-…`, shared files as `../shared/…`); savepoints hold every file
 * in their own directory, which is why they can be moved.
 */

/** Bytes small enough to live inside _metadata (base64). */
export interface InlineStreamHandle {
  readonly type: 'inline';
  readonly data: string;
  readonly size: number;
  readonly crc32: number;
}

/** A file in checkpoint storage. */
export interface FileStreamHandle {
  readonly type: 'file';
  /** Relative to the directory holding _metadata; posix separators. */
  readonly path: string;
  readonly size: number;
  /** zlib.crc32 of the whole file. */
  readonly crc32: number;
}

export type StreamHandle = InlineStreamHandle | FileStreamHandle;

export interface KeyGroupRangeJson {
  readonly start: number;
  readonly end: number;
}

/** Where one key group's block sits inside a key-groups stream. */
export interface KeyGroupBlock {
  readonly keyGroup: number;
  readonly offset: number;
  readonly length: number;
  /** zlib.crc32 of the block's bytes. */
  readonly crc32: number;
  /**
   * Entries in the block (the sum of its sections' entry counts). Optional: written since
   * key-group sizes were recorded; older snapshots and the stream's own footer lack it.
   */
  readonly entries?: number;
}

/** What a snapshot records about one keyed state (or timer queue). */
export interface KeyedStateMetaInfo {
  readonly name: string;
  readonly kind: StateKind | 'timers';
  /** Small integer used inside data files instead of the name. */
  readonly stateId: number;
  readonly namespaceSerializer: SerializerSnapshot;
  /** value/reducing: value; list: element; aggregating: accumulator; map: user value; timers: absent */
  readonly valueSerializer?: SerializerSnapshot;
  /** map: user key */
  readonly userKeySerializer?: SerializerSnapshot;
  /** Whether stored values carry a TTL timestamp. */
  readonly ttl: boolean;
}

/**
 * A full snapshot of keyed state, written key group by key group (docs/FORMAT.md, "key-groups
 * stream"). `blocks` lists the key groups that hold data; a restore reads only the blocks of its
 * own key-group range (ranged reads).
 */
export interface KeyGroupsStateHandle {
  readonly type: 'key-groups';
  /** Which layout the blocks use: `heap-v1` (the heap backend's checkpoints) or `canonical-v1`. */
  readonly layout: string;
  readonly keyGroupRange: KeyGroupRangeJson;
  readonly maxParallelism: number;
  readonly keySerializer: SerializerSnapshot;
  readonly states: readonly KeyedStateMetaInfo[];
  readonly blocks: readonly KeyGroupBlock[];
  readonly stream: StreamHandle;
}

/**
 * Any keyed-state handle. Backends add their own handle types (the LevelDB backend's incremental
 * handle, the changelog handle); every one names its key-group range so the coordinator can route
 * it on rescaling, and every file it references is a FileStreamHandle somewhere inside it (that is
 * how retention and gc find files without knowing the handle type).
 */
export interface KeyedStateHandleBase {
  readonly type: string;
  readonly keyGroupRange: KeyGroupRangeJson;
  readonly maxParallelism: number;
}

export type KeyedStateHandle = KeyGroupsStateHandle | (KeyedStateHandleBase & { readonly [field: string]: unknown });

export type OperatorStateMode = 'split' | 'union' | 'broadcast';

export interface OperatorStateMetaInfo {
  readonly name: string;
  readonly mode: OperatorStateMode;
  /** list states: element serializer; broadcast: value serializer */
  readonly valueSerializer: SerializerSnapshot;
  /** broadcast only */
  readonly keySerializer?: SerializerSnapshot;
  /** Byte offset of each element (list) or entry (broadcast) in the stream; enables element-level splits. */
  readonly offsets: readonly number[];
}

/** A snapshot of one subtask's operator state. */
export interface OperatorStateHandle {
  readonly type: 'operator';
  readonly states: readonly OperatorStateMetaInfo[];
  readonly stream: StreamHandle;
}

export function isKeyGroupsHandle(h: KeyedStateHandle): h is KeyGroupsStateHandle {
  return h.type === 'key-groups';
}

/** Every file a handle references, wherever it sits in the handle. */
export function referencedFiles(handle: unknown, out: FileStreamHandle[] = []): FileStreamHandle[] {
  if (Array.isArray(handle)) {
    for (const h of handle) referencedFiles(h, out);
  } else if (handle !== null && typeof handle === 'object') {
    const o = handle as Record<string, unknown>;
    if (o.type === 'file' && typeof o.path === 'string' && typeof o.size === 'number')
      out.push(o as unknown as FileStreamHandle);
    else for (const v of Object.values(o)) referencedFiles(v, out);
  }
  return out;
}
