import type { CheckpointMetadata } from '../../src/checkpoint/metadata.js';

/** A realistic _metadata: one keyed operator (2 subtasks, a file and an inline stream) and an operator-state one. */
export function sampleMetadata(overrides: Partial<CheckpointMetadata> = {}): CheckpointMetadata {
  return {
    checkpointId: 7,
    jobId: 'job-abcdef123',
    kind: 'checkpoint',
    format: 'native',
    backend: 'filesystem',
    timestamp: 1_700_000_000_000,
    operators: [
      {
        operatorId: 'window-agg',
        parallelism: 2,
        maxParallelism: 128,
        subtasks: [
          {
            subtaskIndex: 0,
            keyed: [
              {
                type: 'key-groups',
                layout: 'heap-v1',
                keyGroupRange: { start: 0, end: 63 },
                maxParallelism: 128,
                keySerializer: { id: 'string', version: 1 },
                states: [
                  {
                    name: 'count',
                    kind: 'value',
                    stateId: 1,
                    namespaceSerializer: { id: 'void', version: 1 },
                    valueSerializer: { id: 'f64', version: 1 },
                    ttl: false,
                  },
                ],
                blocks: [{ keyGroup: 3, offset: 0, length: 40, crc32: 123456 }],
                stream: { type: 'file', path: 'abc123', size: 40, crc32: 99 },
              },
            ],
            operator: [],
          },
          {
            subtaskIndex: 1,
            keyed: [
              {
                type: 'leveldb-incremental',
                keyGroupRange: { start: 64, end: 127 },
                maxParallelism: 128,
                sharedFiles: [{ type: 'file', path: '../shared/000001.ldb', size: 1000, crc32: 4_000_000_000 }],
              },
            ],
            operator: [],
          },
        ],
      },
      {
        operatorId: 'source',
        parallelism: 1,
        maxParallelism: 128,
        subtasks: [
          {
            subtaskIndex: 0,
            keyed: [],
            operator: [
              {
                type: 'operator',
                states: [
                  { name: 'offsets', mode: 'split', valueSerializer: { id: 'f64', version: 1 }, offsets: [0, 8] },
                ],
                stream: { type: 'inline', data: Buffer.alloc(16).toString('base64'), size: 16, crc32: 0 },
              },
            ],
          },
        ],
      },
    ],
    properties: { note: 'x', materializationId: 3, final: true },
    ...overrides,
  };
}
