import { describeCrashSuite } from '../support/proof/crash-suite.js';

// The short crash suite (SIGKILL) against leveldb() with native incremental checkpoints; the long one is bench/crash-long.ts.
describeCrashSuite('leveldb', 202);
