import { describeCrashSuite } from '../support/proof/crash-suite.js';

// The short crash suite (SIGKILL) against changelog(filesystem) with a 200 ms materialization interval
// (several materializations per run, so truncation and segment cleanup are crashed into too).
describeCrashSuite('changelog-filesystem', 303);
