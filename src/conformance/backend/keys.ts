import { keyGroupForKey, type KeyGroupRange } from '../../keygroups/key-groups.js';
import { stringSerializer } from '../../serializers/builtins.js';

/** `perGroup` distinct string keys for every key group in [0, maxParallelism), found by counting up. */
export function stringKeysByKeyGroup(maxParallelism: number, perGroup = 1, prefix = 'key-'): Map<number, string[]> {
  const out = new Map<number, string[]>();
  let filled = 0;
  for (let i = 0; filled < maxParallelism; i++) {
    const key = `${prefix}${i}`;
    const kg = keyGroupForKey(key, stringSerializer, maxParallelism);
    const list = out.get(kg) ?? [];
    if (list.length < perGroup) {
      list.push(key);
      out.set(kg, list);
      if (list.length === perGroup) filled++;
    }
  }
  return out;
}

/** The first string key (`prefix` + counter) whose key group is inside / outside `range`. */
export function stringKeyWhere(maxParallelism: number, accept: (keyGroup: number) => boolean, prefix = 'k'): string {
  for (let i = 0; ; i++) {
    const key = `${prefix}${i}`;
    if (accept(keyGroupForKey(key, stringSerializer, maxParallelism))) return key;
  }
}

export function stringKeyInRange(maxParallelism: number, range: KeyGroupRange): string {
  return stringKeyWhere(maxParallelism, (kg) => range.contains(kg));
}

export function stringKeyOutsideRange(maxParallelism: number, range: KeyGroupRange): string {
  return stringKeyWhere(maxParallelism, (kg) => !range.contains(kg));
}
