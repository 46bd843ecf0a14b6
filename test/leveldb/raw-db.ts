import { ClassicLevel } from 'classic-level';

/** A classic-level database of strings, used directly (no backend) by the native-checkpoint tests. */
export type RawDb = ClassicLevel<string, string>;

/** Opens (creating it if needed) a raw database in `dir`. */
export async function openRawDb(dir: string): Promise<RawDb> {
  const db = new ClassicLevel<string, string>(dir);
  await db.open();
  return db;
}
