import { describeCorruptionSuite } from '../support/corruption/describe-suite.js';

// _metadata (SSMD) of checkpoints whose state is inline in it (the default threshold), so a
// _metadata from another checkpoint or job would restore without touching any other file.
describeCorruptionSuite({ metadata: 200 });
