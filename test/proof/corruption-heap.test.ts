import { describeCorruptionSuite } from '../support/corruption/describe-suite.js';

// Heap backend (filesystem preset) checkpoints: key-groups data files (SSKG heap-v1), operator
// state streams (SSOP), and the key-groups files of a canonical savepoint (canonical-v1).
describeCorruptionSuite({ 'key-groups': 200, operator: 150, canonical: 150 });
