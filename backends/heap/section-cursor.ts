import type { SectionWriter } from '../../src/format/key-groups-stream.js';

/** Writes the entries of one state in one key group in pieces (a time-sliced snapshot). */
export interface SectionCursor {
  /**
   * Writes entries into `section` until all are written (returns true) or `due()` says the
   * time slice is spent (returns false: call again after the event loop had a turn).
   */
  writeSome(section: SectionWriter, due: () => boolean): boolean;
}
