/** Uploads in flight at first (and for good with a store that takes its time per upload, like S3). */
export const INITIAL_UPLOAD_WINDOW = 16;
/** The most uploads in flight (a local store's transfers are one worker task per turn however many). */
export const MAX_UPLOAD_WINDOW = 512;

/**
 * Runs `upload` over `items` with a bounded number in flight, in order of start, and returns the
 * results in item order. Fails with the first error once the uploads in flight have settled (no
 * new one starts after a failure).
 *
 * The bound starts at INITIAL_UPLOAD_WINDOW and doubles whenever every upload in flight completed
 * within one turn of the event loop: the store finished them faster than the loop turns (local
 * storage on worker threads while records are processed between turns), so the next uploads
 * would otherwise only start a turn later and the store would sit idle meanwhile. A store that
 * takes time per upload (S3, bounded by its own request limit) completes them spread over many
 * turns and keeps the first bound, so it is never handed more files (open, partly read) at once.
 */
export function uploadWindowed<T, R>(items: readonly T[], upload: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let window = INITIAL_UPLOAD_WINDOW;
  let next = 0;
  let inFlight = 0;
  let failure: { error: unknown } | undefined;
  /** Completions since the turn began (counted until a setImmediate ends the turn's I/O phase). */
  let completedThisTurn = 0;
  let turnWatched = false;
  return new Promise<R[]>((resolve, reject) => {
    const settleIfDone = (): void => {
      if (inFlight > 0 || (failure === undefined && next < items.length)) return;
      if (failure !== undefined) reject(failure.error);
      else resolve(results);
    };
    const noteCompletion = (): void => {
      completedThisTurn++;
      if (turnWatched) return;
      turnWatched = true;
      const windowAtStart = window;
      setImmediate(() => {
        if (completedThisTurn >= windowAtStart && window < MAX_UPLOAD_WINDOW) {
          window = Math.min(window * 2, MAX_UPLOAD_WINDOW);
          pump();
        }
        completedThisTurn = 0;
        turnWatched = false;
      });
    };
    const pump = (): void => {
      while (failure === undefined && inFlight < window && next < items.length) {
        const i = next++;
        inFlight++;
        // A synchronous throw counts as that upload's failure.
        new Promise<R>((started) => started(upload(items[i]))).then(
          (r) => {
            results[i] = r;
            inFlight--;
            noteCompletion();
            pump();
            settleIfDone();
          },
          (error: unknown) => {
            failure ??= { error };
            inFlight--;
            settleIfDone();
          },
        );
      }
      settleIfDone();
    };
    pump();
  });
}
