import { describeCorruptionSuite } from '../support/corruption/describe-suite.js';

// changelog(filesystem) checkpoints without a materialization: all keyed state is in log segments (SSCL).
describeCorruptionSuite({ changelog: 200 });
