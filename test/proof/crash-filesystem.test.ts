import { describeCrashSuite } from '../support/proof/crash-suite.js';

// The short crash suite (SIGKILL) against filesystem(); the long one is bench/crash-long.ts.
describeCrashSuite('filesystem', 101);
