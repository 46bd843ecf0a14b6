import { join } from 'node:path';
import { filesystem } from '../../backends/filesystem/index.js';
import { memory } from '../../backends/memory/index.js';
import { describeExactlyOnce } from './exactly-once-suite.js';

describeExactlyOnce('memory', () => ({ backend: memory() }));
describeExactlyOnce('filesystem', (dir) => ({ backend: filesystem({ checkpointDir: join(dir, 'checkpoints') }) }));
