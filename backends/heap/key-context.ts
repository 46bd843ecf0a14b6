import { StateAccessError } from '../../src/errors.js';

/**
 * The backend's current key, shared by reference with every state handle so a point operation
 * reads it with plain field loads. `kgIdx` is the key group's index in the backend's range
 * (-1 while no key is set).
 */
export class KeyContext<K> {
  kgIdx = -1;
  keyGroup = -1;
  key: K | undefined = undefined;
  keyId: unknown = undefined;
}

export function noCurrentKey(): never {
  throw new StateAccessError('NO_CURRENT_KEY', 'no current key: call setCurrentKey(key) on the keyed backend before accessing keyed state.');
}
