import type { ProofBackendKind } from './backends.js';
import type { KillPlan, KillPointCounts } from './kill-switch.js';

/** The job a crash-suite child runs (the same in every child of one run, so that it resumes). */
export interface CrashJobShape {
  readonly records: number;
  readonly keys: number;
  readonly partitions: number;
  readonly inputSeed: number;
  readonly parallelism: number;
  readonly checkpointEvery: number;
  readonly numRetained: number;
  /** Streams of at most this many bytes go inline into _metadata (0: every stream is a file). */
  readonly inlineThreshold: number;
}

/** What the parent hands a child (JSON in argv[2]). */
export interface CrashChildConfig {
  readonly backend: ProofBackendKind;
  readonly checkpointDir: string;
  /** This child's own LevelDB working directory (a killed child's is discarded with the "machine"). */
  readonly workingDir: string;
  /** The external system's transaction log. */
  readonly outputFile: string;
  readonly jobId: string;
  readonly job: CrashJobShape;
  /** Scheduler seed of this child. */
  readonly seed: number;
  /** Which child of the run this is (recorded with each commit). */
  readonly processNo: number;
  readonly kill: KillPlan | null;
}

/** Lines a child prints on stdout, one JSON object each. */
export type ChildMessage =
  /** Set up, about to run the job (the parent times random kills from here). */
  | { readonly type: 'started' }
  | { readonly type: 'restored'; readonly checkpointId: number | null }
  | {
      readonly type: 'finished';
      readonly counts: KillPointCounts;
      readonly checkpointsCompleted: number;
      readonly checkpointsAborted: number;
      readonly millis: number;
    }
  | {
      readonly type: 'error';
      readonly name: string;
      readonly code: string | null;
      readonly message: string;
      readonly stack: string;
    };

/** Exit code of a child whose job failed with an error (not a kill). */
export const CHILD_FAILED_EXIT = 3;
