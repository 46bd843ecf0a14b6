import { backendClosedError, noCurrentKeyError } from '../../src/backend/keyed-rules.js';

/**
 * The backend's current key, shared by reference with every state handle so a point operation
 * reads it with plain field loads. `kgIdx` is the key group's index in the backend's range
 * (-1 while no key is set, and for ever once the backend is closed: `closed` tells the two apart
 * only on the failure path, so the hot path stays one integer check).
 */
export class KeyContext<K> {
  kgIdx = -1;
  keyGroup = -1;
  key: K | undefined = undefined;
  keyId: unknown = undefined;
  closed = false;
}

/** Thrown by every state access (and backend method) after close(): docs/SEMANTICS.md, "Closed backends". */
export function backendClosed(what = 'the keyed backend'): never {
  throw backendClosedError(what);
}

/** The failure of a state access without a usable current key: BACKEND_CLOSED after close(), else NO_CURRENT_KEY. */
export function noCurrentKey(ctx?: { readonly closed: boolean }): never {
  if (ctx?.closed) backendClosed();
  throw noCurrentKeyError();
}
