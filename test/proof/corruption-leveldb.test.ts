import { describeCorruptionSuite } from '../support/corruption/describe-suite.js';

// LevelDB native incremental checkpoints: table files, MANIFEST, CURRENT, write-ahead logs and the
// meta stream (SSLM). LevelDB itself may accept damaged files; our crc32 on every upload must not.
describeCorruptionSuite({ leveldb: 120 });
